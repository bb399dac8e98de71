"""The sweep engine: score a layer × coefficient grid without redoing shared work.

A naive sweep runs the whole model once per cell (and often once per item). The engine shares
the work no cell changes, in one of two ways, picking per batch whichever computes less:

* **Layer prefix** (steering at every position): each batch runs **once** unsteered (which
  also gives every coefficient-0 cell), keeping each block's input and call arguments. A cell
  at layer L restarts from the stored input of the first steered block and runs only the
  blocks from there up, plus the final norm and the LM head at the last position.
* **Token prefix** (steering only from some position on, e.g. CAA's ``after_instruction``):
  tokens before the first steered position are the same in every cell at every layer, so
  they run once with the KV cache on; each cell runs only the remaining tokens on a copy of
  that cache.

Either way all non-zero coefficients of a layer ride in one forward as per-row specs (each item
repeated once per coefficient), and items are batched by length to cut padding. On the first
batch the layer-prefix path replays the tail unsteered and checks it reproduces the model's own
logits; an architecture where that fails falls back to whole forwards with per-row specs, with a
warning. Scores equal the naive loop's (|Δ| < 1e-4, tested on eight architectures).

Example:
    >>> res = sweep_ab(lm, val, vec, layers=[8, 12], values=[-2, 0, 2])   # doctest: +SKIP
    >>> print(res[(12, 2.0)])                                           # doctest: +SKIP
    0.571 [0.521, 0.620] (n=50)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from steerlab.data.formats import ABItem
from steerlab.data.loaders import Dataset
from steerlab.data.sequences import ABSequences, AnswerSequence, ab_sequences, answer_sequences
from steerlab.errors import SteerlabError
from steerlab.model.arch import (
    BlockCall,
    Head,
    UnsupportedArchitecture,
    block_input,
    cache_kwarg,
    find_blocks,
    fork_cache,
    returned_cache,
    run_block,
)
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.scoring.ab import ABResult, ab_items, answer_result
from steerlab.scoring.batch import steered_logits
from steerlab.scoring.readout import ABReadout, AnswerReadout, Row
from steerlab.steering.hooks import steer
from steerlab.steering.plan import Plan, PositionTracker, apply_terms, compile_terms
from steerlab.steering.spec import SteeringSpec
from steerlab.util.progress import bar as progress_bar
from steerlab.util.seq import left_pad
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector

LayerKey = int | tuple[int, ...]
_Read = Callable[[torch.Tensor, int], list[Row]]


def _expand(value: Any, batch: int, times: int) -> Any:
    """Repeat every batch-major tensor in ``value`` ``times`` times per row (row-major)."""
    if times == 1:
        return value
    if isinstance(value, torch.Tensor):
        if value.ndim >= 2 and value.shape[0] == batch:
            return value.repeat_interleave(times, dim=0)
        return value
    if isinstance(value, tuple):
        return tuple(_expand(v, batch, times) for v in value)
    if isinstance(value, list):
        return [_expand(v, batch, times) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, batch, times) for k, v in value.items()}
    return value


def _capture_calls(model: nn.Module, blocks: nn.ModuleList, head: Head, starts: set[int],
                   run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict[int, BlockCall],
                                                             torch.Tensor]:
    """Run ``run()`` recording each block's call from min(starts) up and the final hidden."""
    calls: dict[int, BlockCall] = {}
    final: list[torch.Tensor] = []
    handles = []
    first = min(starts)

    def block_hook(index: int) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            calls[index] = BlockCall(args, dict(kwargs))
        return hook

    def norm_hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
        final.append(args[0])

    try:
        for index in range(first, len(blocks)):
            handles.append(blocks[index].register_forward_pre_hook(block_hook(index),
                                                                   with_kwargs=True))
        assert head.norm is not None
        handles.append(head.norm.register_forward_pre_hook(norm_hook))
        logits = run()
    finally:
        for handle in handles:
            handle.remove()
    if len(final) != 1 or len(calls) != len(blocks) - first:
        raise UnsupportedArchitecture("blocks or final norm were not called exactly once")
    return logits, calls, final[0]


