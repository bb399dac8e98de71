"""The batched steered forward every scorer uses.

:func:`steered_logits` runs one left-padded forward (explicit position ids, so padding never
changes a row's numbers) under global and/or per-row steering and returns the float logits of
the last ``keep`` positions only (the LM head runs on nothing else). :func:`read_batches` runs
a :class:`~steerlab.scoring.readout.Readout` over all its rows: batches of ``batch_size`` rows
sorted by length (little padding), one steered forward each, rows back in their own order.

Example:
    >>> import torch
    >>> from steerlab.model.load import as_loaded
    >>> from steerlab.scoring.readout import TokenNLL
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
    >>> lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    >>> nll = read_batches(lm, TokenNLL([[5, 6, 7, 8]], [2]))
    >>> len(nll[0])                                            # tokens 7 and 8
    2
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel
from steerlab.scoring.readout import Readout, Row
from steerlab.steering.hooks import steer
from steerlab.steering.spec import Steering, SteeringSpec
from steerlab.util.progress import bar
from steerlab.util.seq import left_pad

RowSteering = Sequence[Sequence[SteeringSpec]]


def steered_logits(lm: LoadedModel, rows: Sequence[Sequence[int]], steering: Steering = None,
                   *, row_steering: RowSteering | None = None,
                   prompt_lengths: Sequence[int] | None = None,
                   instruction_lengths: Sequence[int] | None = None,
                   keep: int = 1) -> torch.Tensor:
    """Float logits ``[B, keep, V]`` of the last ``keep`` positions of one steered forward.

    Example:
        >>> steered_logits(lm, [[5, 6, 7], [8]], keep=1).shape[:2]       # doctest: +SKIP
        torch.Size([2, 1])
    """
    if not rows:
        raise SteerlabError("no rows to run")
    if row_steering is not None and len(row_steering) != len(rows):
        raise SteerlabError(f"row steering has {len(row_steering)} rows for {len(rows)} rows")
    batch = left_pad(rows, lm.pad_id)
    with steer(lm, steering, row_specs=row_steering, prompt_lengths=prompt_lengths,
               instruction_lengths=instruction_lengths), torch.inference_mode():
        out = lm.model(**{k: v.to(lm.device) for k, v in batch.items()}, use_cache=False,
                       logits_to_keep=keep)
    return out.logits[:, -keep:].float()


def length_batches(lengths: Sequence[int], batch_size: int, sort: bool = True) -> list[list[int]]:
    """Row indices in batches of ``batch_size``, longest rows first when ``sort``.

    Example:
        >>> length_batches([1, 5, 3], 2)
        [[1, 2], [0]]
    """
    if batch_size < 1:
        raise SteerlabError(f"batch size must be >= 1, got {batch_size}")
    order = (sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort
             else list(range(len(lengths))))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def read_batches(lm: LoadedModel, readout: Readout, steering: Steering = None, *,
                 row_steering: RowSteering | None = None,
                 prompt_lengths: Sequence[int] | None = None,
                 instruction_lengths: Sequence[int] | None = None, batch_size: int = 16,
                 sort: bool = True, progress: bool = False, desc: str = "score") -> list[Row]:
    """``readout``'s tuple for every one of its rows (in its order), batched and steered.

    ``row_steering[i]``, ``prompt_lengths[i]`` and ``instruction_lengths[i]`` belong to row i.

    Example:
        >>> from steerlab.scoring.readout import ABReadout
        >>> rows = read_batches(lm, ABReadout(seqs), spec)                 # doctest: +SKIP
    """
    rows = readout.rows()
    for name, per_row in (("row steering", row_steering), ("prompt lengths", prompt_lengths),
                          ("instruction lengths", instruction_lengths)):
        if per_row is not None and len(per_row) != len(rows):
            raise SteerlabError(f"{name}: {len(per_row)} entries for {len(rows)} rows")
    out: list[Row | None] = [None] * len(rows)
    batches = length_batches([len(r) for r in rows], batch_size, sort)
    progress_bar = bar(len(rows), desc, unit="row", enabled=progress)
    for indices in batches:
        logits = steered_logits(
            lm, [rows[i] for i in indices], steering,
            row_steering=[row_steering[i] for i in indices] if row_steering else None,
            prompt_lengths=[prompt_lengths[i] for i in indices] if prompt_lengths else None,
            instruction_lengths=([instruction_lengths[i] for i in indices]
                                 if instruction_lengths else None),
            keep=readout.keep(indices))
        for i, row in zip(indices, readout.read(indices, logits), strict=True):
            out[i] = row
        progress_bar.update(len(indices))
    progress_bar.close()
    return [row for row in out if row is not None]
