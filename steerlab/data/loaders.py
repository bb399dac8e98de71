"""Resolve dataset names (``caa:NAME``, ``mwe:NAME``, ``builtin:NAME``, paths) and split them.

Splits are deterministic for a seed. For CAA behaviours the pool is ``generate.json`` and the
held-out ``test`` split is the authors' ``test_ab.json``; ``train``/``val`` divide the pool
(``val_fraction``, default 0.2). Sets without a separate test file are cut into
train/val/test = 60/20/20 after a seeded shuffle. ``split="all"`` returns everything.

Example:
    >>> ds = load_dataset("builtin:optimism", split="train")
    >>> ds.name, len(ds) > 50
    ('builtin:optimism', True)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from steerlab.data.formats import (
    ABItem,
    ContrastPair,
    check_pair,
    is_pair_record,
    parse_ab_record,
    parse_pair_record,
)
from steerlab.errors import SteerlabError

_OPTION = re.compile(r"\(([A-Z])\)\s*(.+)")
SPLITS = ("train", "val", "test", "all")
BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass(frozen=True)
class Dataset:
    """A named list of items (all :class:`ABItem` or all :class:`ContrastPair`) + provenance."""

    name: str
    items: tuple[ABItem | ContrastPair, ...]
    sha256: str = ""
    split: str = "all"

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ABItem | ContrastPair]:
        return iter(self.items)

    def __getitem__(self, index: int) -> ABItem | ContrastPair:
        return self.items[index]

    @property
    def kind(self) -> str:
        """``"ab"`` or ``"pairs"``."""
        return "pairs" if self.items and isinstance(self.items[0], ContrastPair) else "ab"

    def subset(self, n: int, seed: int = 0) -> Dataset:
        """A seeded random subset of n items (all items if n >= len)."""
        if n >= len(self.items):
            return self
        rng = random.Random(seed)
        picked = sorted(rng.sample(range(len(self.items)), n))
        return replace(self, items=tuple(self.items[i] for i in picked))

    def head(self, n: int) -> Dataset:
        """The first n items."""
        return replace(self, items=self.items[:n])

    def open_answers(self) -> Dataset:
        r"""A/B items rewritten as open answers: the stem, and the two options' full texts.

        ``"Q\n\nChoices:\n (A) yes\n (B) no"`` with matching ``"(A)"`` becomes
        ``ABItem("Q", "yes", "no")``; items whose options cannot be parsed are dropped. Score them
        with :func:`steerlab.scoring.ab.score_answers`; extract from them with ``pairs_from``.

        Example:
            >>> ds = Dataset("x", (ABItem("Q?\n\nChoices:\n (A) yes\n (B) no", "(A)", "(B)"),))
            >>> ds.open_answers().items[0]
            ABItem(question='Q?', matching='yes', not_matching='no')
        """
        out = []
        for item in self.items:
            if not isinstance(item, ABItem):
                raise SteerlabError(f"{self.name}: open_answers needs A/B items")
            stem, _, choices = item.question.partition("Choices:")
            options = dict(_OPTION.findall(choices))
            match = options.get(item.matching.strip().strip("()"))
            other = options.get(item.not_matching.strip().strip("()"))
            if stem.strip() and match and other:
                out.append(ABItem(stem.strip(), match.strip(), other.strip()))
        return replace(self, name=f"{self.name}/open", items=tuple(out))

    def answer_pairs(self) -> Dataset:
        """Open-answer items as contrast pairs (question + answer, read at the last token).

        Items without a question (plain pairs, see :meth:`as_answers`) become their answers.
        """
        items = []
        for item in self.items:
            if not isinstance(item, ABItem):
                raise SteerlabError(f"{self.name}: answer_pairs needs A/B items")
            head = f"{item.question}\n" if item.question else ""
            items.append(ContrastPair(head + item.matching, head + item.not_matching))
        return replace(self, items=tuple(items))

    def as_answers(self) -> Dataset:
        """Plain contrast pairs as open-answer items: the positive and negative texts become
        the matching and not-matching replies to an empty question, so held-out pairs can be
        scored (p(positive reply) vs p(negative reply)) like A/B data in open form.

        Example:
            >>> load_pairs([("I love it", "I hate it")]).as_answers().items[0].matching
            'I love it'
        """
        if self.kind != "pairs":
            return self
        items = tuple(ABItem("", item.positive, item.negative)  # type: ignore[union-attr]
                      for item in self.items)
        return replace(self, name=f"{self.name}/answers", items=items)


def data_dir() -> Path:
    """Where the shared public datasets live: ``$STEERLAB_DATA`` or ``../shared/data``.

    Example:
        >>> data_dir().name                        # doctest: +SKIP
        'data'
    """
    env = os.environ.get("STEERLAB_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise SteerlabError(f"STEERLAB_DATA={env}: not a directory")
        return path
    repo = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), repo):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    raise SteerlabError("data dir not found: set STEERLAB_DATA or put shared/data beside the repo")


#: Data files larger than this are refused (a mistake, not a dataset).
MAX_DATA_BYTES = 1 << 30


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file, with one-line errors for every way reading it can fail.

    Example:
        >>> read_text(Path("/nonexistent.json"))
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: /nonexistent.json: file not found
    """
    if path.is_dir():
        raise SteerlabError(f"{path}: is a directory; expected a {what}")
    if not path.exists():
        raise SteerlabError(f"{path}: {what} not found")
    try:
        size = path.stat().st_size
        if size > MAX_DATA_BYTES:
            raise SteerlabError(f"{path}: {size / 2**20:.0f} MB is too large for a {what} "
                                f"(limit {MAX_DATA_BYTES >> 20} MB)")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SteerlabError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except MemoryError:
        raise SteerlabError(f"{path}: too large to read into memory") from None
    except OSError as exc:
        raise SteerlabError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SteerlabError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                            f"{exc.msg}") from None
    except RecursionError:
        raise SteerlabError(f"{where}: JSON nested too deeply to be a dataset") from None
    except MemoryError:
        raise SteerlabError(f"{where}: JSON too large to parse") from None


