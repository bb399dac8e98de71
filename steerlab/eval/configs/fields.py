"""What a study config's fields say about themselves: whether each is a run setting (what
``run.json`` records and a rerun must match) and how the command line offers it.

A study config is a dataclass under :mod:`steerlab.eval.configs`. Every field is a run setting
under its own name and a command-line option ``--field-name`` unless its ``metadata`` says
otherwise, through :func:`setting` or :func:`not_a_setting`:

* ``key`` / ``when_set``: recorded under another name (one ``run.json`` used before the field
  was renamed), or only when not None (a setting added later, so older runs still resume);
* ``help``: the option's help (options every study shares, ``--model``, ``--limit``, ... take
  theirs from :mod:`steerlab.cli.options`; ``more`` adds a sentence to that shared help);
* ``flag``: the option's spelling where it is not the field's name (``form`` is ``--format``);
* ``parse``: how the option's text becomes the field's value (a comma list, choices, counts);
* ``low``: the smallest value accepted, with what the value is (``(1, "a count")``);
* ``cli=False``: not offered on the command line.

The command line (``steerlab eval NAME``), ``run.json`` and the reference docs are derived from
these fields, so each option is declared once. This module imports nothing heavy: building the
command line must not load torch.

Example:
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class DemoConfig:
    ...     out: str = field(metadata=not_a_setting())
    ...     values: tuple[float, ...] = (0.0, 0.5)
    ...     vector: Path | None = Path("v.safetensors")
    ...     form: str = field(default="open", metadata=setting(key="format", flag="--format"))
    ...     id_limit: int | None = field(default=None, metadata=setting(when_set=True))
    ...     batch_size: int = field(default=16, metadata=not_a_setting())
    >>> run_settings(DemoConfig("runs/demo"))
    {'values': [0.0, 0.5], 'vector': 'v.safetensors', 'format': 'open'}
    >>> option_text((1, 2, 5)), option_text((-0.5, 0.0, 0.5))
    ('1,2,5', '-0.5,0,0.5')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.util.parse import parse_choices, parse_counts, parse_values

#: Keys of a config field's ``metadata``.
SETTING = "setting"  # False: not recorded in run.json
SETTING_KEY = "setting_key"  # the key it is recorded under, where not the field's name
WHEN_SET = "setting_when_set"  # recorded only when not None
HELP = "help"  # the option's one-line help
MORE = "more"  # a sentence after a shared option's help
FLAG = "flag"  # the option's spelling, where not --field-name
PARSE = "parse"  # (text, flag) -> value, for options given as text
LOW = "low"  # (smallest value, what the value is)
CLI = "cli"  # False: not offered on the command line

#: How an option's text becomes a field's value: ``parse(text, flag)``.
Parser = Callable[[str, str], Any]


def setting(*, key: str | None = None, when_set: bool = False, help: str = "", more: str = "",
            flag: str | None = None, parse: Parser | None = None,
            low: tuple[float, str] | None = None, cli: bool = True) -> dict[str, Any]:
    """A config field's metadata for a run setting: recorded under ``key`` or only
    ``when_set`` if given, offered on the command line as ``flag`` with ``help`` (or the shared
    option's help and ``more``), its text read
    by ``parse`` and refused below ``low``. Use as
    ``form: str = field(default="open", metadata=setting(key="format", flag="--format"))``; a
    field without metadata is a setting and an option under its own name.

    Example:
        >>> setting(key="format", flag="--format")
        {'setting_key': 'format', 'flag': '--format'}
    """
    meta: dict[str, Any] = {}
    if key is not None:
        meta[SETTING_KEY] = key
    if when_set:
        meta[WHEN_SET] = True
    return {**meta, **_cli_meta(help, more, flag, parse, low, cli)}


def not_a_setting(help: str = "", *, more: str = "", flag: str | None = None,
                  low: tuple[float, str] | None = None, cli: bool = True) -> dict[str, Any]:
    """A config field's metadata for what does not change a number (``out``, a batch size,
    whether to write a file): left out of ``run.json``, so changing it resumes the run. Use as
    ``batch_size: int = field(default=16, metadata=not_a_setting())``.

    Example:
        >>> not_a_setting(cli=False)
        {'setting': False, 'cli': False}
    """
    return {SETTING: False, **_cli_meta(help, more, flag, None, low, cli)}


def _cli_meta(help: str, more: str, flag: str | None, parse: Parser | None,
              low: tuple[float, str] | None, cli: bool) -> dict[str, Any]:
    given = {HELP: help or None, MORE: more or None, FLAG: flag, PARSE: parse, LOW: low,
             CLI: None if cli else False}
    return {k: v for k, v in given.items() if v is not None}


def run_settings(cfg: Any) -> dict[str, Any]:
    """A study config's settings as ``run.json`` records them: every dataclass field but those
    marked :func:`not_a_setting`, under its name (or the ``key`` of :func:`setting`), as JSON
    values (paths as strings, sequences as lists, a nested config as its own settings).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Tiny:
        ...     layers: str = "6"
        ...     vector: Path = Path("v.safetensors")
        >>> run_settings(Tiny())
        {'layers': '6', 'vector': 'v.safetensors'}
    """
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get(SETTING, True) is False or (value is None and f.metadata.get(WHEN_SET)):
            continue
        out[f.metadata.get(SETTING_KEY, f.name)] = _json_setting(value)
    return out


def setting_value(value: Any) -> Any:
    """A setting as it is saved and compared: paths as strings, and a non-finite float
    spelled out (``"inf"``, ``"nan"``) rather than written as null, so that two different
    settings never compare equal (the JSON itself is written under the one policy).

    Example:
        >>> setting_value([Path("a"), float("inf")])
        ['a', 'inf']
    """
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, tuple | list):
        return [setting_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): setting_value(v) for k, v in value.items()}
    return value


def _json_setting(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return run_settings(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_json_setting(v) for v in value]
    return setting_value(value)


def option_text(value: Any) -> Any:
    """A field's default as its option's text: a sequence as a comma list (numbers as ``:g``).

    Example:
        >>> option_text(("system", "prefix")), option_text(3)
        ('system,prefix', 3)
    """
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def words(text: str, flag: str) -> list[str]:
    """A comma list of words, blanks dropped (``parse`` for free-form lists).

    Example:
        >>> words(" love, hate,,", "--mask")
        ['love', 'hate']
    """
    return [w.strip() for w in text.split(",") if w.strip()]


def choices(allowed: Sequence[str]) -> Parser:
    """``parse`` for a comma list of names, each one of ``allowed``.

    Example:
        >>> choices(("mmlu", "truthfulqa"))("mmlu", "--benchmarks")
        ['mmlu']
    """
    return lambda text, flag: parse_choices(text, allowed, flag)


def counts(text: str, flag: str) -> list[int]:
    """``parse`` for a comma list of positive integers (sorted, unique).

    Example:
        >>> counts("20,5,80", "--n")
        [5, 20, 80]
    """
    return parse_counts(text, flag)


def distinct_numbers(text: str, flag: str) -> list[float]:
    """``parse`` for a grid of numbers that may not repeat (a strength grid).

    Example:
        >>> distinct_numbers("-0.5,0,0.5", "--strengths")
        [-0.5, 0.0, 0.5]
    """
    values = parse_values(text, flag)
    if len(set(values)) != len(values):
        raise SteerlabError(f"{flag}: repeated values in {text!r}")
    return values


def one_layer(text: str, flag: str) -> int:
    """``parse`` for a study that extracts and steers at one layer (an index).

    Example:
        >>> one_layer("14", "--layers"), one_layer("-1", "--layers")
        (14, -1)
    """
    if not text.strip().lstrip("-").isdigit():
        raise SteerlabError(f"{flag}: this study extracts at one layer (an index), got {text!r}")
    return int(text)


def numbers(text: str, flag: str) -> list[float]:
    """``parse`` for a list of numbers (``-0.5,0,0.5`` or ``start:stop:step``).

    Example:
        >>> numbers("-0.5,0,0.5", "--strengths")
        [-0.5, 0.0, 0.5]
    """
    return parse_values(text, flag)
