"""How a suffix search runs: :class:`SearchConfig`, and its two presets — :func:`gcg` (one
current suffix moving to its best single-token swap) and :func:`epo` (a population trading the
objective against fluency). :func:`steerlab.attack.search.search` runs them.

Example:
    >>> gcg().method, epo().population
    ('gcg', 8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from steerlab.attack.layout import RETOKENIZE
from steerlab.errors import SteerlabError

METHODS = ("gcg", "epo", "random")


@dataclass(frozen=True)
class SearchConfig:
    """How to search (see the module docstring; :func:`gcg` and :func:`epo` fill it in).

    ``x_penalties`` has one X per population member (GCG: ``(0.0,)``). ``children``:
    candidates per member per iteration (GCG: all candidates). ``init``: the starting suffix
    as text or ids (its length then wins over ``suffix_length``). ``batch_size``: rows per
    candidate forward (default: automatic). ``time_limit``: seconds; the search stops when the
    next iteration (as long as the last one) would end past it (at least one iteration runs).
    ``early_stop``: stop at the first success (before the first iteration when the start
    already succeeds).
    """

    method: str = "gcg"
    suffix_length: int = 20
    iterations: int = 250
    children: int = 512
    topk: int = 256
    x_penalties: tuple[float, ...] = (0.0,)
    keep_parents: bool = False
    restart_every: int | None = None
    restart_penalty: float = 2.0
    seed: int = 0
    init: str | tuple[int, ...] | None = None
    retokenize: str = "prompt"
    allow_non_ascii: bool = False
    forbid: tuple[int, ...] = ()
    use_prefix_cache: bool = True
    batch_size: int | None = None
    early_stop: bool = False
    time_limit: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SteerlabError(f"method must be one of {', '.join(METHODS)}, got "
                                f"{self.method!r}")
        for name in ("suffix_length", "children", "topk"):
            if int(getattr(self, name)) < 1:
                raise SteerlabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.iterations < 0:
            raise SteerlabError(f"iterations must be >= 0, got {self.iterations}")
        if not self.x_penalties or any(not math.isfinite(x) or x < 0 for x in self.x_penalties):
            raise SteerlabError("x_penalties: one finite X >= 0 per population member")
        if self.restart_every is not None and self.restart_every < 1:
            raise SteerlabError(f"restart_every must be >= 1, got {self.restart_every}")
        if self.retokenize not in RETOKENIZE:
            raise SteerlabError(f"retokenize must be one of {', '.join(RETOKENIZE)}, got "
                                f"{self.retokenize!r}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise SteerlabError(f"time_limit must be positive, got {self.time_limit}")

    @property
    def population(self) -> int:
        return len(self.x_penalties)

    @property
    def selects_on_xent(self) -> bool:
        """Whether choosing members reads the candidates' xent (a fluency penalty or restart).

        When it does not (GCG), candidates are scored without their suffix logits and only the
        members' xent is measured, once per iteration."""
        return any(x > 0 for x in self.x_penalties) or bool(
            self.restart_every and self.restart_penalty > 0)

    @property
    def candidates(self) -> int:
        """Candidates evaluated per iteration (at most; filtering may leave fewer)."""
        return self.population * self.children


def gcg(**overrides: Any) -> SearchConfig:
    """GCG: one current suffix, no fluency term, moves to its best single-token swap.

    Example:
        >>> gcg(iterations=10).candidates
        512
    """
    return SearchConfig(**{"method": "gcg", **overrides})


def epo_penalties(population: int = 8, x_min: float = 0.1, x_max: float = 10.0
                  ) -> tuple[float, ...]:
    """EPO's X grid: ``population`` values log-spaced from ``x_min`` to ``x_max``.

    Example:
        >>> [round(x, 3) for x in epo_penalties()]
        [0.1, 0.193, 0.373, 0.72, 1.389, 2.683, 5.179, 10.0]
    """
    if population < 1 or not 0 < x_min <= x_max:
        raise SteerlabError("EPO penalties need population >= 1 and 0 < x_min <= x_max")
    if population == 1:
        return (float(x_min),)
    grid = torch.linspace(math.log(x_min), math.log(x_max), population, dtype=torch.float64)
    return tuple(float(x) for x in grid.exp())


def epo(population: int = 8, x_min: float = 0.1, x_max: float = 10.0,
        **overrides: Any) -> SearchConfig:
    """EPO (Thompson et al. 2024): a population trading objective against fluency.

    Member i minimises ``−objective + X_i · xent`` with X from :func:`epo_penalties`.

    Example:
        >>> cfg = epo(iterations=5)
        >>> cfg.population, cfg.candidates, cfg.keep_parents
        (8, 256, True)
    """
    base: dict[str, Any] = {"method": "epo", "suffix_length": 12, "iterations": 300,
                            "children": 32, "topk": 512,
                            "x_penalties": epo_penalties(population, x_min, x_max),
                            "keep_parents": True, "restart_every": 50, "restart_penalty": 2.0}
    return SearchConfig(**{**base, **overrides})
