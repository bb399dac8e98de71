"""Extraction methods: small functions/accumulators from recorded activations to directions.

* :class:`MeanDiff` (CAA) — streaming mean of paired differences (memory independent of n).
* :func:`pca_direction` (RepE) — first principal component of the centred paired differences,
  sign fixed so that most pairs project positive.
* :func:`probe_direction` — logistic-regression weight vector (unit norm) separating the
  positive from the negative activations.
* :func:`actadd_direction` — position-resolved difference of one aligned pair.

Example:
    >>> import torch
    >>> acc = MeanDiff()
    >>> acc.update(torch.ones(2, 3), torch.zeros(2, 3))
    >>> acc.direction().tolist()
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from steerlab.errors import SteerlabError

METHODS = ("mean_diff", "pca", "probe", "actadd")


class MeanDiff:
    """Running sums for the CAA mean difference and its consistency statistic."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.sq_norm_sum = 0.0
        self.count = 0

    def update(self, positive: torch.Tensor, negative: torch.Tensor) -> None:
        diff = positive.double() - negative.double()
        self.sum = diff.sum(0) if self.sum is None else self.sum + diff.sum(0)
        self.sq_norm_sum += float((diff * diff).sum())
        self.count += diff.shape[0]

    def direction(self) -> torch.Tensor:
        if self.sum is None or self.count == 0:
            raise SteerlabError("mean_diff needs at least one pair")
        return (self.sum / self.count).float()

    def stats(self) -> dict[str, float]:
        """``consistency`` = |mean d|² / mean |d|² (1 when every pair differs identically)."""
        mean = self.direction().double()
        mean_sq = self.sq_norm_sum / max(self.count, 1)
        return {"norm": float(mean.norm()), "n_pairs": float(self.count),
                "consistency": float(mean @ mean) / mean_sq if mean_sq > 0 else 0.0}


def pca_direction(diffs: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Unit first principal component of centred differences ``diffs`` [n, d], sign by majority.

    Example:
        >>> d = torch.tensor([[2.0, 0.1], [3.0, -0.1], [4.0, 0.0]])
        >>> v, s = pca_direction(d)
        >>> round(v[0].item(), 2), s["sign_agreement"]
        (1.0, 1.0)
    """
    if diffs.shape[0] < 2:
        raise SteerlabError("pca needs at least 2 pairs")
    x = diffs.double()
    centred = x - x.mean(0, keepdim=True)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    direction = vh[0]
    agree = float(((x @ direction) > 0).double().mean())
    if agree < 0.5:
        direction, agree = -direction, 1.0 - agree
    total = float((singular**2).sum())
    explained = float(singular[0] ** 2) / total if total > 0 else 0.0
    return direction.float(), {"explained_variance": explained, "sign_agreement": agree,
                               "n_pairs": float(diffs.shape[0])}


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
