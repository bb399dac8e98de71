"""``pca`` (RepE): first principal component of the centred paired differences.

Example:
    >>> import torch
    >>> v, s = pca_direction(torch.tensor([[2.0, 0.1], [3.0, -0.1], [4.0, 0.0]]))
    >>> round(v[0].item(), 2), s["sign_agreement"]
    (1.0, 1.0)
"""

from __future__ import annotations

import torch

from steerlab.errors import SteerlabError
from steerlab.extraction.methods.base import PairCollector


class PCA(PairCollector):
    """Collects the pairs; the direction is :func:`pca_direction` of their differences."""

    def result(self) -> tuple[torch.Tensor, dict[str, float]]:
        pos, neg = self.pairs()
        return pca_direction(pos - neg)


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