class SweepEngine:
    """Prefix-reusing scorer of A/B items under many (layers, value) cells.

    Example:
        >>> engine = SweepEngine(lm)                                         # doctest: +SKIP
        >>> results = engine.score(seqs, vec, [[10], [12]], [-1.0, 0.0, 1.0])  # doctest: +SKIP
    """

    def __init__(self, model: LoadedModel | Any, *, batch_size: int = 16,
                 progress: bool = False):
        self.lm = as_loaded(model)
        self.module = self.lm.model
        self.path, self.blocks = find_blocks(self.module)
        self.head = Head(self.module, self.path)
        self.batch_size = batch_size
        self.progress = progress
        self.prefix_reuse = self.head.supported
        self.token_reuse = True
        self._verified = False

    def score(self, seqs: Sequence[ABSequences] | Sequence[AnswerSequence],
              vector: SteeringVector, layer_groups: Sequence[Sequence[int]],
              values: Sequence[float], *, unit: Unit = "coefficient",
              positions: str = "all") -> dict[tuple[LayerKey, float], ABResult]:
        """Score every (layer group, value) cell; keys are ``(layer or tuple, value)``.

        ``seqs`` are A/B items (:func:`ab_sequences`: the letter score) or whole answers in
        (matching, not matching) pairs (:func:`answer_sequences`: the open-answer score, as
        :func:`steerlab.scoring.ab.score_answers`).
        """
        return self.score_vectors(seqs, [vector], layer_groups, values, unit=unit,
                                  positions=positions)[0]

    def score_vectors(self, seqs: Sequence[ABSequences] | Sequence[AnswerSequence],
                      vectors: Sequence[SteeringVector], layer_groups: Sequence[Sequence[int]],
                      values: Sequence[float], *, unit: Unit = "coefficient",
                      positions: str = "all",
                      on_rows: Callable[[int, int], object] | None = None,
                      ) -> list[dict[tuple[LayerKey, float], ABResult]]:
        """:meth:`score` for several vectors at once, one result dict per vector, in order.

        Each batch's unsteered pass (and its coefficient-0 cells) runs once for all of them;
        only the steered tails run per vector, so k vectors cost far less than k calls.
        Results equal separate :meth:`score` calls (tested). ``on_rows(done, total)`` is
        called after each batch with the (row × cell) readings it scored and the call's total,
        for a caller's own progress bar.

        Example:
            >>> a, b = engine.score_vectors(seqs, [v1, v2], [[14]], [-0.4, 0.4])  # doctest: +SKIP
        """
        rows = self._rows(seqs, list(vectors), layer_groups, values, unit, positions, on_rows)
        if all(isinstance(s, ABSequences) for s in seqs):
            return [{key: ABResult(*(tuple(r[i] for r in cell) for i in range(4)))
                     for key, cell in per_vector.items()} for per_vector in rows]
        return [{key: answer_result([r[0] for r in cell]) for key, cell in per_vector.items()}
                for per_vector in rows]

    def score_rows(self, seqs: Sequence[ABSequences] | Sequence[AnswerSequence],
                   vector: SteeringVector, layer_groups: Sequence[Sequence[int]],
                   values: Sequence[float], *, unit: Unit = "coefficient",
                   positions: str = "all") -> dict[tuple[LayerKey, float],
                                                   list[tuple[float, ...]]]:
        """Per-row raw readings of every cell, in the order of ``seqs``."""
        return self._rows(seqs, [vector], layer_groups, values, unit, positions)[0]

    def _rows(self, seqs: Sequence[ABSequences] | Sequence[AnswerSequence],
              vectors: list[SteeringVector], layer_groups: Sequence[Sequence[int]],
              values: Sequence[float], unit: Unit, positions: str,
              on_rows: Callable[[int, int], object] | None = None,
              ) -> list[dict[tuple[LayerKey, float], list[tuple[float, ...]]]]:
        if not vectors:
            raise SteerlabError("no vectors to score")
        readout = _readout(seqs)
        n_layers = len(self.blocks)
        groups = [tuple(g) for g in layer_groups]
        for group in groups:
            if not group:
                raise SteerlabError("empty layer group in sweep")
            for vector in vectors:
                SteeringSpec.at(vector, list(group), 0.0, unit=unit,
                                positions=positions).resolved_layers(n_layers)
        values = [float(v) for v in values]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].prefix))
        per_cell: list[dict[tuple[LayerKey, float], list[tuple[float, ...]]]] = [
            {(self._key(g), v): [] for g in groups for v in values} for _ in vectors]
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        cells = len(vectors) * len(groups) * sum(v != 0.0 for v in values) + (0.0 in values)
        bar = progress_bar(len(seqs) * cells,
                           f"sweep {len(groups)} layer(s) × {len(values)} value(s)"
                           + (f" × {len(vectors)} vectors" if len(vectors) > 1 else ""),
                           unit="row", enabled=self.progress)
        for batch_index in batches:
            batch_rows = self._score_batch(batch_index, readout, vectors, groups, values, unit,
                                           positions)
            bar.update(len(batch_index) * cells)
            if on_rows is not None:
                on_rows(len(batch_index) * cells, len(seqs) * cells)
            for cell_rows, target in zip(batch_rows, per_cell, strict=True):
                for key, rows in cell_rows.items():
                    pairs = zip(batch_index, rows, strict=True)
                    target[key] += [(float(i), *row) for i, row in pairs]
        bar.close()
        out: list[dict[tuple[LayerKey, float], list[tuple[float, ...]]]] = []
        for cells_of in per_cell:
            ordered: dict[tuple[LayerKey, float], list[tuple[float, ...]]] = {}
            for key, rows in cells_of.items():
                rows.sort(key=lambda r: r[0])
                ordered[key] = [r[1:] for r in rows]
            out.append(ordered)
        return out

    @staticmethod
    def _key(group: tuple[int, ...]) -> LayerKey:
        return group[0] if len(group) == 1 else group

    def _score_batch(self, indices: list[int], readout: ABReadout | AnswerReadout,
                     vectors: list[SteeringVector],
                     groups: list[tuple[int, ...]], values: list[float], unit: Unit,
                     positions: str) -> list[dict[tuple[LayerKey, float], list[Row]]]:
        chunk = [readout.seqs[i] for i in indices]
        batch = left_pad([s.prefix for s in chunk], self.lm.pad_id)
        batch = {k: v.to(self.lm.device) for k, v in batch.items()}
        size = len(chunk)
        mask = batch["attention_mask"]
        real = (mask.cumsum(-1) - 1).clamp_min(0)
        valid = mask.bool()
        instr = torch.tensor([s.instruction_length for s in chunk])
        prompt_lengths = torch.tensor([getattr(s, "prompt_length", len(s.prefix))
                                       for s in chunk])
        keep = readout.keep(indices)

        def read(logits: torch.Tensor, times: int) -> list[Row]:
            return readout.read([i for i in indices for _ in range(times)], logits)

        def start_of(vector: SteeringVector, group: tuple[int, ...]) -> int:
            return min(k + (1 if vector.site == "block_output" else 0) for k in group)

        starts = {start_of(v, g) for v in vectors for g in groups}

        def forward() -> torch.Tensor:
            return steered_logits(self.lm, [s.prefix for s in chunk], keep=keep)

        width = int(mask.shape[1])
        # the suffix must hold every position whose logits are read
        first = min(_first_steered(positions, real, valid, prompt_lengths, instr), width - keep)
        n_blocks = len(self.blocks)
        # block-token evaluations per batch (per coefficient) of the two kinds of reuse
        token_cost = first * n_blocks + (width - first) * n_blocks * len(groups) * len(vectors)
        layer_cost = width * n_blocks + width * sum(
            n_blocks - start_of(v, g) for v in vectors for g in groups)
        if self.token_reuse and first > 0 and token_cost < layer_cost:
            with torch.inference_mode():
                return self._score_suffix(batch, first, size, vectors, groups, values, unit,
                                          positions, prompt_lengths, instr, keep, read)
        with torch.inference_mode():
            if self.prefix_reuse:
                try:
                    base, calls, final = _capture_calls(self.module, self.blocks, self.head,
                                                        starts | {len(self.blocks)}, forward)
                    if not self._verified:
                        self._verify(base, calls, final, starts, keep)
                except UnsupportedArchitecture as exc:
                    self._fall_back(str(exc))
            if not self.prefix_reuse:
                base = forward()
            outs, cells = self._cells(vectors, groups, values, size, unit, positions,
                                      read(base, 1))
            times = sum(v != 0.0 for v in values)
            for out, vector, group, rows in cells:
                plan = compile_terms([], rows, len(self.blocks))
                tracker = PositionTracker(prompt_lengths.repeat_interleave(times).tolist(),
                                          instr.repeat_interleave(times).tolist())
                tracker.set_call(real.repeat_interleave(times, 0),
                                 valid.repeat_interleave(times, 0))
                if self.prefix_reuse:
                    logits = self._tail(start_of(vector, group), calls, final, plan, tracker,
                                        size, times, keep)
                else:
                    logits = steered_logits(
                        self.lm, [s.prefix for s in chunk for _ in range(times)],
                        row_steering=rows,
                        prompt_lengths=prompt_lengths.repeat_interleave(times).tolist(),
                        instruction_lengths=instr.repeat_interleave(times).tolist(), keep=keep)
                self._store(out, group, values, read(logits, times))
        return outs

    def _score_suffix(self, batch: dict[str, torch.Tensor], first: int, size: int,
                      vectors: list[SteeringVector], groups: list[tuple[int, ...]],
                      values: list[float], unit: Unit, positions: str, lengths: torch.Tensor,
                      instr: torch.Tensor, keep: int, read: _Read,
                      ) -> list[dict[tuple[LayerKey, float], list[Row]]]:
        """Token-prefix reuse: tokens before ``first`` (padded index) run once, cached."""
        head = {k: v[:, :first] for k, v in batch.items()}
        cache = returned_cache(self.module(**head, use_cache=True))

        def suffix(rows: list[list[SteeringSpec]] | None, times: int) -> torch.Tensor:
            forked = fork_cache(cache, times)
            tail = {k: (v if k == "attention_mask" else v[:, first:]).repeat_interleave(times, 0)
                    for k, v in batch.items()}
            with steer(self.lm, None, row_specs=rows,
                       prompt_lengths=lengths.repeat_interleave(times).tolist(),
                       instruction_lengths=instr.repeat_interleave(times).tolist()):
                result = self.module(**tail, **{cache_kwarg(self.module): forked}, use_cache=True,
                                     logits_to_keep=keep)
            return result.logits[:, -keep:].float()

        zero = read(suffix(None, 1), 1) if 0.0 in values else []
        times = sum(v != 0.0 for v in values)
        outs, cells = self._cells(vectors, groups, values, size, unit, positions, zero)
        for out, _vector, group, rows in cells:
            self._store(out, group, values, read(suffix(rows, times), times))
        return outs

    def _cells(self, vectors: list[SteeringVector], groups: list[tuple[int, ...]],
               values: list[float], size: int, unit: Unit, positions: str, zero: list[Row]
               ) -> tuple[list[dict[tuple[LayerKey, float], list[Row]]],
                          list[tuple[dict[tuple[LayerKey, float], list[Row]], SteeringVector,
                                     tuple[int, ...], list[list[SteeringSpec]]]]]:
        """One result dict per vector (its 0 cells already ``zero``) and the steered cells
        still to run: (its dict, vector, layer group, per-row specs, each item once per
        non-zero value)."""
        nonzero = [v for v in values if v != 0.0]
        outs: list[dict[tuple[LayerKey, float], list[Row]]] = [{} for _ in vectors]
        cells = []
        for out, vector in zip(outs, vectors, strict=True):
            for group in groups:
                if 0.0 in values:
                    out[(self._key(group), 0.0)] = zero
                if nonzero:
                    rows = [[SteeringSpec.at(vector, list(group), v, unit=unit,
                                             positions=positions)]
                            for _ in range(size) for v in nonzero]
                    cells.append((out, vector, group, rows))
        return outs, cells

    def _store(self, out: dict[tuple[LayerKey, float], list[Row]], group: tuple[int, ...],
               values: list[float], scored: list[Row]) -> None:
        """Split rows read item-major, value-minor back into one list per value."""
        nonzero = [v for v in values if v != 0.0]
        for j, v in enumerate(nonzero):
            out[(self._key(group), v)] = scored[j::len(nonzero)]

    def _tail(self, start: int, calls: dict[int, BlockCall], final: torch.Tensor,
              plan: Plan, tracker: PositionTracker, size: int,
              times: int, keep: int) -> torch.Tensor:
        n = len(self.blocks)
        source = block_input(calls[start]) if start < n else final
        hidden = source.repeat_interleave(times, dim=0)
        if ("block_output", start - 1) in plan:
            hidden = apply_terms(hidden, plan[("block_output", start - 1)], tracker)
        for index in range(start, n):
            call = calls[index]
            call = BlockCall(_expand(call.args, size, times), _expand(call.kwargs, size, times))
            if ("block_input", index) in plan:
                hidden = apply_terms(hidden, plan[("block_input", index)], tracker)
            hidden = run_block(self.blocks[index], call, hidden)
            if ("block_output", index) in plan:
                hidden = apply_terms(hidden, plan[("block_output", index)], tracker)
        return self.head(hidden[:, -keep:])

    def _verify(self, base: torch.Tensor, calls: dict[int, BlockCall], final: torch.Tensor,
                starts: set[int], keep: int) -> None:
        """Replay the tail unsteered once and compare with the model's own logits."""
        empty = PositionTracker()
        replay = self._tail(min(starts), calls, final, {}, empty, base.shape[0], 1, keep)
        if not torch.allclose(replay, base, atol=1e-4, rtol=1e-4):
            delta = float((replay - base).abs().max())
            raise UnsupportedArchitecture(f"tail replay differs from the model's logits by "
                                          f"{delta:.2e}")
        self._verified = True

    def _fall_back(self, reason: str) -> None:
        warnings.warn(f"sweep engine: prefix reuse disabled for this model ({reason}); "
                      "using whole forwards with per-row specs", stacklevel=3)
        self.prefix_reuse = False


