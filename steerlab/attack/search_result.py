"""What a suffix search found: :class:`SearchResult` (the best suffix seen, the start, the
references, the Pareto frontier and one :class:`StepRecord` per iteration), and the two
trackers a search keeps while it runs (:class:`Frontier`, :class:`Best`).

Example:
    >>> best = Best(torch.tensor([1, 2]), 0.1, 3.0)
    >>> best.update(torch.tensor([[3, 4], [5, 6]]), torch.tensor([0.5, 0.5]),
    ...             torch.tensor([2.0, 1.0]))
    >>> best.ids.tolist(), best.value, best.xent
    ([5, 6], 0.5, 1.0)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlab.attack.layout import decode_all


@dataclass(frozen=True)
class FrontierPoint:
    """One suffix on the Pareto frontier of (objective ↑, xent ↓)."""

    ids: tuple[int, ...]
    text: str
    objective: float
    xent: float
    iteration: int


@dataclass(frozen=True)
class StepRecord:
    """What one iteration did: the best so far, the members, how many candidates ran."""

    iteration: int
    best_objective: float
    best_xent: float
    members: tuple[tuple[float, float], ...]  # (objective, xent) per population slot
    candidates: int
    seconds: float  # since the search started


@dataclass
class SearchResult:
    """The outcome of a search (or the random baseline) on one item.

    ``objective`` / ``xent`` / ``suffix_*``: the best suffix seen (highest objective).
    ``reference``: the objective on the prompt without a suffix, *unsteered*;
    ``steered_no_suffix``: the same, steered (how far steering moved it). ``success``:
    ``objective >= reference`` (see :mod:`steerlab.attack.objectives`). ``evaluations``: how
    many suffixes were scored (the random baseline gets the same budget).
    """

    method: str
    objective_name: str
    suffix_ids: tuple[int, ...]
    suffix_text: str
    user_text: str
    objective: float
    xent: float
    xent_unsteered: float
    start_ids: tuple[int, ...]
    start_objective: float
    start_xent: float
    reference: float
    steered_no_suffix: float
    success: bool
    iterations: int
    evaluations: int
    seconds: float
    seed: int
    frontier: list[FrontierPoint] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def answer_flipped(self) -> bool | None:
        """``ab_flip`` only: whether the steered model now prefers the not-matching letter."""
        return self.objective > 0 if self.objective_name == "ab_flip" else None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields (frontier and steps included)."""
        return dataclasses.asdict(self)


class Frontier:
    """The Pareto frontier (objective ↑, xent ↓) of everything evaluated so far."""

    def __init__(self) -> None:
        self.points: dict[tuple[int, ...], tuple[float, float, int]] = {}

    def add(self, ids: torch.Tensor, values: torch.Tensor, xents: torch.Tensor,
            iteration: int) -> None:
        """Add the evaluated suffixes ``ids`` (finite ones only) and keep the frontier."""
        merged = dict(self.points)
        for row, v, x in zip(ids.tolist(), values.tolist(), xents.tolist(), strict=True):
            key = tuple(row)
            if key not in merged and math.isfinite(v) and math.isfinite(x):
                merged[key] = (v, x, iteration)
        order = sorted(merged.items(), key=lambda kv: (kv[1][1], -kv[1][0]))
        kept: dict[tuple[int, ...], tuple[float, float, int]] = {}
        best = -math.inf
        for key, point in order:
            if point[0] > best:
                kept[key] = point
                best = point[0]
        self.points = kept

    def export(self, tokenizer: Any) -> list[FrontierPoint]:
        """The frontier's points, their suffixes decoded."""
        keys = list(self.points)
        texts = decode_all(tokenizer, keys) if keys else []
        return [FrontierPoint(k, t, *self.points[k]) for k, t in zip(keys, texts, strict=True)]


class Best:
    """The best suffix seen: highest objective, ties to the lower xent."""

    def __init__(self, ids: torch.Tensor, value: float, xent: float):
        self.ids, self.value, self.xent = ids.clone(), value, xent

    def update(self, ids: torch.Tensor, values: torch.Tensor, xents: torch.Tensor) -> None:
        """Keep the best of ``ids`` if it beats the best so far."""
        if not len(values):
            return
        score = torch.where(torch.isfinite(values), values, torch.full_like(values, -math.inf))
        top = float(score.max())
        ties = torch.nonzero(score == top).flatten()
        i = int(ties[torch.argmin(xents[ties])])
        if top > self.value or (top == self.value and float(xents[i]) < self.xent):
            self.ids, self.value, self.xent = ids[i].clone(), top, float(xents[i])
