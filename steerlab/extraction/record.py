"""Record residual-stream activations: batched, padding-aware, truncated forward.

``record()`` runs the model on token sequences (right-padded in batches) and yields, per batch,
the activations at the requested sites/layers and read positions. The forward stops right after
the deepest requested block (a hook raises a private exception), so no compute is spent on
layers nobody reads, nor on the final norm and LM head. Each batch also yields the residual
norms needed for the ``strength`` calibration (mean L2 norm over real tokens, excluding each
row's first token, whose norm is an outlier in most models).

``record_pairs()`` is the extraction path for contrast pairs (sequences interleaved positive,
negative, ...). It sorts the pairs by length, so batches carry little padding, and, where the
architecture allows a custom 4-D attention mask, runs each pair as *one* row: the shared prefix
once, then both suffixes side by side, each suffix attending to the prefix and to itself only
(position ids restart after the prefix for the second suffix). For CAA A/B items the two
sequences differ only in the answer letter, so this halves the forward compute; the hidden
states are those of two separate forwards (same causal context, same positions).

Example:
    >>> from steerlab.testing.tiny import tiny_model
    >>> model = tiny_model("llama")
    >>> batches = list(record(model, [[1, 2, 3], [4, 5]], layers=[1], read="last"))
    >>> batches[0].acts[1].shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.model.arch import cache_kwarg, find_blocks, fork_cache, split_block_output
from steerlab.util.seq import TOKENS_PER_ROW, common_prefix, right_pad, token_batches
from steerlab.util.vocabulary import SITES, Site, one_of

# Architectures whose HF forward takes a custom 4-D float attention mask and explicit
# position ids unchanged (checked: packed == separate forwards on tiny models of each).
PACKABLE = frozenset({"llama", "qwen2", "qwen3", "mistral", "gpt2", "gpt_neox", "phi3",
                      "gemma3_text"})

# A prefix every pair shares (chat template + system prompt) runs once into a KV cache when it
# is at least this long and there are at least two pairs.
MIN_SHARED_PREFIX = 8


class _StopForward(Exception):
    """Raised by the last needed hook to end the forward early."""


@dataclass
class RecordedBatch:
    """Activations of one batch: ``acts[layer]`` is [B, d] (read='last' or 'mean') or
    [B, T, d] ('all').

    ``order`` (from :func:`record_pairs`) gives the index in the input ``sequences`` of each row;
    ``None`` means the rows are the input's, in order.
    """

    acts: dict[int, torch.Tensor]
    norm_sum: dict[int, float]
    norm_count: int
    lengths: list[int]
    order: list[int] | None = None


def _check(model: nn.Module, layers: Sequence[int], site: Site) -> tuple[list[nn.Module],
                                                                        list[int]]:
    if one_of(site, SITES) is None:
        raise SteerlabError(f"unknown site {site!r}")
    _, blocks = find_blocks(model)
    wanted = sorted(set(layers))
    if not wanted:
        raise SteerlabError("no layers to record")
    if wanted[0] < 0 or wanted[-1] >= len(blocks):
        raise SteerlabError(f"layers {wanted} out of range for a model with {len(blocks)} layers")
    return list(blocks), wanted


class _Reader:
    """What the hooks keep of each block's hidden states: the activations at the read
    positions and the weighted residual-norm sum, never the full [B, T, d] tensor."""

    def __init__(self) -> None:
        self.rows = self.cols = self.weight = torch.zeros(0)
        self.mean_over: torch.Tensor | None = None  # [B, T] weights: read the mean instead
        self.acts: dict[int, torch.Tensor] = {}
        self.norm_sum: dict[int, float] = {}

    def start(self, rows: torch.Tensor, cols: torch.Tensor, weight: torch.Tensor,
              mean_over: torch.Tensor | None = None) -> None:
        self.rows, self.cols, self.weight, self.mean_over = rows, cols, weight, mean_over
        self.acts, self.norm_sum = {}, {}

    def __call__(self, layer: int, hidden: torch.Tensor) -> None:
        norms = hidden.float().norm(dim=-1).cpu()
        self.norm_sum[layer] = float((norms * self.weight).sum())
        if self.mean_over is not None:
            w = self.mean_over.to(hidden.device, torch.float32)
            self.acts[layer] = ((hidden.float() * w[..., None]).sum(1) /
                                w.sum(1, keepdim=True)).cpu()
        else:
            self.acts[layer] = hidden[self.rows, self.cols].float().cpu()


@contextlib.contextmanager
def _capturing(blocks: Sequence[nn.Module], wanted: list[int], site: Site) -> Iterator[_Reader]:
    """Hooks that hand each wanted layer's hidden states to a reader; stop after the deepest."""
    reader = _Reader()
    deepest = wanted[-1]

    def capture(layer: int) -> Any:
        def on_output(_m: nn.Module, _args: Any, output: Any) -> None:
            reader(layer, split_block_output(output)[0])
            if layer == deepest:
                raise _StopForward

        def on_input(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            reader(layer, args[0] if args else kwargs["hidden_states"])
            if layer == deepest:
                raise _StopForward

        return on_output, on_input

    handles = []
    try:
        for layer in wanted:
            on_output, on_input = capture(layer)
            if site == "block_output":
                handles.append(blocks[layer].register_forward_hook(on_output))
            else:
                handles.append(blocks[layer].register_forward_pre_hook(on_input,
                                                                       with_kwargs=True))
        yield reader
    finally:
        for handle in handles:
            handle.remove()


def _forward(model: nn.Module, reader: _Reader, wanted: list[int], cache: Any = None,
             **inputs: torch.Tensor) -> None:
    """One truncated forward (no grad); the hooks fill ``reader``. With ``cache`` (a KV cache
    object, updated in place even though the forward stops early) the inputs continue it."""
    device = next(model.parameters()).device
    extra = {cache_kwarg(model): cache, "use_cache": True} if cache is not None else {
        "use_cache": False}
    with torch.inference_mode(), contextlib.suppress(_StopForward):
        model(**{k: v.to(device) for k, v in inputs.items()}, **extra)
    missing = [k for k in wanted if k not in reader.acts]
    if missing:
        raise SteerlabError(f"the forward pass never reached layer(s) {missing}")


def record(model: nn.Module, sequences: Sequence[Sequence[int]], layers: Sequence[int],
           site: Site = "block_output", read: str = "last", batch_size: int = 16,
           pad_id: int = 0, progress: Any = None,
           max_tokens: int | None = None) -> Generator[RecordedBatch, None, None]:
    """Yield activations for ``sequences`` (token id lists) at ``layers`` and ``site``.

    ``read="last"`` keeps each row's last real token; ``read="mean"`` the mean over each row's
    real tokens (CAST's condition read); ``read="all"`` keeps every position
    (rows must then be the same length, as for ActAdd). Rows are right-padded in batches of at
    most ``batch_size`` rows and ``max_tokens`` padded tokens (see :func:`token_batches`), so
    real tokens never attend to pads and keep their usual position ids.
    """
    if read not in ("last", "mean", "all"):
        raise SteerlabError(f"unknown read position {read!r}; expected last, mean or all")
    blocks, wanted = _check(model, layers, site)
    with _capturing(blocks, wanted, site) as reader:
        for span in token_batches([len(s) for s in sequences], batch_size, max_tokens):
            chunk = [list(sequences[i]) for i in span]
            yield _record_rows(model, reader, wanted, chunk, read, pad_id)
            if progress is not None:
                progress.update(len(chunk))


def _record_rows(model: nn.Module, reader: _Reader, wanted: list[int], chunk: list[list[int]],
                 read: str, pad_id: int) -> RecordedBatch:
    """One right-padded forward over ``chunk`` (the hooks of ``reader`` already attached)."""
    lengths = [len(s) for s in chunk]
    if min(lengths) == 0:
        raise SteerlabError("cannot record an empty token sequence")
    if read == "all" and min(lengths) != max(lengths):
        raise SteerlabError("read='all' needs sequences of equal length")
    ids, mask = right_pad(chunk, pad_id)
    real = mask.bool().clone()
    real[:, 0] = False  # exclude the first token from the norm calibration
    rows = torch.arange(len(chunk))
    if read == "last":
        reader.start(rows, torch.tensor(lengths) - 1, real.float())
    elif read == "mean":
        reader.start(rows, torch.tensor(lengths) - 1, real.float(), mean_over=mask.float())
    else:
        reader.start(rows[:, None], torch.arange(ids.shape[1]), real.float())
    _forward(model, reader, wanted, input_ids=ids, attention_mask=mask)
    return RecordedBatch(reader.acts, reader.norm_sum, int(real.sum()), lengths)


Pair = tuple[list[int], list[int], int]  # positive, negative, length of their common prefix


def _can_pack(model: nn.Module, pairs: list[Pair]) -> bool:
    """Packing needs a tested architecture, an eager/SDPA attention, a shared non-empty
    prefix and proper suffixes in every pair, and rows no wider than any sliding window."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in PACKABLE:
        return False
    if getattr(config, "_attn_implementation", "eager") not in ("eager", "sdpa"):
        return False
    width = 0
    for a, b, common in pairs:
        if common == 0 or common >= min(len(a), len(b)):
            return False
        width = max(width, len(a) + len(b) - common)
    window = getattr(config, "sliding_window", None)
    if window is None or getattr(config, "use_sliding_window", True) is False:
        return True
    return width <= int(window)


def _packed_batch(chunk: list[Pair], pad_id: int, dtype: torch.dtype,
                  skip: int = 0) -> dict[str, torch.Tensor]:
    """Rows ``prefix + suffix_a + suffix_b``; a 4-D mask keeps the suffixes apart.

    ``skip``: the first ``skip`` tokens of every row are already in a KV cache (the prefix all
    pairs share); rows start after them and the mask gets ``skip`` always-visible columns.
    """
    width = max(len(a) + len(b) - p for a, b, p in chunk) - skip
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(chunk), width), dtype=torch.long)
    seg = torch.full((len(chunk), width), -1, dtype=torch.long)  # 0 prefix, 1 a, 2 b, -1 pad
    for row, (a, b, p) in enumerate(chunk):
        la, lb, n = len(a) - p, len(b) - p, p - skip
        ids[row, : n + la + lb] = torch.tensor(a[skip:] + b[p:])
        pos[row, : n + la] = torch.arange(skip, p + la)
        pos[row, n + la: n + la + lb] = torch.arange(p, p + lb)
        seg[row, :n], seg[row, n: n + la], seg[row, n + la: n + la + lb] = 0, 1, 2
    key, query = seg[:, None, :], seg[:, :, None]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)  # pad rows attend to themselves (no NaN)
    if skip:
        allowed = torch.cat([torch.ones(len(chunk), width, skip, dtype=torch.bool), allowed], 2)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask[:, None],
            "segments": seg}


def _prefix_cache(model: nn.Module, reader: _Reader, wanted: list[int], prefix: list[int],
                  n_sequences: int) -> tuple[Any, dict[int, float], int]:
    """Run the prefix every sequence shares once: its KV cache and its residual-norm share
    (each prefix token stands for ``n_sequences`` tokens; the first token is left out)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=getattr(model, "config", None))
    weight = torch.full((1, len(prefix)), float(n_sequences))
    weight[0, 0] = 0
    reader.start(torch.tensor([0]), torch.tensor([len(prefix) - 1]), weight)
    ids = torch.tensor([prefix])
    _forward(model, reader, wanted, cache=cache, input_ids=ids,
             position_ids=torch.arange(len(prefix))[None])
    return cache, dict(reader.norm_sum), int(weight.sum())


