"""Contrast data types and the parsers for the file formats steerlab reads.

Two kinds of item:

* :class:`ABItem` — a question (choices included) with the answer that matches the behaviour
  and the one that does not, e.g. CAA's ``"(A)"``/``"(B)"`` or the persona sets' ``" Yes"``/
  ``" No"``. Used by CAA extraction (read at the answer token) and by the behaviour score.
* :class:`ContrastPair` — two plain texts (ActAdd's ``"Love"``/``"Hate"``, or whole
  contrasting completions), read at every position (ActAdd) or at the last token.

Every parser reports a malformed file in one line: file, item index, field, expected vs got.

Example:
    >>> item = parse_ab_record({"question": "Q?", "answer_matching_behavior": "(A)",
    ...                         "answer_not_matching_behavior": "(B)"}, "f.json", 0)
    >>> item.matching
    '(A)'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steerlab.errors import SteerlabError


@dataclass(frozen=True)
class ABItem:
    """A question with the behaviour-matching and non-matching answers."""

    question: str
    matching: str
    not_matching: str


@dataclass(frozen=True)
class ContrastPair:
    """Two texts that differ in the concept to steer: positive minus negative is the vector."""

    positive: str
    negative: str


def _field(record: Any, names: tuple[str, ...], source: str, index: int,
           allow_blank: bool = False) -> str:
    if not isinstance(record, dict):
        raise SteerlabError(
            f"{source}: item {index}: expected a JSON object, got {type(record).__name__}")
    for name in names:
        if name in record:
            value = record[name]
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if not isinstance(value, str) or not (value if allow_blank else value.strip()):
                raise SteerlabError(
                    f"{source}: item {index}: field {name!r}: expected a non-empty string, "
                    f"got {type(value).__name__} {str(value)[:40]!r}")
            return value
    alternatives = " or ".join(repr(n) for n in names)
    present = ", ".join(sorted(map(str, record))) or "none"
    raise SteerlabError(f"{source}: item {index}: missing field {names[0]!r}: expected a string "
                        f"under {alternatives}, got keys {present}")


def parse_ab_record(record: Any, source: str, index: int) -> ABItem:
    """Parse one CAA / persona / capabilities record (``question``/``prompt`` + answers)."""
    question = _field(record, ("question", "prompt"), source, index)
    matching = _field(record, ("answer_matching_behavior", "correct"), source, index)
    not_matching = _field(record, ("answer_not_matching_behavior", "incorrect"), source, index)
    if matching.strip() == not_matching.strip():
        raise SteerlabError(f"{source}: item {index}: matching and not-matching answers are "
                            f"both {matching.strip()!r}")
    return ABItem(question=question, matching=matching, not_matching=not_matching)


def parse_pair_record(record: Any, source: str, index: int) -> ContrastPair:
    """Parse one ``{"positive": ..., "negative": ...}`` record, or a ``[positive, negative]``
    list (the steering-vectors / repeng habit).

    A whitespace-only text is allowed (ActAdd's "Weddings" vs " " pair); an empty one is not.

    Example:
        >>> parse_pair_record(["I love it", "I hate it"], "f.json", 0).negative
        'I hate it'
    """
    if isinstance(record, list | tuple):
        if len(record) != 2:
            raise SteerlabError(f"{source}: item {index}: a pair as a list needs 2 texts "
                                f"[positive, negative], got {len(record)}")
        record = {"positive": record[0], "negative": record[1]}
    pair = ContrastPair(positive=_field(record, ("positive",), source, index, allow_blank=True),
                        negative=_field(record, ("negative",), source, index, allow_blank=True))
    return check_pair(pair, f"{source}: item {index}")


def check_pair(pair: ContrastPair, where: str) -> ContrastPair:
    """``pair`` itself when its texts are non-empty strings that differ; else one line naming
    ``where`` (an identical pair gives an all-zero vector, an empty text nothing to read).

    Every path to a contrast pair checks it here: files, :func:`~steerlab.data.loaders.
    load_pairs`, ``extract(...)`` and ``steerlab pair``.

    Example:
        >>> check_pair(ContrastPair("Love", "Love"), "pair")
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: pair: positive and negative texts are both 'Love'
    """
    for name in ("positive", "negative"):
        text = getattr(pair, name)
        if not isinstance(text, str) or not text:
            raise SteerlabError(f"{where}: the {name} text is empty; a contrast pair needs two "
                                f"non-empty texts, got {text!r}")
    if pair.positive == pair.negative:
        raise SteerlabError(f"{where}: positive and negative texts are both "
                            f"{pair.positive[:40]!r}")
    return pair


def is_pair_record(record: Any) -> bool:
    """True when a record looks like a plain contrast pair rather than an A/B item: an object
    with ``positive`` / ``negative``, or a ``[positive, negative]`` list.

    Example:
        >>> is_pair_record(["a", "b"]), is_pair_record({"question": "Q"})
        (True, False)
    """
    if isinstance(record, list | tuple):
        return True
    return isinstance(record, dict) and "positive" in record and "negative" in record
