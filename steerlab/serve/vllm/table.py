"""Per-token steering in vLLM's flattened batch: request plans, coefficient buffers, one update.

vLLM runs every scheduled token of every request as one ``[num_tokens, hidden]`` batch (prefill
chunks and decode steps mixed). A request's ``steering`` object is resolved once into a
:class:`RequestPlan` (the same schema and checks as ``steerlab serve``, plus the few things the
vLLM engine cannot express). Before each forward, :meth:`SteeringTable.fill` writes, for every
token, the coefficient of every served vector at every steered layer from the request the token
belongs to, its absolute position and the request's prompt / instruction length. Each steered
decoder layer then applies one fused update (:meth:`SteeringTable.apply`)::

    delta = add[:n] @ V  +  (clamp_on[:n] * (clamp_to[:n] - h @ Uᵀ) - ablate[:n] * (h @ Uᵀ)) @ U

with ``V`` the served vectors' raw directions at the layer and ``U`` their unit directions. The
buffers keep their identity for the engine's lifetime (they are written in place), so the update
is traced once into a compiled graph and stays correct; a token of an unsteered request has all
coefficients zero and gets exact zeros added, so its result equals stock vLLM's.

Nothing here imports vLLM: the plugin (:mod:`steerlab.serve.vllm.plugin`) feeds it.

Example:
    >>> import numpy as np, torch
    >>> from steerlab.serve.registry import VectorRegistry
    >>> from steerlab.vector import SteeringVector
    >>> reg = VectorRegistry({"up": SteeringVector.from_directions({1: torch.ones(4)})})
    >>> plan = plan_request({"vectors": [{"name": "up", "coefficient": 2.0,
    ...                                   "positions": "generation"}]}, reg, n_layers=2,
    ...                     hidden_size=4)
    >>> table = SteeringTable(reg, layers=[1], max_tokens=8)
    >>> table.fill([TokenSpan(plan, 0, 3, prompt_length=2)], positions=np.array([0, 1, 2]))
    >>> hidden, residual = table.apply(0, torch.zeros(3, 4), torch.zeros(3, 4))
    >>> residual[:, 0].tolist()
    [0.0, 0.0, 2.0]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steerlab.errors import SteerlabError
from steerlab.serve.registry import VectorRegistry
from steerlab.serve.steering import (
    SteeringRequest,
    parse_steering,
    parse_steering_json,
    resolve_steering,
)
from steerlab.steering.plan import PositionTracker
from steerlab.util.vocabulary import Operator

#: Operators whose update reads the hidden state (at most one per layer per request on vLLM).
PROJECTIONS = ("ablate", "clamp")


@dataclass(frozen=True)
class Entry:
    """One served vector at one layer of one request, resolved to raw numbers."""

    layer: int
    slot: int  # the vector's row in the table (its index among the served names)
    operator: Operator
    operand: float  # SteeringSpec.operand: coefficient (add), fraction (ablate), target (clamp)
    positions: str  # checked by steerlab.steering.spec.parse_positions

    def mask(self, pos: np.ndarray, prompt_length: int, instruction_length: int) -> np.ndarray:
        """Which of the tokens at absolute positions ``pos`` this entry steers.

        :class:`steerlab.steering.plan.PositionTracker` decides, as for steerlab's own hooks:
        vLLM's positions are each request's real-token indices (no padding), one row.

        Example:
            >>> e = Entry(0, 0, "add", 1.0, "last_prompt:2")
            >>> e.mask(np.arange(5), prompt_length=4, instruction_length=4).tolist()
            [False, False, True, True, False]
        """
        tracker = PositionTracker(prompt_lengths=[prompt_length],
                                  instruction_lengths=[instruction_length])
        real = torch.from_numpy(np.asarray(pos, dtype=np.int64))[None]
        tracker.set_call(real, torch.ones_like(real, dtype=torch.bool))
        return tracker.mask(self.positions, 1)[0].numpy()


@dataclass(frozen=True)
class RequestPlan:
    """A request's steering, resolved and checked: what :meth:`SteeringTable.fill` reads."""

    request: SteeringRequest
    entries: tuple[Entry, ...]

    @property
    def touches_prompt(self) -> bool:
        """Whether any entry can change a prompt token's activations (then the prompt's KV
        differs from an unsteered run's and must not be shared through the prefix cache)."""
        return any(e.positions != "generation" for e in self.entries)


UNSTEERED_PLAN = RequestPlan(SteeringRequest(), ())


def parse_request_steering(value: object, where: str = "steering") -> SteeringRequest:
    """The steering object from ``extra_args['steering']``: a JSON string (``vllm_xargs``,
    whose values must be scalars) or already-decoded JSON (``SamplingParams.extra_args``).

    Example:
        >>> parse_request_steering('{"vectors": [{"name": "a", "coefficient": 1}]}').vectors[0].name
        'a'
    """
    if isinstance(value, str):
        return parse_steering_json(value, where)
    return parse_steering(value, where)


