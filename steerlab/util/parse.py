"""Parsers for the values users type: layer selections, value lists, sweep units.

One parser per kind of value, shared by the Python API and every CLI command, so that
``8-20:4``, ``-2:2:0.5`` or ``0.5`` mean the same everywhere and a bad value always gets the
same one-line message (naming the option when the caller says which).

Example:
    >>> resolve_layers("8-20:4", 30), resolve_layers("10,16,-1", 30)
    ([8, 12, 16, 20], [10, 16, 29])
    >>> parse_values("-1:1:0.5")
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    >>> unit_values(None, "0,0.5")
    ('strength', [0.0, 0.5])
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from steerlab.errors import SteerlabError
from steerlab.util.vocabulary import Unit

LayerSpec = int | float | str
#: The most values one list may expand to (a range asking for more is a typo, not a sweep).
MAX_VALUES = 10_000

_RANGE = re.compile(r"^(-?[0-9.]+)\s*-\s*(-?[0-9.]+)(?:\s*:\s*(-?[0-9]+))?$")


def _bad(spec: object) -> SteerlabError:
    return SteerlabError(
        f"invalid layer {spec!r}: expected an index (e.g. 8 or -1), a fraction of depth in "
        "[0, 1] (e.g. 0.5), a range like '8-20' or '8-20:2', a list like '10,16', or 'all'"
    )


def resolve_layer(spec: LayerSpec, n: int) -> int:
    """Turn one layer spec into an index in ``0..n-1`` for a model with ``n`` blocks.

    Ints count from the start, negatives from the end (-1 = last); floats in [0, 1] (or
    strings like ``"0.5"``) are fractions of depth, ``round(f * (n - 1))``; strings of ints
    work like ints. Anything else, or out of range, raises :class:`SteerlabError`.

    Example:
        >>> resolve_layer(-1, 30), resolve_layer(0.5, 31), resolve_layer("12", 30)
        (29, 15, 12)
    """
    if n <= 0:
        raise SteerlabError(f"cannot pick layer {spec!r}: model has no layers")
    value: int | float
    if isinstance(spec, bool):
        raise _bad(spec)
    if isinstance(spec, str):
        text = spec.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise _bad(spec) from None
    elif isinstance(spec, int | float):
        value = spec
    else:
        raise _bad(spec)

    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:  # also rejects nan
            raise SteerlabError(
                f"layer fraction {value} out of range: fractions of depth must be in [0, 1]"
            )
        return round(value * (n - 1))
    if not -n <= value < n:
        raise SteerlabError(
            f"layer {value} out of range: model has {n} layers (valid 0..{n - 1} or -{n}..-1)"
        )
    return value % n


def _resolve_str(spec: str, n: int) -> list[int]:
    text = spec.strip()
    if text.lower() == "all":
        return list(range(n))
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = _RANGE.match(part)
        if match is None:
            out.append(resolve_layer(part, n))
            continue
        start, end = resolve_layer(match[1], n), resolve_layer(match[2], n)
        step = int(match[3]) if match[3] is not None else 1
        if step < 1:
            raise SteerlabError(f"layer range '{part}': step must be >= 1, got {step}")
        if start > end:
            raise SteerlabError(f"layer range '{part}' is empty: start {start} is after end {end}")
        out.extend(range(start, end + 1, step))
    return out


def resolve_layers(spec: LayerSpec | Iterable[LayerSpec], n: int) -> list[int]:
    """Turn a layer selection into sorted, unique indices for a model with ``n`` blocks.

    Accepts ``"all"``, inclusive ranges ``"8-20"`` with optional step ``"8-20:2"``,
    comma lists ``"10,16"``, single specs (``-1``, ``0.5``, ``"0.5"``; see
    :func:`resolve_layer`) and iterables of any of these.

    Example:
        >>> resolve_layers("8-20:4", 30), resolve_layers("10,16,-1", 30)
        ([8, 12, 16, 20], [10, 16, 29])
        >>> resolve_layers([0.0, 1.0, "all"], 3)
        [0, 1, 2]
    """
    if isinstance(spec, str):
        out = _resolve_str(spec, n)
    elif isinstance(spec, int | float):
        out = [resolve_layer(spec, n)]
    else:
        out = []
        try:
            items = list(spec)
        except TypeError:
            raise _bad(spec) from None
        for item in items:
            out.extend(_resolve_str(item, n) if isinstance(item, str) else [resolve_layer(item, n)])
    if not out:
        raise SteerlabError(f"layer selection {spec!r} selects no layers")
    return sorted(set(out))


def parse_values(text: str, option: str = "values") -> list[float]:
    """``"-2,-1,0,1,2"`` or ``"-2:2:0.5"`` (start:stop:step, inclusive) → finite floats.

    Example:
        >>> parse_values("0, 2 ,8")
        [0.0, 2.0, 8.0]
        >>> parse_values("1:0:0", "--coefficients")
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: --coefficients: step must be positive in '1:0:0'
    """
    if not isinstance(text, str):
        raise SteerlabError(f"{option}: expected a value list like -2,0,2 or -2:2:0.5, got "
                            f"{type(text).__name__}")
    body = text.strip()
    hint = "expected e.g. -2,0,2 or -2:2:0.5"
    if not body:
        raise SteerlabError(f"{option}: no values given; {hint}")
    try:
        if ":" in body:
            parts = [float(x) for x in body.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if not all(math.isfinite(x) for x in parts):
                raise SteerlabError(f"{option}: values must be finite, got {text!r}")
            if step <= 0:
                raise SteerlabError(f"{option}: step must be positive in {text!r}")
            if stop < start:
                raise SteerlabError(f"{option}: range {text!r} is empty (stop < start)")
            count = math.floor((stop - start) / step + 1e-9) + 1
            if count > MAX_VALUES:
                raise SteerlabError(f"{option}: {text!r} expands to {count} values; at most "
                                    f"{MAX_VALUES}")
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            values = [float(x) for x in body.split(",")]
    except ValueError:
        raise SteerlabError(f"{option}: bad value list {text!r}; {hint}") from None
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise SteerlabError(f"{option}: values must be finite, got {text!r}")
    if len(values) > MAX_VALUES:
        raise SteerlabError(f"{option}: {len(values)} values; at most {MAX_VALUES}")
    return values


def unit_values(coefficients: str | None, strengths: str | None) -> tuple[Unit, list[float]]:
    """The sweep's unit and values from ``--coefficients`` / ``--strengths`` (exactly one).

    Example:
        >>> unit_values("0,2", None)
        ('coefficient', [0.0, 2.0])
        >>> unit_values(None, "0:1:0.5")
        ('strength', [0.0, 0.5, 1.0])
    """
    if coefficients is not None and strengths is not None:
        raise SteerlabError("give --coefficients or --strengths, not both")
    if coefficients is None and strengths is None:
        raise SteerlabError("give --strengths (multiples of the residual norm, e.g. "
                            "--strengths=-0.4,0,0.4) or --coefficients (raw multipliers)")
    unit: Unit = "coefficient" if coefficients is not None else "strength"
    text = coefficients if coefficients is not None else strengths
    values = parse_values(text or "", f"--{unit}s")
    if len(set(values)) != len(values):
        raise SteerlabError(f"--{unit}s: repeated values in {text!r}")
    return unit, values


def parse_choices(text: str, allowed: Sequence[str], option: str) -> list[str]:
    """A comma list of names, each one of ``allowed`` (order kept, repeats dropped).

    Example:
        >>> parse_choices("short,long", ("short", "medium", "long"), "--lengths")
        ['short', 'long']
    """
    chosen = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in chosen if p not in allowed]
    if bad or not chosen:
        raise SteerlabError(f"{option}: bad value {text!r}; expected a comma list of "
                            f"{', '.join(allowed)}")
    return chosen


def parse_counts(text: str, option: str) -> list[int]:
    """``"1,2,5,10"`` → sorted unique positive integers.

    Example:
        >>> parse_counts("10, 1,5,5", "--n")
        [1, 5, 10]
    """
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SteerlabError(f"{option}: expected comma-separated counts like 1,5,20, got "
                            f"{text!r}") from None
    if not counts or counts[0] < 1:
        raise SteerlabError(f"{option}: counts must be positive, got {text!r}")
    return counts
