"""The steered forwards of a suffix search: many suffixes, one shared prompt prefix.

:class:`SuffixRunner` scores candidate suffixes of one :class:`~steerlab.attack.objectives.
Objective` (objective value and suffix cross-entropy) and takes the token gradient of
``−objective + X·xent`` w.r.t. the suffix's one-hot. Everything runs inside ``steer(...)`` with
the caller's steering (none for the unsteered reference), with each row's prompt and
instruction lengths given, so ``prompt`` / ``after_instruction`` positions mean the same as in
steerlab's scorers.

The prefix before the suffix is the same for every candidate: it runs once (steered, no
gradient) into a KV cache, and each batch of candidates continues a deep copy of it repeated
to the batch size (``DynamicCache.batch_repeat_interleave``), so the shared cache is never
written to. :meth:`SuffixRunner.score_children` goes further for single-token swaps of one
parent: sorted by the position they change, children run in bands that continue the parent's
own cache after the suffix tokens the band shares with it (a swap at position p leaves tokens
0…p−1 and their keys and values as they were), so on average about half of the suffix is not
run again. ``use_prefix_cache=False`` runs whole sequences instead (the reference path; the
two agree to float rounding, tested). Only the logits that are read are computed (the suffix
positions for ``xent`` and the trailing positions the objective reads), in batches sized so
those fp32 logits stay under :data:`LOGIT_BUDGET` bytes.

Example:
    >>> from steerlab.data import ABItem
    >>> from steerlab.attack.objectives import ab_flip
    >>> from steerlab.model.load import as_loaded
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
    >>> lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    >>> runner = SuffixRunner(lm, ab_flip(lm, ABItem("Q?\\n(A) Yes\\n(B) No", "(A)", "(B)")))
    >>> obj, xent = runner.score(torch.tensor([[300, 301, 302]]))
    >>> obj.shape, xent.shape
    (torch.Size([1]), torch.Size([1]))
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from steerlab.attack.fluency import suffix_xent
from steerlab.attack.objectives import Objective
from steerlab.errors import SteerlabError
from steerlab.model.arch import (
    cache_kwarg,
    find_blocks,
    fork_cache,
    returned_cache,
    split_block_output,
)
from steerlab.model.load import LoadedModel
from steerlab.steering.hooks import steer
from steerlab.steering.spec import Steering, as_specs

#: Bytes of fp32 logits one candidate batch may hold (sets the automatic batch size).
LOGIT_BUDGET = 1 << 28
#: Fewest rows per band when children continue their parent's cache (see score_children).
MIN_BAND_ROWS = 16


@dataclass
class _State:
    """A cache after ``start`` suffix tokens, the logits predicting the next suffix token, and
    the summed NLL of the first ``start`` suffix tokens."""

    start: int
    cache: Any
    next_logits: torch.Tensor
    nll_before: torch.Tensor


class SuffixRunner:
    """Scores and token gradients of suffixes for one objective under one steering.

    ``steering``: what ``steer()`` takes (a :class:`~steerlab.steering.spec.SteeringSpec` or a
    list of them; None = unsteered). ``batch_size``: rows per candidate forward (default: as
    many as :data:`LOGIT_BUDGET` allows).
    """

    def __init__(self, lm: LoadedModel, objective: Objective, steering: Steering = None, *,
                 use_prefix_cache: bool = True, batch_size: int | None = None):
        if not isinstance(lm, LoadedModel):
            raise SteerlabError(f"expected a LoadedModel, got {type(lm).__name__} "
                                "(wrap a bare model with steerlab.model.load.as_loaded)")
        self.lm, self.objective = lm, objective
        self.model = lm.model
        self.specs = as_specs(steering)
        self.use_prefix_cache = use_prefix_cache
        self.batch_size = batch_size
        prompt = objective.prompt
        self.before = torch.tensor(prompt.before, dtype=torch.long)
        self.rest = torch.tensor([*prompt.after, *prompt.target[:-1]], dtype=torch.long)
        self.embedding = self.model.get_input_embeddings()
        self.rows = int(self.embedding.weight.shape[0])  # type: ignore[index]
        self.cache_kw = cache_kwarg(self.model)
        names = _forward_names(self.model)
        self.keep_kw = "logits_to_keep" in names
        if not prompt.before:
            raise SteerlabError("the prompt before the suffix is empty")
        self._prefix: dict[int, tuple[Any, torch.Tensor]] = {}
        self._embed_scale: float | torch.Tensor | None = None
        n_layers = len(find_blocks(self.model)[1])
        read = objective.read_layer
        if read is not None:
            if not 0 <= read < n_layers:
                raise SteerlabError(f"read layer {read} out of range: model has {n_layers} layers")
            steered = [k for s in self.specs for k in s.resolved_layers(n_layers)]
            if steered and read <= max(steered):
                raise SteerlabError(f"projection read at layer {read} must lie above the steered "
                                    f"layer(s) {sorted(set(steered))}: at the steered layer the "
                                    "added vector dominates")

    # ---- the steering context ------------------------------------------------------------
    def _context(self, length: int) -> contextlib.AbstractContextManager[Any]:
        prompt = self.objective.prompt
        return steer(self.model, self.specs, prompt_lengths=[prompt.prompt_length(length)],
                     instruction_lengths=[prompt.instruction_length(length)])

    @contextlib.contextmanager
    def _reading(self) -> Iterator[list[torch.Tensor]]:
        """Capture the residual at the objective's read layer, last position (steered)."""
        layer = self.objective.read_layer
        found: list[torch.Tensor] = []
        if layer is None:
            yield found
            return
        block = find_blocks(self.model)[1][layer]
        if self.objective.read_site == "block_input":
            def pre(_m: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
                hidden = args[0] if args else kw["hidden_states"]
                found.append(hidden[:, -1])
            handle = block.register_forward_pre_hook(pre, with_kwargs=True)
        else:
            def post(_m: Any, _args: Any, output: Any) -> None:
                found.append(split_block_output(output)[0][:, -1])
            handle = block.register_forward_hook(post)
        try:
            yield found
        finally:
            handle.remove()

    # ---- the shared prefix ---------------------------------------------------------------
    def _prefix_state(self, length: int) -> tuple[Any, torch.Tensor]:
        """KV cache of ``before`` and its last position's logits (steered, no gradient).

        Kept per suffix length: the prompt and instruction lengths the steering positions are
        computed from depend on it."""
        if length not in self._prefix:
            ids = self.before[None].to(self.lm.device)
            kw: dict[str, Any] = {"use_cache": True}
            if self.keep_kw:
                kw["logits_to_keep"] = 1
            with torch.no_grad(), self._context(length):
                out = self.model(input_ids=ids, **kw)
            cache = returned_cache(out)
            if cache is None or not callable(getattr(cache, "batch_repeat_interleave", None)):
                raise SteerlabError("this model returns no KV cache that can be shared across "
                                    "candidates; use use_prefix_cache=False")
            self._prefix[length] = (cache, out.logits[0, -1].float().detach())
        return self._prefix[length]

    # ---- one forward ---------------------------------------------------------------------
    def _embed_factor(self) -> float | torch.Tensor:
        """What the input embedding multiplies a table row by (Gemma scales by √d)."""
        if self._embed_scale is None:
            probe = torch.arange(min(4, self.rows), device=self.lm.device)[None]
            with torch.no_grad():
                looked_up = self.embedding(probe)
                raw = self.embedding.weight[probe]  # type: ignore[index]
            scale = getattr(self.embedding, "embed_scale", None)
            factor: float | torch.Tensor = 1.0 if scale is None else scale
            if not torch.allclose(looked_up, raw * factor, rtol=1e-4, atol=1e-6):
                raise SteerlabError("the input embedding is not a table lookup (times a scale); "
                                    "cannot take token gradients")
            self._embed_scale = factor
        return self._embed_scale

    def _forward(self, suffix: torch.Tensor, one_hot: torch.Tensor | None,
                 state: _State | None = None, *, xent: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective and xent ``[B]`` of suffix ids ``[B, L]`` (one-hot: differentiably).

        ``state``: resume from a parent suffix's cache after its first ``state.start`` tokens,
        which these rows share (only the rest of each row runs). ``xent=False``: no logits at
        the suffix positions (xent comes back NaN), for searches whose selection ignores it."""
        batch, length = int(suffix.shape[0]), int(suffix.shape[1])
        device = self.lm.device
        n_read = self.objective.n_logits
        rest = self.rest.to(device)
        kw: dict[str, Any] = {}
        first: torch.Tensor | None = None
        if self.use_prefix_cache:
            if state is None:
                cache, last = self._prefix_state(length)
                state = _State(0, cache, last, torch.zeros(()))
            fresh = fork_cache(state.cache, batch)
            kw[self.cache_kw], kw["use_cache"] = fresh, True
            first, begin, offset = state.next_logits, state.start, 0
        else:
            begin, offset = 0, len(self.before)
            kw["use_cache"] = False
        tail = length - begin  # suffix tokens this forward runs
        seq_len = offset + tail + len(rest)
        xent_pos = list(range(offset - 1 if first is None else 0, offset + tail - 1)) \
            if xent else []
        read_pos = list(range(seq_len - n_read, seq_len))
        keep = xent_pos + read_pos
        if one_hot is None:
            ids = torch.cat([suffix[:, begin:].to(device), rest.expand(batch, -1)], dim=1)
            if not self.use_prefix_cache:
                ids = torch.cat([self.before.to(device).expand(batch, -1), ids], dim=1)
            kw["input_ids"] = ids
        else:
            if begin:
                raise SteerlabError("token gradients always run the whole suffix")
            table = self.embedding.weight
            parts = [(one_hot @ table) * self._embed_factor(),  # type: ignore[operator]
                     self.embedding(rest)[None].expand(batch, -1, -1)]
            if not self.use_prefix_cache:
                parts.insert(0, self.embedding(self.before.to(device))[None]
                             .expand(batch, -1, -1))
            kw["inputs_embeds"] = torch.cat(parts, dim=1)
        index = torch.tensor(keep, dtype=torch.long, device=device)
        if self.keep_kw:
            kw["logits_to_keep"] = index if keep else 1
        with self._context(length), self._reading() as hidden:
            out = self.model(**kw)
        logits = out.logits if self.keep_kw else out.logits[:, index]
        if not keep:
            logits = logits[:, :0]
        read_logits = logits[:, len(xent_pos):] if n_read else None
        value = self.objective.value(read_logits, hidden[-1] if hidden else None)
        if not xent:
            return value.float(), torch.full((batch,), math.nan, device=value.device)
        xent_logits = logits[:, : len(xent_pos)]
        if first is not None and tail:
            xent_logits = torch.cat([first.to(logits.dtype).expand(batch, 1, -1), xent_logits],
                                    dim=1)
        target = one_hot if one_hot is not None else suffix[:, begin:].to(device)
        nll = suffix_xent(xent_logits, target)
        if state is not None and begin:  # the shared tokens' cross-entropy: the parent's
            nll = (nll * tail + state.nll_before.to(nll.device)) / length
        return value.float(), nll.float()

    def _parent_states(self, parent: torch.Tensor, starts: list[int]) -> dict[int, _State]:
        """The parent suffix's cache after each of ``starts`` of its tokens, with the logits
        predicting the next token and the summed NLL so far: one forward over the parent and a
        cropped copy per start, or (caches that cannot be cropped back, e.g. sliding windows)
        one pass in segments."""
        length = int(parent.shape[0])
        cache, first = self._prefix_state(length)
        cache = fork_cache(cache)
        device = self.lm.device
        ids = parent.to(device)
        states: dict[int, _State] = {}
        wanted = sorted(set(starts))
        if len(wanted) > 1 and getattr(cache, "is_croppable", False) and \
                not any(getattr(cache, "is_sliding", [True])):
            # one forward over the whole parent, then a cropped copy per start
            full_kw: dict[str, Any] = {self.cache_kw: cache, "use_cache": True}
            if self.keep_kw:
                full_kw["logits_to_keep"] = length
            with self._context(length):
                out = self.model(input_ids=ids[None], **full_kw)
            seg = out.logits[0, -length:].float()
            pred = torch.cat([first[None].to(seg), seg[:-1]])
            nll = torch.nn.functional.cross_entropy(pred, ids, reduction="none").cumsum(0)
            for start in wanted:
                snapshot = fork_cache(cache)
                if length - start:
                    snapshot.crop(-(length - start))
                before = nll[start - 1] if start else torch.zeros((), device=device)
                states[start] = _State(start, snapshot, pred[start], before.clone())
            return states
        pos, nll_sum = 0, torch.zeros((), device=device)
        for start in wanted:
            if start > pos:
                kw: dict[str, Any] = {self.cache_kw: cache, "use_cache": True}
                if self.keep_kw:
                    kw["logits_to_keep"] = start - pos
                with self._context(length):
                    out = self.model(input_ids=ids[None, pos:start], **kw)
                seg = out.logits[0, -(start - pos):].float()
                pred = torch.cat([first[None].to(seg), seg[:-1]])
                nll_sum = nll_sum + torch.nn.functional.cross_entropy(pred, ids[pos:start],
                                                                      reduction="sum")
                first, pos = seg[-1], start
            states[start] = _State(start, fork_cache(cache), first, nll_sum.clone())
        return states

    # ---- public ----------------------------------------------------------------------------
    def chunk_rows(self, length: int) -> int:
        """Rows per candidate forward for suffixes of ``length``."""
        if self.batch_size is not None:
            return max(1, int(self.batch_size))
        positions = max(1, length + self.objective.n_logits)
        return max(1, LOGIT_BUDGET // (positions * self.rows * 4))

    def score(self, suffixes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective and xent (cpu float ``[B]``) of suffix ids ``[B, L]``, no gradient."""
        return self._score(suffixes)

    def _score(self, suffixes: torch.Tensor, *, xent: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if suffixes.ndim != 2:
            raise SteerlabError("suffixes must be a [batch, length] tensor of token ids")
        values, xents = [], []
        step = self.chunk_rows(int(suffixes.shape[1]))
        with torch.no_grad():
            for start in range(0, int(suffixes.shape[0]), step):
                value, nll = self._forward(suffixes[start:start + step], None, xent=xent)
                values.append(value.cpu())
                xents.append(nll.cpu())
        if not values:
            return torch.zeros(0), torch.zeros(0)
        return torch.cat(values), torch.cat(xents)

    def score_children(self, parent: torch.Tensor, children: torch.Tensor, *,
                       xent: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`score` of ``children`` ``[n, L]`` that share leading tokens with ``parent``
        ``[L]`` (single-token swaps): rows are sorted by their first changed position and run in
        bands, each continuing the parent's cache after the tokens its rows all share. The
        numbers equal :meth:`score`'s (to float rounding; tested); without the prefix cache
        this is :meth:`score`. ``xent=False`` skips the suffix positions' logits (GCG's
        selection never reads them; xent comes back NaN).
        """
        n, length = int(children.shape[0]), int(children.shape[1])
        if not self.use_prefix_cache or n == 0 or length < 2:
            return self._score(children, xent=xent)
        changed = children != parent[None]
        first_diff = torch.where(changed.any(1), changed.int().argmax(1),
                                 torch.full((n,), length - 1))
        order = torch.argsort(first_diff, stable=True)
        rows = min(self.chunk_rows(length), max(MIN_BAND_ROWS, -(-n // length)))
        bands = [order[i:i + rows] for i in range(0, n, rows)]
        starts = [int(first_diff[band[0]]) for band in bands]
        values, xents = torch.zeros(n), torch.zeros(n)
        with torch.no_grad():
            states = self._parent_states(parent, starts)
            for band, start in zip(bands, starts, strict=True):
                value, nll = self._forward(children[band], None, states[start], xent=xent)
                values[band], xents[band] = value.cpu(), nll.cpu()
        return values, xents

    def gradient(self, suffixes: torch.Tensor, penalties: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token gradient ``[B, L, rows]`` (cpu float) of ``−objective + X·xent`` per row w.r.t.
        the suffix one-hot, with the objective and xent at the suffixes (``X = penalties``; when
        every X is 0 the xent term is not computed and comes back NaN)."""
        device = self.lm.device
        dtype = self.embedding.weight.dtype
        assert isinstance(dtype, torch.dtype)
        one_hot = torch.zeros(*suffixes.shape, self.rows, dtype=dtype, device=device)
        one_hot.scatter_(2, suffixes.to(device)[..., None], 1.0)
        one_hot.requires_grad_(True)
        with torch.enable_grad():
            fluent = bool((penalties != 0).any())
            value, xent = self._forward(suffixes, one_hot, xent=fluent)
            loss = -value.sum()
            if fluent:
                loss = loss + (penalties.to(device, value.dtype) * xent).sum()
            (grad,) = torch.autograd.grad(loss, one_hot)
        return grad.float().cpu(), value.detach().cpu(), xent.detach().cpu()


def _forward_names(model: Any) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()
