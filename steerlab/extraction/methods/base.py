"""What the methods that need every pair at once share: the pairs, back in data order.

Example:
    >>> import torch
    >>> c = PairCollector()
    >>> c.update(torch.ones(1, 2), torch.zeros(1, 2), [1])
    >>> c.update(torch.zeros(1, 2), torch.ones(1, 2), [0])
    >>> c.pairs()[0].tolist()
    [[0.0, 0.0], [1.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steerlab.errors import SteerlabError


class PairCollector:
    """Keeps every pair (in data order) for methods that need them all at once."""

    def __init__(self) -> None:
        self.pos: list[torch.Tensor] = []
        self.neg: list[torch.Tensor] = []
        self.index: list[int] = []

    def update(self, positive: torch.Tensor, negative: torch.Tensor,
               index: Sequence[int]) -> None:
        self.pos.append(positive)
        self.neg.append(negative)
        self.index += list(index)

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.pos:
            raise SteerlabError("no pairs were recorded")
        order = torch.argsort(torch.tensor(self.index))
        return torch.cat(self.pos)[order], torch.cat(self.neg)[order]