def _record_packed(model: nn.Module, pairs: list[Pair],
                   order: list[int], blocks: list[nn.Module], wanted: list[int], site: Site,
                   spans: list[range], pad_id: int, progress: Any, shared: int = 0
                   ) -> Generator[RecordedBatch, None, None]:
    dtype = next(model.parameters()).dtype
    with _capturing(blocks, wanted, site) as reader:
        cache, extra_norm, extra_count = None, dict.fromkeys(wanted, 0.0), 0
        if shared:
            cache, extra_norm, extra_count = _prefix_cache(model, reader, wanted,
                                                           pairs[0][0][:shared], 2 * len(pairs))
        for span in spans:
            index = [order[i] for i in span]
            chunk = [pairs[i] for i in index]
            inputs = _packed_batch(chunk, pad_id, dtype, skip=shared)
            seg = inputs.pop("segments")
            # norm weights: prefix tokens stand for two sequences; a row's first token is out
            weight = (seg == 0).float() * 2 + (seg > 0).float()
            if not shared:
                weight[:, 0] = 0
            ends_a = [len(a) - 1 - shared for a, _, _ in chunk]
            ends_b = [len(a) + len(b) - p - 1 - shared for a, b, p in chunk]
            rows = torch.arange(len(chunk)).repeat_interleave(2)
            cols = torch.tensor([c for pair in zip(ends_a, ends_b, strict=True) for c in pair])
            reader.start(rows, cols, weight)
            forked = None if cache is None else fork_cache(cache, len(chunk))
            _forward(model, reader, wanted, cache=forked, **inputs)
            lengths = [len(s) for a, b, _ in chunk for s in (a, b)]
            if progress is not None:
                progress.update(len(lengths))
            norm_sum = {k: v + extra_norm[k] for k, v in reader.norm_sum.items()}
            yield RecordedBatch(reader.acts, norm_sum, int(weight.sum()) + extra_count, lengths,
                                [2 * i + j for i in index for j in (0, 1)])
            extra_norm, extra_count = dict.fromkeys(wanted, 0.0), 0  # counted once