def plan_request(steering: object, registry: VectorRegistry, n_layers: int,
                 hidden_size: int) -> RequestPlan:
    """Resolve one request's ``steering`` for the vLLM engine (one-line error if bad).

    Everything ``steerlab serve`` checks (:func:`~steerlab.serve.steering.resolve_steering`),
    plus what the fused per-layer update cannot express, refused with the reason: ``preserve_norm``,
    position-resolved ``[n_pos, d]`` vectors, and, at one layer, more than one ablate/clamp or an
    ablate/clamp listed after an add (the update applies the projection first).

    Example:
        >>> import torch
        >>> from steerlab.vector import SteeringVector
        >>> reg = VectorRegistry({"a": SteeringVector.from_directions({0: torch.ones(2)})})
        >>> plan_request(None, reg, 1, 2).entries
        ()
        >>> plan_request({"vectors": [{"name": "a", "preserve_norm": True}]}, reg, 1, 2)
        Traceback (most recent call last):
        ...
        steerlab.errors.SteerlabError: steering.vectors.0 ('a'): preserve_norm is not supported \
on the vLLM engine (use steerlab serve --engine transformers)
    """
    request = parse_request_steering(steering)
    specs = resolve_steering(request, registry, n_layers, hidden_size)
    slots = {name: i for i, name in enumerate(registry.names)}
    entries: list[Entry] = []
    seen_add: set[int] = set()
    seen_projection: set[int] = set()
    for i, (item, spec) in enumerate(zip(request.vectors, specs, strict=True)):
        where = f"steering.vectors.{i} ({item.name!r})"
        if spec.preserve_norm:
            raise SteerlabError(f"{where}: preserve_norm is not supported on the vLLM engine "
                                "(use steerlab serve --engine transformers)")
        assert isinstance(spec.layers, list)  # resolve_steering resolved them
        for layer in spec.layers:
            if spec.vector.directions[layer].ndim != 1:
                raise SteerlabError(f"{where}: layer {layer} holds a position-resolved "
                                    "[n_pos, d] vector; the vLLM engine takes one [d] direction "
                                    "per layer")
            if spec.operator in PROJECTIONS:
                if layer in seen_projection or layer in seen_add:
                    raise SteerlabError(
                        f"{where}: on the vLLM engine a layer takes at most one ablate/clamp, "
                        f"listed before that layer's adds (layer {layer})")
                if float(spec.vector.directions[layer].norm()) == 0.0:
                    raise SteerlabError(f"{where}: cannot {spec.operator} along a zero vector "
                                        f"(layer {layer})")
                seen_projection.add(layer)
            else:
                seen_add.add(layer)
            entries.append(Entry(layer, slots[item.name], spec.operator,
                                 float(spec.operand(layer)), spec.positions))
    return RequestPlan(request, tuple(entries))


def steering_fingerprint(plan: RequestPlan, registry: VectorRegistry) -> str | None:
    """A hash of the steering that reaches prompt tokens (``None`` when none does).

    Two requests with the same fingerprint compute the same prompt KV, so it salts vLLM's
    prefix cache: a steered request never reads blocks computed without its steering (nor an
    unsteered one blocks computed with it). Generation-only steering leaves the prompt KV as it
    is and keeps sharing prefixes with unsteered traffic.

    Example:
        >>> import torch
        >>> from steerlab.vector import SteeringVector
        >>> reg = VectorRegistry({"a": SteeringVector.from_directions({0: torch.ones(2)})})
        >>> steering_fingerprint(plan_request({"vectors": [{"name": "a", "positions":
        ...     "generation"}]}, reg, 1, 2), reg) is None
        True
    """
    touching = [e for e in plan.entries if e.positions != "generation"]
    if not touching:
        return None
    names = registry.names
    items = [[names[e.slot], registry.served(names[e.slot]).sha256 or "", e.layer, e.operator,
              repr(e.operand), e.positions] for e in touching]
    payload = json.dumps(items, sort_keys=False).encode()
    return "steerlab-" + hashlib.sha256(payload).hexdigest()[:32]


@dataclass(frozen=True)
class TokenSpan:
    """One request's tokens in the flat batch: ``[start, end)`` and its lengths."""

    plan: RequestPlan
    start: int
    end: int
    prompt_length: int
    instruction_length: int | None = None  # default: the prompt length