def _first_steered(positions: str, real: torch.Tensor, valid: torch.Tensor,
                   lengths: torch.Tensor, instr: torch.Tensor) -> int:
    """Padded index of the first column any row steers (every earlier column is untouched)."""
    tracker = PositionTracker(lengths.tolist(), instr.tolist())
    tracker.set_call(real, valid)
    steered = tracker.mask(positions).any(dim=0)
    hits = steered.nonzero()
    return int(hits[0]) if len(hits) else int(steered.shape[0])


def _readout(seqs: Sequence[ABSequences] | Sequence[AnswerSequence]
             ) -> ABReadout | AnswerReadout:
    """A/B letters for :class:`ABSequences`, whole answers for :class:`AnswerSequence`."""
    if seqs and all(isinstance(x, ABSequences) for x in seqs):
        return ABReadout(seqs)  # type: ignore[arg-type]
    if seqs and all(isinstance(x, AnswerSequence) for x in seqs):
        if len(seqs) % 2:
            raise SteerlabError("whole answers come in (matching, not matching) pairs")
        return AnswerReadout(seqs)  # type: ignore[arg-type]
    raise SteerlabError("a sweep needs all A/B items or all whole answers (not a mix, not none)")


def _groups(layers: Sequence[int | Sequence[int]]) -> list[tuple[int, ...]]:
    return [tuple(x) if isinstance(x, Sequence) else (int(x),) for x in layers]


