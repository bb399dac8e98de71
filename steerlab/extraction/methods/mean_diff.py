"""``mean_diff`` (CAA): the mean of paired differences, from running sums.

Example:
    >>> import torch
    >>> acc = MeanDiff()
    >>> acc.update(torch.ones(2, 3), torch.zeros(2, 3), [0, 1])
    >>> acc.result()[1]["consistency"]
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steerlab.errors import SteerlabError


class MeanDiff:
    """Running sums for the CAA mean difference and its consistency statistic."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.sq_norm_sum = 0.0
        self.count = 0

    def update(self, positive: torch.Tensor, negative: torch.Tensor,
               index: Sequence[int] = ()) -> None:
        diff = positive.double() - negative.double()
        self.sum = diff.sum(0) if self.sum is None else self.sum + diff.sum(0)
        self.sq_norm_sum += float((diff * diff).sum())
        self.count += diff.shape[0]

    def direction(self) -> torch.Tensor:
        if self.sum is None or self.count == 0:
            raise SteerlabError("mean_diff needs at least one pair")
        return (self.sum / self.count).float()

    def result(self) -> tuple[torch.Tensor, dict[str, float]]:
        return self.direction(), self.stats()

    def stats(self) -> dict[str, float]:
        """``consistency`` = |mean d|² / mean |d|² (1 when every pair differs identically)."""
        mean = self.direction().double()
        mean_sq = self.sq_norm_sum / max(self.count, 1)
        return {"norm": float(mean.norm()), "n_pairs": float(self.count),
                "consistency": float(mean @ mean) / mean_sq if mean_sq > 0 else 0.0}
