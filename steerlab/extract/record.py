"""Record residual-stream activations: batched, padding-aware, truncated forward.

``record()`` runs the model on token sequences (right-padded in batches) and yields, per batch,
the activations at the requested sites/layers and read positions. The forward stops right after
the deepest requested block (a hook raises a private exception), so no compute is spent on
layers nobody reads, nor on the LM head. Each batch also yields the residual norms needed for
the ``strength`` calibration (mean L2 norm over real tokens, excluding each row's first token,
whose norm is an outlier in most models).

Example:
    >>> from tests.tiny import tiny_model
    >>> model = tiny_model("llama")
    >>> batches = list(record(model, [[1, 2, 3], [4, 5]], layers=[1], read="last"))
    >>> batches[0].acts[1].shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.layers import find_blocks


class _StopForward(Exception):
    """Raised by the last needed hook to end the forward early."""


@dataclass
class RecordedBatch:
    """Activations of one batch: ``acts[layer]`` is [B, d] (read='last') or [B, T, d] ('all')."""

    acts: dict[int, torch.Tensor]
    norm_sum: dict[int, float]
    norm_count: int
    lengths: list[int]


def _hidden_of(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise SteerlabError(f"cannot read hidden states from a block output of type {type(value)}")


def record(model: nn.Module, sequences: Sequence[Sequence[int]], layers: Sequence[int],
           site: str = "block_output", read: str = "last", batch_size: int = 16,
           pad_id: int = 0, progress: Any = None) -> Generator[RecordedBatch, None, None]:
    """Yield activations for ``sequences`` (token id lists) at ``layers`` and ``site``.

    ``read="last"`` keeps each row's last real token; ``read="all"`` keeps every position
    (rows must then be the same length, as for ActAdd). Rows are right-padded in batches, so
    real tokens never attend to pads and keep their usual position ids.
    """
    if site not in ("block_output", "block_input"):
        raise SteerlabError(f"unknown site {site!r}")
    if read not in ("last", "all"):
        raise SteerlabError(f"unknown read position {read!r}; expected 'last' or 'all'")
    _, blocks = find_blocks(model)
    wanted = sorted(set(layers))
    if not wanted:
        raise SteerlabError("no layers to record")
    if wanted[0] < 0 or wanted[-1] >= len(blocks):
        raise SteerlabError(f"layers {wanted} out of range for a model with {len(blocks)} layers")
    deepest = wanted[-1]
    device = next(model.parameters()).device
    captured: dict[int, torch.Tensor] = {}

    def capture(layer: int, stop: bool) -> Any:
        def on_output(_m: nn.Module, _args: Any, output: Any) -> None:
            captured[layer] = _hidden_of(output)
            if stop:
                raise _StopForward

        def on_input(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured[layer] = args[0] if args else kwargs["hidden_states"]
            if stop:
                raise _StopForward

        return on_output, on_input

    handles = []
    for layer in wanted:
        on_output, on_input = capture(layer, layer == deepest)
        if site == "block_output":
            handles.append(blocks[layer].register_forward_hook(on_output))
        else:
            handles.append(blocks[layer].register_forward_pre_hook(on_input, with_kwargs=True))
    try:
        for start in range(0, len(sequences), batch_size):
            chunk = [list(s) for s in sequences[start:start + batch_size]]
            lengths = [len(s) for s in chunk]
            if min(lengths) == 0:
                raise SteerlabError("cannot record an empty token sequence")
            width = max(lengths)
            if read == "all" and min(lengths) != width:
                raise SteerlabError("read='all' needs sequences of equal length")
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            captured.clear()
            with torch.inference_mode():
                with contextlib.suppress(_StopForward):
                    model(input_ids=ids.to(device), attention_mask=mask.to(device),
                          use_cache=False)
                missing = [k for k in wanted if k not in captured]
                if missing:
                    raise SteerlabError(f"the forward pass never reached layer(s) {missing}")
            last = torch.tensor(lengths) - 1
            real = mask.bool().clone()
            real[:, 0] = False  # exclude the first token from the norm calibration
            acts: dict[int, torch.Tensor] = {}
            norm_sum: dict[int, float] = {}
            for layer in wanted:
                hidden = captured[layer].float().cpu()
                norms = hidden.norm(dim=-1)
                norm_sum[layer] = float(norms[real].sum())
                acts[layer] = (hidden[torch.arange(len(chunk)), last] if read == "last"
                               else hidden.clone())
            if progress is not None:
                progress.update(len(chunk))
            yield RecordedBatch(acts, norm_sum, int(real.sum()), lengths)
    finally:
        for handle in handles:
            handle.remove()