def sweep_ab(model: LoadedModel | Any, data: Dataset | Sequence[ABItem],
             vector: SteeringVector, layers: Sequence[int | Sequence[int]],
             values: Sequence[float], *, unit: Unit = "coefficient", positions: str = "all",
             batch_size: int = 16, system: str | None = None,
             progress: bool = False) -> dict[tuple[LayerKey, float], ABResult]:
    """CAA behaviour score for every layer (or layer group) × value, by the sweep engine.

    Example:
        >>> res = sweep_ab(lm, val, vec, layers=[10, 12], values=[-1, 0, 1])  # doctest: +SKIP
        >>> res[(12, 1.0)].mean                                              # doctest: +SKIP
        0.58
    """
    lm = as_loaded(model)
    seqs = [ab_sequences(lm.tokenizer, item, system=system) for item in ab_items(data, "sweep_ab")]
    engine = SweepEngine(lm, batch_size=batch_size, progress=progress)
    return engine.score(seqs, vector, _groups(layers), values, unit=unit, positions=positions)


def sweep_answers(model: LoadedModel | Any, data: Dataset | Sequence[ABItem],
                  vector: SteeringVector, layers: Sequence[int | Sequence[int]],
                  values: Sequence[float], *, unit: Unit = "coefficient",
                  positions: str = "all", batch_size: int = 8, system: str | None = None,
                  progress: bool = False) -> dict[tuple[LayerKey, float], ABResult]:
    """Open-answer score (whole replies, :func:`steerlab.scoring.ab.score_answers`) for every
    layer × value, by the sweep engine.

    Example:
        >>> items = load_dataset("caa:refusal", split="val").open_answers()   # doctest: +SKIP
        >>> res = sweep_answers(lm, items, vec, [10, 14], [-0.4, 0, 0.4],   # doctest: +SKIP
        ...                     unit="strength")
    """
    lm = as_loaded(model)
    seqs = [seq for item in ab_items(data, "sweep_answers")
            for seq in answer_sequences(lm.tokenizer, item, system=system)]
    engine = SweepEngine(lm, batch_size=batch_size, progress=progress)
    return engine.score(seqs, vector, _groups(layers), values, unit=unit, positions=positions)


