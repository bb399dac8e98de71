"""``actadd``: the position-resolved difference of one aligned prompt pair (Turner et al.).

Example:
    >>> import torch
    >>> v, s = actadd_direction(torch.ones(3, 2), torch.zeros(3, 2))
    >>> v.shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from typing import Any

import torch

from steerlab.errors import SteerlabError
from steerlab.extraction.methods.base import PairCollector


class ActAdd(PairCollector):
    """Collects the one pair's activations at every position."""

    def result(self) -> tuple[torch.Tensor, dict[str, Any]]:
        pos, neg = self.pairs()
        if pos.shape[0] != 1:
            raise SteerlabError(f"actadd takes exactly one pair, got {pos.shape[0]}")
        return actadd_direction(pos[0], neg[0])


def actadd_direction(positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor,
                                                                               dict[str, Any]]:
    """Position-resolved difference [n_pos, d] of one aligned pair (ActAdd).

    Example:
        >>> v, s = actadd_direction(torch.ones(3, 2), torch.zeros(3, 2))
        >>> v.shape
        torch.Size([3, 2])
    """
    if positive.shape != negative.shape:
        raise SteerlabError(f"actadd pair activations differ in shape: {list(positive.shape)} "
                            f"vs {list(negative.shape)}")
    diff = (positive - negative).float()
    return diff, {"n_pos": float(diff.shape[0]), "norm": float(diff.norm(dim=-1).mean())}
