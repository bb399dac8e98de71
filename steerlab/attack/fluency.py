"""The suffix's own cross-entropy (its fluency, EPO's ``xent``).

``xent`` = the mean, over the suffix's tokens, of −log p(token | everything before it): the
first suffix token is scored from the last prompt token before the suffix, so (unlike EPO's
context-free runner) every suffix token counts. It is measured by the same forward that reads
the objective, i.e. under the steered model when steering covers the suffix positions.

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 3, 4)           # uniform over 4 tokens
    >>> round(float(suffix_xent(logits, torch.tensor([[0, 1, 2]]))[0]), 4)   # log 4
    1.3863
"""

from __future__ import annotations

import torch


def suffix_xent(logits: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy ``[B]`` of ``suffix``.

    ``logits[:, j]`` predicts suffix token j (``[B, L, V]``); ``suffix`` is ids ``[B, L]`` or a
    one-hot ``[B, L, V]`` (then differentiable through it, as the token gradient needs).
    An empty suffix has no cross-entropy (NaN).

    Example:
        >>> logits = torch.zeros(2, 1, 3)
        >>> suffix_xent(logits, torch.nn.functional.one_hot(torch.tensor([[0], [2]]), 3).float()
        ...             ).shape
        torch.Size([2])
    """
    if suffix.shape[1] == 0:
        return torch.full((logits.shape[0],), float("nan"), device=logits.device)
    if suffix.ndim == 3:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        return -(logprobs * suffix.to(logprobs.dtype)).sum(-1).mean(-1)
    flat = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                             suffix.reshape(-1).to(logits.device),
                                             reduction="none")
    return flat.view(suffix.shape).mean(-1)