def score_values(model: LoadedModel | Any, data: Dataset | Sequence[ABItem],
                 vector: SteeringVector, layers: Sequence[int | float | str] | str | int,
                 values: Sequence[float], *, unit: Unit = "coefficient", positions: str = "all",
                 batch_size: int = 16, system: str | None = None,
                 progress: bool = False) -> dict[float, ABResult]:
    """Behaviour score at several values of one layer (group): coefficients, or strengths with
    ``unit="strength"``.

    One layer group of :func:`sweep_ab`: the unsteered prefix runs once and every value rides
    in one forward as a per-row spec; results equal separate runs (tested).

    Example:
        >>> res = score_values(lm, test, vec, [12], [-0.4, 0, 0.4],          # doctest: +SKIP
        ...                    unit="strength")
        >>> {c: round(r.mean, 2) for c, r in res.items()}                    # doctest: +SKIP
    """
    lm = as_loaded(model)
    group = tuple(SteeringSpec(vector, layers=layers).resolved_layers(lm.n_layers))
    results = sweep_ab(lm, data, vector, [group], values, unit=unit, positions=positions,
                       batch_size=batch_size, system=system, progress=progress)
    key = SweepEngine._key(group)
    return {float(v): results[(key, float(v))] for v in values}


def score_coefficients(*args: Any, **kwargs: Any) -> dict[float, ABResult]:
    """Deprecated name of :func:`score_values` (it takes strengths too); warns and calls it."""
    import warnings

    warnings.warn("score_coefficients is renamed score_values (it takes strengths too)",
                  DeprecationWarning, stacklevel=2)
    return score_values(*args, **kwargs)