def record_pairs(model: nn.Module, sequences: Sequence[Sequence[int]], layers: Sequence[int],
                 site: Site = "block_output", batch_size: int = 16, pad_id: int = 0,
                 progress: Any = None, pack: bool = True, max_tokens: int | None = None,
                 reuse_prefix: bool = True) -> Generator[RecordedBatch, None, None]:
    """Last-token activations of contrast pairs (``sequences`` = pos, neg, pos, neg, ...).

    Pairs are sorted by length (longest first) and, when :func:`_can_pack` allows and ``pack``
    is true, each pair runs as one packed row (up to ``batch_size // 2`` pairs per forward).
    A forward holds at most ``max_tokens`` padded tokens (default: its row count times
    ``TOKENS_PER_ROW``), so memory does not grow with the longest pairs in the data. With
    ``reuse_prefix``, a prefix that *all* sequences share (at least ``MIN_SHARED_PREFIX``
    tokens, e.g. a chat template's system turn) runs once into a KV cache that every packed
    batch continues; activations and norms are those of the full rows.
    Batches come out sorted; ``RecordedBatch.order`` maps rows back to ``sequences``.
    Rows stay interleaved positive, negative, so ``acts[0::2] - acts[1::2]`` are differences.
    """
    if len(sequences) % 2:
        raise SteerlabError("record_pairs needs an even number of sequences (pos, neg, ...)")
    blocks, wanted = _check(model, layers, site)
    pairs: list[Pair] = []
    for i in range(0, len(sequences), 2):
        a, b = list(sequences[i]), list(sequences[i + 1])
        if not a or not b:
            raise SteerlabError("cannot record an empty token sequence")
        pairs.append((a, b, common_prefix((a, b))))
    per_batch = max(1, batch_size // 2)
    if pack and _can_pack(model, pairs):
        width = [len(a) + len(b) - p for a, b, p in pairs]
        order = sorted(range(len(pairs)), key=lambda i: -width[i])
        shared = common_prefix(sequences) if reuse_prefix and len(pairs) > 1 else 0
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        spans = token_batches([width[i] - shared for i in order], per_batch, max_tokens)
        yield from _record_packed(model, pairs, order, blocks, wanted, site, spans, pad_id,
                                  progress, shared)
        return
    order = sorted(range(len(pairs)), key=lambda i: -max(len(pairs[i][0]), len(pairs[i][1])))
    # both sequences of a pair stay in one batch: budget whole pairs (2 rows each)
    pair_width = [max(len(pairs[i][0]), len(pairs[i][1])) for i in order]
    budget = max_tokens if max_tokens is not None else 2 * per_batch * TOKENS_PER_ROW
    spans = token_batches([2 * w for w in pair_width], per_batch, budget)
    with _capturing(blocks, wanted, site) as reader:
        for span in spans:
            flat = [s for i in span for s in pairs[order[i]][:2]]
            batch = _record_rows(model, reader, wanted, flat, "last", pad_id)
            batch.order = [2 * order[i] + j for i in span for j in (0, 1)]
            yield batch
            if progress is not None:
                progress.update(len(flat))
