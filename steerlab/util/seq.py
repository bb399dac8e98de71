"""Token-sequence helpers: shared prefixes, padding, token-budget batches.

Example:
    >>> common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]])
    2
    >>> left_pad([[5, 6], [7]], 0)["position_ids"].tolist()
    [[0, 1], [0, 0]]
    >>> token_batches([300, 200, 200, 100], max_rows=2, max_tokens=500)
    [range(0, 1), range(1, 3), range(3, 4)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# A forward holds at most ``rows * TOKENS_PER_ROW`` padded tokens: rows longer than this get
# smaller batches, so the per-batch memory transient is set by the batch size, not by the
# longest sequences in the data (which grow with the number of pairs).
TOKENS_PER_ROW = 256


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens every row shares.

    Example:
        >>> common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]])
        2
    """
    n = 0
    for column in zip(*rows, strict=False):
        if any(c != column[0] for c in column):
            break
        n += 1
    return n


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask`` and matching ``position_ids``.

    Example:
        >>> left_pad([[5, 6], [7]], 0)["position_ids"].tolist()
        [[0, 1], [0, 0]]
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(list(row))
            mask[i, width - len(row):] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` (real tokens keep their positions).

    Example:
        >>> right_pad([[5, 6], [7]], 0)[1].tolist()
        [[1, 1], [1, 0]]
    """
    width = max(len(s) for s in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, seq in enumerate(rows):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def token_batches(widths: Sequence[int], max_rows: int,
                  max_tokens: int | None = None) -> list[range]:
    """Consecutive index ranges with at most ``max_rows`` rows and, once padded to their
    widest row, at most ``max_tokens`` tokens (default ``max_rows * TOKENS_PER_ROW``); a row
    wider than the budget goes alone.

    Example:
        >>> token_batches([300, 200, 200, 100], max_rows=2, max_tokens=500)
        [range(0, 1), range(1, 3), range(3, 4)]
    """
    budget = max_tokens if max_tokens is not None else max(1, max_rows) * TOKENS_PER_ROW
    batches: list[range] = []
    start, widest = 0, 0
    for i, width in enumerate(widths):
        rows, wider = i - start + 1, max(widest, width)
        if i > start and (rows > max_rows or rows * wider > budget):
            batches.append(range(start, i))
            start, wider = i, width
        widest = wider
    if start < len(widths):
        batches.append(range(start, len(widths)))
    return batches