def read_records(path: Path) -> list[Any]:
    """Read a JSON list or JSON-lines file, with a one-line error on bad syntax."""
    text = read_text(path, "data file")
    if path.suffix == ".jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                records.append(_loads(line, f"{path}: line {lineno}"))
        return records
    if not text.strip():
        raise SteerlabError(f"{path}: empty file; expected a JSON list of items")
    data = _loads(text, str(path))
    if not isinstance(data, list):
        raise SteerlabError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
    return data


def parse_items(records: Sequence[Any], source: str) -> tuple[ABItem | ContrastPair, ...]:
    """Parse records into items, choosing the format from the first record."""
    if not records:
        raise SteerlabError(f"{source}: no items")
    if is_pair_record(records[0]):
        return tuple(parse_pair_record(r, source, i) for i, r in enumerate(records))
    return tuple(parse_ab_record(r, source, i) for i, r in enumerate(records))


def _sha(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _known(directory: Path, pattern: str, strip: str) -> str:
    names = sorted(p.name.removesuffix(strip) for p in directory.glob(pattern)) \
        if directory.is_dir() else []
    return ", ".join(names) or "none"


def _resolve(spec: str) -> tuple[Path, Path | None]:
    """Map a dataset spec to (pool file, separate test file or None)."""
    if ":" in spec and not Path(spec).exists():
        scheme, name = spec.split(":", 1)
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise SteerlabError(f"invalid dataset name {name!r} in {spec!r}")
        if scheme == "builtin":
            path = BUILTIN_DIR / f"{name}.json"
            if not path.is_file():
                raise SteerlabError(f"unknown built-in dataset {name!r}; known: "
                                    f"{_known(BUILTIN_DIR, '*.json', '.json')}")
            return path, None
        if scheme == "caa":
            caa = data_dir() / "caa"
            base = caa / name
            if name == "capabilities" or not (base / "generate.json").is_file():
                known = sorted(p.name for p in caa.iterdir()
                               if (p / "generate.json").is_file()) if caa.is_dir() else []
                raise SteerlabError(f"unknown CAA behaviour {name!r} under {caa}; known: "
                                    f"{', '.join(known) or 'none'}")
            test = base / "test_ab.json"
            return base / "generate.json", test if test.is_file() else None
        if scheme == "mwe":
            mwe = data_dir() / "mwe"
            for sub in ("persona", "advanced-ai-risk"):
                candidate = mwe / sub / f"{name}.jsonl"
                if candidate.is_file():
                    return candidate, None
            known = sorted(p.stem for p in mwe.glob("*/*.jsonl")) if mwe.is_dir() else []
            raise SteerlabError(f"unknown mwe dataset {name!r} under {mwe}; known: "
                                f"{', '.join(known) or 'none'}")
        if scheme == "capabilities":
            caps = data_dir() / "caa" / "capabilities"
            path = caps / f"{name}_ab.json"
            if not path.is_file():
                raise SteerlabError(f"unknown capabilities dataset {name!r} under {caps}; "
                                    f"known: {_known(caps, '*_ab.json', '_ab.json')}")
            return path, None
        raise SteerlabError(f"unknown dataset scheme {scheme!r} in {spec!r}; "
                            "use caa:, mwe:, builtin:, capabilities: or a file path")
    return Path(spec), None


def default_split(spec: str) -> str:
    """The split used when none is named: ``train`` for the public benchmark sets (``caa:``,
    ``mwe:``), whose val/test items must stay held out for evaluation; ``all`` for your own
    files (every item you wrote), ``builtin:`` data and ``capabilities:`` (evaluation-only).

    Example:
        >>> default_split("caa:refusal"), default_split("my_pairs.json")
        ('train', 'all')
    """
    scheme = spec.split(":", 1)[0] if ":" in spec and not Path(spec).exists() else ""
    return "train" if scheme in ("caa", "mwe") else "all"


def load_dataset(spec: str, split: str | None = None, seed: int = 0,
                 val_fraction: float = 0.2) -> Dataset:
    """Load ``caa:NAME``, ``mwe:NAME``, ``builtin:NAME``, ``capabilities:mmlu`` or a file.

    ``split=None`` is :func:`default_split`: the train split of the public benchmark sets
    (``caa:``, ``mwe:``), all items otherwise.

    Example:
        >>> len(load_dataset("builtin:optimism", split="test")) > 10
        True
        >>> load_dataset("builtin:optimism").split
        'all'
    """
    split = default_split(spec) if split is None else split
    if split not in SPLITS:
        raise SteerlabError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not 0.0 <= val_fraction < 0.8:
        raise SteerlabError(f"val_fraction must be in [0, 0.8), got {val_fraction}")
    pool_path, test_path = _resolve(spec)
    pool = parse_items(read_records(pool_path), str(pool_path))
    if test_path is not None:
        test = parse_items(read_records(test_path), str(test_path))
        sha = _sha([pool_path, test_path])
        if split == "test":
            return Dataset(spec, test, sha, split)
        if split == "all":
            return Dataset(spec, pool + test, sha, split)
        order = list(range(len(pool)))
        random.Random(seed).shuffle(order)
        n_val = round(len(pool) * val_fraction)
        chosen = order[:n_val] if split == "val" else order[n_val:]
        return Dataset(spec, tuple(pool[i] for i in sorted(chosen)), sha, split)
    sha = _sha([pool_path])
    if split == "all":
        return Dataset(spec, pool, sha, split)
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    n_test = round(len(pool) * 0.2)
    n_val = round(len(pool) * val_fraction)
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
             "train": order[n_test + n_val:]}
    return Dataset(spec, tuple(pool[i] for i in sorted(parts[split])), sha, split)


def load_pairs(pairs: Sequence[tuple[str, str]], name: str = "pairs") -> Dataset:
    """Build a dataset of :class:`ContrastPair` from (positive, negative) tuples.

    Example:
        >>> load_pairs([("Love", "Hate")]).kind
        'pairs'
    """
    items = tuple(check_pair(ContrastPair(p, n), f"{name}: pair {i}")
                  for i, (p, n) in enumerate(pairs))
    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()
    return Dataset(name, items, digest, "all")
