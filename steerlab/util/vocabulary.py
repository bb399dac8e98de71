"""The words steerlab's API takes as strings, each spelled once: a ``Literal`` type per kind of
word and the runtime tuple derived from it, plus a parser that turns a user's ``str`` into the
type with the usual one-line error.

* :data:`Operator` — what a vector does to the hidden state: ``add``, ``ablate``, ``clamp``.
* :data:`Unit` — how a steering amount is measured: ``coefficient`` (raw multiplier of the
  stored vector) or ``strength`` (multiple of the mean residual norm at the layer).
* :data:`Site` — where in the residual stream: ``block_output`` or ``block_input``.
* :data:`Scope` — who sees an attached steering: ``context`` (this thread / task) or
  ``global``.
* :data:`NamedPosition` — the positions that are one word (``all``, ``prompt``,
  ``generation``, ``after_instruction``, ``front``); :data:`PositionKind` adds the two that take
  numbers (``last_prompt:K``, ``window:A:B``). A whole positions string is parsed into a
  :class:`steerlab.steering.spec.Positions`.
* :data:`Comparator`, :data:`ConditionMode`, :data:`Aggregate` — a condition's knobs
  (conditional steering, :class:`steerlab.steering.spec.Condition`).

Lower layers take these types; the boundaries (CLI options, HTTP fields, manifest files) call
``parse_*`` on what they were given.

Example:
    >>> OPERATORS, UNITS, SITES
    (('add', 'ablate', 'clamp'), ('coefficient', 'strength'), ('block_output', 'block_input'))
    >>> parse_operator("clamp")
    'clamp'
    >>> parse_unit("strenght", "--unit")
    Traceback (most recent call last):
    ...
    steerlab.errors.SteerlabError: --unit must be one of coefficient, strength, got 'strenght'
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

from steerlab.errors import SteerlabError

Operator = Literal["add", "ablate", "clamp"]
Unit = Literal["coefficient", "strength"]
Site = Literal["block_output", "block_input"]
Scope = Literal["context", "global"]
NamedPosition = Literal["all", "prompt", "generation", "after_instruction", "front"]
PositionKind = Literal[NamedPosition, "last_prompt", "window"]
Comparator = Literal["greater", "less"]
ConditionMode = Literal["cast", "cosine"]
Aggregate = Literal["mean", "last"]

OPERATORS: tuple[Operator, ...] = get_args(Operator)
UNITS: tuple[Unit, ...] = get_args(Unit)
SITES: tuple[Site, ...] = get_args(Site)
SCOPES: tuple[Scope, ...] = get_args(Scope)
NAMED_POSITIONS: tuple[NamedPosition, ...] = get_args(NamedPosition)
POSITION_KINDS: tuple[PositionKind, ...] = get_args(PositionKind)
COMPARATORS: tuple[Comparator, ...] = get_args(Comparator)
CONDITION_MODES: tuple[ConditionMode, ...] = get_args(ConditionMode)
AGGREGATES: tuple[Aggregate, ...] = get_args(Aggregate)

_T = TypeVar("_T", bound=str)


def one_of(value: object, allowed: tuple[_T, ...]) -> _T | None:
    """``value`` as the member of ``allowed`` it equals, or ``None``.

    Example:
        >>> one_of("add", OPERATORS), one_of("mul", OPERATORS)
        ('add', None)
    """
    for choice in allowed:
        if isinstance(value, str) and value == choice:
            return choice
    return None


def _must_be(value: object, allowed: tuple[_T, ...], what: str) -> _T:
    found = one_of(value, allowed)
    if found is None:
        raise SteerlabError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    return found


def parse_operator(value: object, what: str = "operator") -> Operator:
    """``value`` as an :data:`Operator`, else ``unknown operator 'x'; expected one of ...``."""
    found = one_of(value, OPERATORS)
    if found is None:
        raise SteerlabError(f"unknown {what} {value!r}; expected one of {', '.join(OPERATORS)}")
    return found


def parse_site(value: object, what: str = "site") -> Site:
    """``value`` as a :data:`Site`, else ``unknown site 'x'; expected one of ...``."""
    found = one_of(value, SITES)
    if found is None:
        raise SteerlabError(f"unknown {what} {value!r}; expected one of {', '.join(SITES)}")
    return found


def parse_unit(value: object, what: str = "unit") -> Unit:
    """``value`` as a :data:`Unit`, else ``unit must be one of coefficient, strength, ...``."""
    return _must_be(value, UNITS, what)


def parse_scope(value: object, what: str = "scope") -> Scope:
    """``value`` as a :data:`Scope`, else ``scope must be one of context, global, ...``."""
    return _must_be(value, SCOPES, what)


def parse_comparator(value: object, what: str = "comparator") -> Comparator:
    """``value`` as a :data:`Comparator` (``greater`` / ``less``), else a one-line error."""
    return _must_be(value, COMPARATORS, what)


def parse_condition_mode(value: object, what: str = "mode") -> ConditionMode:
    """``value`` as a :data:`ConditionMode` (``cast`` / ``cosine``), else a one-line error."""
    return _must_be(value, CONDITION_MODES, what)


def parse_aggregate(value: object, what: str = "aggregate") -> Aggregate:
    """``value`` as an :data:`Aggregate` (``mean`` / ``last``), else a one-line error."""
    return _must_be(value, AGGREGATES, what)