class SteeringTable:
    """The served vectors at the steered layers of one worker, and the per-token buffers.

    ``layers`` are the model layers this worker holds and steers (under pipeline parallelism
    each stage passes its own). Buffers hold ``max_tokens`` rows (the most tokens one forward
    may carry) and are written in place by :meth:`fill`, so a compiled graph that read them
    once keeps reading the current values.

    Example:
        >>> from steerlab.vector import SteeringVector
        >>> reg = VectorRegistry({"a": SteeringVector.from_directions({3: torch.ones(2)})})
        >>> SteeringTable(reg, layers=[3], max_tokens=4).raw.shape
        torch.Size([1, 1, 2])
    """

    def __init__(self, registry: VectorRegistry, layers: Sequence[int], max_tokens: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        names = registry.names
        if not names:
            raise SteerlabError("the vLLM plugin has no vectors to serve")
        self.layers = list(layers)
        self.index = {layer: i for i, layer in enumerate(self.layers)}
        self.max_tokens = int(max_tokens)
        width = {registry.get(n).hidden_size for n in names}
        if len(width) != 1:
            raise SteerlabError(f"served vectors have different widths {sorted(width)}")
        (d,) = width
        raw = torch.zeros(len(self.layers), len(names), d, dtype=torch.float32)
        for li, layer in enumerate(self.layers):
            for slot, name in enumerate(names):
                direction = registry.get(name).directions.get(layer)
                if direction is not None and direction.ndim == 1:
                    raw[li, slot] = direction.float()
        unit = raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        self.device = torch.device(device)
        self.raw = raw.to(self.device, dtype)
        self.unit = unit.to(self.device, dtype)
        shape = (len(self.layers), self.max_tokens, len(names))
        # host buffers (float32, numpy views) are filled per step; device buffers in the
        # model's dtype are what the compiled layers read (the same tensors on a CPU fp32 model)
        self.host = {k: torch.zeros(shape, dtype=torch.float32)
                     for k in ("add", "ablate", "clamp_on", "clamp_to")}
        shared = self.device.type == "cpu" and dtype == torch.float32
        self.buffers = (self.host if shared else
                        {k: torch.zeros(shape, dtype=dtype, device=self.device)
                         for k in self.host})
        self._views = {k: v.numpy() for k, v in self.host.items()}
        self._written = 0  # rows of the buffers that hold non-zero values

    def fill(self, spans: Sequence[TokenSpan], positions: np.ndarray) -> None:
        """Write every token's coefficients for the next forward (zeros where unsteered).

        ``positions[t]`` is token ``t``'s absolute position in its request; tokens past the
        last span (padding) stay unsteered.
        """
        views = self._views
        written = max((s.end for s in spans if s.plan.entries), default=0)
        if written > self.max_tokens:
            raise SteerlabError(f"{written} tokens in one forward; the steering buffers hold "
                                f"{self.max_tokens}")
        clear = max(self._written, written)
        if clear:
            for view in views.values():
                view[:, :clear] = 0.0
        for span in spans:
            if not span.plan.entries or span.end <= span.start:
                continue
            pos = positions[span.start:span.end]
            instruction = (span.prompt_length if span.instruction_length is None
                           else span.instruction_length)
            for e in span.plan.entries:
                li = self.index.get(e.layer)
                if li is None:  # a layer held by another pipeline stage
                    continue
                mask = e.mask(pos, span.prompt_length, instruction).astype(np.float32)
                rows = slice(span.start, span.end)
                if e.operator == "add":
                    views["add"][li, rows, e.slot] += e.operand * mask
                elif e.operator == "ablate":
                    views["ablate"][li, rows, e.slot] += e.operand * mask
                else:
                    views["clamp_on"][li, rows, e.slot] = mask
                    views["clamp_to"][li, rows, e.slot] = e.operand * mask
        if self.buffers is not self.host and clear:
            for key, host in self.host.items():
                self.buffers[key][:, :clear].copy_(host[:, :clear], non_blocking=True)
        self._written = written

    def apply(self, li: int, hidden: torch.Tensor,
              residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused update at steered layer ``li`` (an index into ``layers``).

        vLLM's decoder layers return ``(hidden, residual)`` whose sum is the block output; the
        update goes to the residual half (the next layer's norm adds the two), or to ``hidden``
        when the layer returns no residual. No data-dependent Python branches: traced once.
        """
        n = hidden.shape[0]
        full = hidden if residual is None else hidden + residual
        unit = self.unit[li]
        projection = full @ unit.T
        buffers = self.buffers
        weight = (buffers["clamp_on"][li, :n] * (buffers["clamp_to"][li, :n] - projection)
                  - buffers["ablate"][li, :n] * projection)
        delta = buffers["add"][li, :n] @ self.raw[li] + weight @ unit
        if residual is None:
            return hidden + delta, None
        return hidden, residual + delta
