"""``probe``: the weight vector of a logistic regression separating the two sides.

Example:
    >>> import torch
    >>> pos = torch.randn(20, 4) + torch.tensor([3.0, 0, 0, 0])
    >>> v, s = probe_direction(pos, torch.randn(20, 4))
    >>> v[0].item() > 0.5
    True
"""

from __future__ import annotations

import numpy as np
import torch

from steerlab.errors import SteerlabError
from steerlab.extraction.methods.base import PairCollector


class Probe(PairCollector):
    """Collects the pairs; the direction is :func:`probe_direction`."""

    def result(self) -> tuple[torch.Tensor, dict[str, float]]:
        return probe_direction(*self.pairs())


def probe_direction(positive: torch.Tensor, negative: torch.Tensor,
                    c: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Unit weight vector of an L2 logistic regression (positive = 1) on raw activations.

    Example:
        >>> pos = torch.randn(20, 4) + torch.tensor([3.0, 0, 0, 0])
        >>> v, s = probe_direction(pos, torch.randn(20, 4))
        >>> v[0].item() > 0.5
        True
    """
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([positive, negative]).double().numpy()
    y = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    if len(positive) < 1 or len(negative) < 1:
        raise SteerlabError("probe needs at least one positive and one negative example")
    scale = float(np.linalg.norm(x, axis=1).mean()) or 1.0
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(x / scale, y)
    weight = torch.from_numpy(clf.coef_[0]).float()
    accuracy = float(clf.score(x / scale, y))
    return weight / weight.norm().clamp_min(1e-12), {"train_accuracy": accuracy,
                                                      "n_pairs": float(len(positive))}
