"""Apply steering vectors with forward hooks: ``steer()`` (a context manager) and ``attach()``.

Every model that is being steered gets one set of *dispatcher* hooks, shared by all steering
on it: a pre-hook on the module that owns the decoder blocks (it hands each call's attention
mask and KV-cache offset to the active position trackers) and one hook per steered block. The
hooks keep nothing on the model; what is active lives in a :class:`contextvars.ContextVar`, so
each thread (and each asyncio task) sees only the steering it entered itself. Two threads may
steer the same model at once, with different vectors or none, and each gets exactly what it
would get alone (tested with real threads). ``attach(..., scope="global")`` makes steering
visible to every thread instead (the persistent repeng-style attach). When the last steering
on a model ends, its hooks are removed and the model is bit-identical to before.

Positions come from absolute real-token indices and each row's prompt length, so they are the
same with the KV cache on or off, with left or right padding, batched or alone. Global specs
apply before a row's ``row_specs``, each list in order; nested contexts apply outer first.

Example:
    >>> import torch
    >>> from steerlab.testing.tiny import tiny_model
    >>> from steerlab.vector import SteeringVector
    >>> model = tiny_model("llama")
    >>> vec = SteeringVector.from_directions({1: torch.ones(64)})
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> with steer(model, vec, coefficient=2.0):
    ...     steered = model(ids).logits
    >>> bool((steered != model(ids).logits).any())
    True
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.model.arch import (
    CACHE_KWARGS,
    STATE_KWARGS,
    cache_offset,
    count_cache,
    find_blocks,
    join_block_output,
    model_width,
    split_block_output,
)
from steerlab.model.load import LoadedModel
from steerlab.steering.plan import (
    Gate,
    Plan,
    PositionTracker,
    apply_terms,
    compile_terms,
    select_rows,
)
from steerlab.steering.spec import Condition, Steering, SteeringSpec, as_specs, check_spec
from steerlab.util.parse import LayerSpec
from steerlab.util.vocabulary import Operator, Scope, Site, parse_scope
from steerlab.vector import SteeringVector


@dataclass(eq=False)
class _Active:
    """One active steering: its compiled plan and position tracker."""

    dispatcher: _Dispatcher
    plan: Plan
    tracker: PositionTracker
    rows: int | None  # batch size the per-row specs were made for (None: any)


_REGISTRY: weakref.WeakKeyDictionary[nn.Module, _Dispatcher] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()

#: What the current thread / task has entered (outermost first).
_ACTIVE: contextvars.ContextVar[tuple[_Active, ...]] = contextvars.ContextVar(
    "steerlab_active_steering", default=())

#: The input ids and 2-D attention mask of the model call in progress (this thread / task),
#: for blocks' parents that receive something else: a dict of masks per layer type (Gemma 3
#: multimodal), an extended 4-D mask (BERT-style encoders), embeddings instead of ids.
_OUTER_CALL: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar(
    "steerlab_outer_call", default=None)


class _Handles:
    """Several hook handles removed as one."""

    def __init__(self, *handles: torch.utils.hooks.RemovableHandle):
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _remember_call(_module: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    ids = kw.get("input_ids")
    if ids is None and args and isinstance(args[0], torch.Tensor) and \
            not torch.is_floating_point(args[0]):
        ids = args[0]
    mask = kw.get("attention_mask")
    if not (isinstance(mask, torch.Tensor) and mask.ndim == 2):
        mask = None
    _OUTER_CALL.set((ids if isinstance(ids, torch.Tensor) else None, mask))


def _forget_call(_module: nn.Module, _args: Any, _output: Any) -> None:
    _OUTER_CALL.set(None)


#: (tokens cached before, new tokens) of the blocks' parent call in progress.
_CALL_SPAN: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "steerlab_call_span", default=None)


def _count_caches(_module: nn.Module, _args: Any, kw: dict[str, Any], output: Any) -> None:
    """After a steered call: remember how many tokens each cache passed in or returned now
    holds, for caches that cannot count (state-space, RWKV), so the next call's positions are
    known (:func:`~steerlab.model.arch.cache_offset`)."""
    span = _CALL_SPAN.get()
    if span is None:
        return
    _CALL_SPAN.set(None)
    names = (*CACHE_KWARGS, *STATE_KWARGS)
    returned = ([output[k] for k in output if k in names]
                if hasattr(output, "keys") else [])
    for cache in [*(kw.get(k) for k in names), *returned]:
        if cache is not None:
            count_cache(cache, span[0] + span[1])


class _Dispatcher:
    """The hooks of one model, shared by every steering on it in any thread.

    Held in a registry keyed weakly by the model (nothing is stored on the model itself); the
    dispatcher keeps only a weak reference to it, so a model that goes away takes its
    dispatcher with it.
    """

    def __init__(self, module: nn.Module):
        self._module = weakref.ref(module)
        self.lock = threading.Lock()
        self.users: Counter[tuple[Site, int] | None] = Counter()
        self.handles: dict[tuple[Site, int] | None,
                           torch.utils.hooks.RemovableHandle | _Handles] = {}
        self.global_active: tuple[_Active, ...] = ()

    @classmethod
    def of(cls, module: nn.Module) -> _Dispatcher:
        with _REGISTRY_LOCK:
            found = _REGISTRY.get(module)
            if found is None:
                found = _REGISTRY[module] = cls(module)
            return found

    # ---- which steering applies to the current call ---------------------------------------
    def entries(self) -> list[_Active]:
        mine = [a for a in _ACTIVE.get() if a.dispatcher is self]
        return [*self.global_active, *mine]

    # ---- hook lifetime --------------------------------------------------------------------
    def acquire(self, keys: Sequence[tuple[Site, int]]) -> None:
        with self.lock:
            taken: list[tuple[Site, int] | None] = []
            try:
                for key in [None, *keys]:
                    if self.users[key] == 0:
                        self.handles[key] = self._register(key)
                    self.users[key] += 1
                    taken.append(key)
            except BaseException:
                self._release_locked(taken)
                raise

    def release(self, keys: Sequence[tuple[Site, int]]) -> None:
        with self.lock:
            self._release_locked([None, *keys])

    def _release_locked(self, keys: Sequence[tuple[Site, int] | None]) -> None:
        for key in keys:
            if self.users[key] <= 0:
                continue
            self.users[key] -= 1
            if self.users[key] == 0:
                del self.users[key]
                self.handles.pop(key).remove()

    def _register(self, key: tuple[Site, int] | None
                  ) -> torch.utils.hooks.RemovableHandle | _Handles:
        module = self._module()
        if module is None:
            raise SteerlabError("the model being steered no longer exists")
        path, blocks = find_blocks(module)
        if key is None:
            parent = module.get_submodule(path.rsplit(".", 1)[0]) if "." in path else module
            observe = (parent.register_forward_pre_hook(self._observe, with_kwargs=True),
                       parent.register_forward_hook(_count_caches, with_kwargs=True))
            if parent is module:
                return _Handles(*observe)
            return _Handles(*observe,
                            module.register_forward_pre_hook(_remember_call, with_kwargs=True),
                            module.register_forward_hook(_forget_call, always_call=True))
        site, layer = key
        block = blocks[layer]
        if site == "block_output":
            # prepend: run before any hook registered earlier (transformers records
            # output_hidden_states with a forward hook on each block), so hidden_states[k+1]
            # is the steered output h + v whichever hook came first
            return block.register_forward_hook(self._output_hook(key), prepend=True)
        return block.register_forward_pre_hook(self._input_hook(key), with_kwargs=True)

    # ---- the hooks ------------------------------------------------------------------------
    def _observe(self, _module: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        entries = self.entries()
        if not entries:
            return
        input_ids = kw.get("input_ids")
        if input_ids is None and args and isinstance(args[0], torch.Tensor):
            input_ids = args[0]
        embeds = kw.get("inputs_embeds")
        if embeds is None:  # a parent that takes the embedded hidden states (BERT's encoder)
            embeds = kw.get("hidden_states")
        source = input_ids if input_ids is not None else embeds
        if source is None:
            return
        batch, length = int(source.shape[0]), int(source.shape[1])
        mask = kw.get("attention_mask")
        outer_ids, outer_mask = _OUTER_CALL.get() or (None, None)
        if not (isinstance(mask, torch.Tensor) and mask.ndim == 2):
            # the parent got a dict / 4-D mask: the model call's own 2-D mask, if it fits
            fits = outer_mask is not None and outer_mask.shape[0] == batch and \
                outer_mask.shape[1] >= length
            mask = outer_mask if fits else None
        if input_ids is None or torch.is_floating_point(input_ids):
            fits = outer_ids is not None and tuple(outer_ids.shape[:2]) == (batch, length)
            input_ids = outer_ids if fits else None
        past = cache_offset(kw, length, mask)
        _CALL_SPAN.set((past, length))
        for entry in entries:
            if entry.rows is not None and batch != entry.rows:
                raise SteerlabError(f"per-row steering was given {entry.rows} rows but the "
                                    f"batch has {batch}")
            entry.tracker.observe(input_ids, mask, past, batch, length, source.device)

    def _steered(self, key: tuple[Site, int], hidden: torch.Tensor) -> torch.Tensor | None:
        out = None
        for entry in self.entries():
            terms = entry.plan.get(key)
            if terms:
                out = apply_terms(hidden if out is None else out, terms, entry.tracker)
        return out

    def _output_hook(self, key: tuple[Site, int]) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            hidden, rest = split_block_output(output)
            _check_hidden(hidden, key)
            steered = self._steered(key, hidden)
            return None if steered is None else join_block_output(steered, rest)
        return hook

    def _input_hook(self, key: tuple[Site, int]) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            hidden = args[0] if args else kw.get("hidden_states")
            if not isinstance(hidden, torch.Tensor):
                return None
            _check_hidden(hidden, key)
            steered = self._steered(key, hidden)
            if steered is None:
                return None
            if args:
                return (steered, *args[1:]), kw
            return args, {**kw, "hidden_states": steered}
        return hook


def _check_hidden(hidden: torch.Tensor, key: tuple[Site, int]) -> None:
    if hidden.ndim != 3:
        raise SteerlabError(f"cannot steer {key[0]} {key[1]}: its hidden states have shape "
                            f"{list(hidden.shape)}, not [batch, tokens, width]")


class SteeringHandle:
    """An active steering (from :func:`attach`); ``remove()`` ends it (idempotent).

    ``tracker`` is the position tracker of this steering (what the last call looked like).
    """

    def __init__(self, entry: _Active | None, keys: list[tuple[Site, int]], scope: Scope,
                 tracker: PositionTracker):
        self._entry = entry
        self._keys = keys
        self._scope = scope
        self.tracker = tracker

    @property
    def active(self) -> bool:
        """Whether this steering is still applied."""
        return self._entry is not None

    def select_rows(self, index: Sequence[int]) -> None:
        """Keep batch rows ``index`` of a per-row steering (the others left the batch): their
        operands, gates and prompt lengths follow them, nothing is recompiled."""
        entry = self._entry
        if entry is None:
            return
        rows = torch.tensor(list(index), dtype=torch.long)
        select_rows(entry.plan, rows)
        entry.tracker.select(rows)
        if entry.rows is not None:
            entry.rows = len(rows)

    def gates(self) -> list[Gate]:
        """This steering's conditions with their per-row similarity (``scores``) and decision
        (``values``, ``True`` = steered) on the last prompt."""
        if self._entry is None:
            return []
        return [t.gate for terms in self._entry.plan.values() for t in terms
                if t.gate is not None and t.operator == "gate"]

    def remove(self) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        dispatcher = entry.dispatcher
        if self._scope == "global":
            with dispatcher.lock:
                dispatcher.global_active = tuple(a for a in dispatcher.global_active
                                                 if a is not entry)
        else:
            _ACTIVE.set(tuple(a for a in _ACTIVE.get() if a is not entry))
        dispatcher.release(self._keys)


def attach(model: LoadedModel | nn.Module, spec: Steering = None, *,
           layers: Sequence[LayerSpec] | LayerSpec | None = None,
           coefficient: float | None = None, strength: float | None = None,
           positions: str = "all", operator: Operator = "add", preserve_norm: bool = False,
           condition: Condition | None = None,
           row_specs: Sequence[Sequence[SteeringSpec]] | None = None,
           prompt_lengths: Sequence[int] | None = None,
           instruction_lengths: Sequence[int] | None = None,
           scope: Scope = "context") -> SteeringHandle:
    """Start steering ``model`` and return a handle; ``handle.remove()`` stops it.

    Prefer the :func:`steer` context manager. ``scope="context"`` (default) steers the forwards
    of the calling thread / asyncio task only; ``scope="global"`` steers every thread's
    forwards on this model until removed (the persistent attach/detach habit of repeng).

    Example:
        >>> import torch
        >>> from steerlab.testing.tiny import tiny_model
        >>> from steerlab.vector import SteeringVector
        >>> model, ids = tiny_model("llama"), torch.tensor([[5, 6, 7]])
        >>> plain = model(ids).logits
        >>> handle = attach(model, SteeringVector.from_directions({1: torch.ones(64)}),
        ...                 coefficient=2.0, scope="global")
        >>> steered = model(ids).logits
        >>> handle.remove()
        >>> bool((steered != plain).any()), torch.equal(model(ids).logits, plain)
        (True, True)
    """
    parse_scope(scope)
    module = model.model if isinstance(model, LoadedModel) else model
    specs = as_specs(spec, layers=layers, coefficient=coefficient, strength=strength,
                     positions=positions, operator=operator, preserve_norm=preserve_norm,
                     condition=condition)
    n_layers = len(find_blocks(module)[1])
    width = model_width(module)
    for row in row_specs or []:
        if isinstance(row, SteeringSpec | SteeringVector):
            raise SteerlabError("row_specs needs one list of SteeringSpecs per batch row")
    for s in [*specs, *(x for row in row_specs or [] for x in row)]:
        check_spec(s)
        if width is not None and s.vector.hidden_size != width:
            raise SteerlabError(f"vector hidden size {s.vector.hidden_size} does not match the "
                                f"model's {width}")
    plan = compile_terms(specs, row_specs, n_layers)
    tracker = PositionTracker(prompt_lengths, instruction_lengths)
    if not plan and row_specs is None:
        return SteeringHandle(None, [], scope, tracker)  # nothing to steer: model untouched
    dispatcher = _Dispatcher.of(module)
    keys = sorted(plan)
    entry = _Active(dispatcher, plan, tracker, len(row_specs) if row_specs is not None else None)
    dispatcher.acquire(keys)
    if scope == "global":
        with dispatcher.lock:
            dispatcher.global_active = (*dispatcher.global_active, entry)
    else:
        _ACTIVE.set((*_ACTIVE.get(), entry))
    return SteeringHandle(entry, keys, scope, tracker)


@contextlib.contextmanager
def steer(model: LoadedModel | nn.Module, spec: Steering = None, *,
          layers: Sequence[LayerSpec] | LayerSpec | None = None,
          coefficient: float | None = None, strength: float | None = None,
          positions: str = "all", operator: Operator = "add", preserve_norm: bool = False,
          condition: Condition | None = None,
          row_specs: Sequence[Sequence[SteeringSpec]] | None = None,
          prompt_lengths: Sequence[int] | None = None,
          instruction_lengths: Sequence[int] | None = None) -> Iterator[SteeringHandle]:
    """Steer ``model`` inside a ``with`` block (this thread only); undone on exit, even on error.

    ``spec`` is a vector (then ``layers``/``coefficient``/``strength``/... describe it), one
    :class:`SteeringSpec` or a list of them (applied in order). ``row_specs[i]`` lists extra
    specs for batch row i only — one forward can carry a whole coefficient sweep.
    ``prompt_lengths`` / ``instruction_lengths`` fix each row's prompt (``prompt`` /
    ``generation`` positions) and instruction (``after_instruction``) lengths in real tokens;
    without them the prompt is what the first call of the context saw. ``condition`` (a
    :class:`~steerlab.steering.spec.Condition`) steers only the rows whose prompt fires it
    (conditional steering, CAST).

    Example:
        >>> import steerlab
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()                     # steerlab.load_model(...) on a real model
        >>> vec = steerlab.extract(lm, [("I love it.", "I hate it.")], layers=[2], progress=False)
        >>> inputs = lm.tokenizer("Tell me a story.", return_tensors="pt")
        >>> with steer(lm, vec, layers=[2], strength=0.5):
        ...     out = lm.model.generate(**inputs, max_new_tokens=4, do_sample=False)
        >>> out.shape[1] <= inputs.input_ids.shape[1] + 4
        True
    """
    handle = attach(model, spec, layers=layers, coefficient=coefficient, strength=strength,
                    positions=positions, operator=operator, preserve_norm=preserve_norm,
                    condition=condition, row_specs=row_specs, prompt_lengths=prompt_lengths,
                    instruction_lengths=instruction_lengths)
    try:
        yield handle
    finally:
        handle.remove()
