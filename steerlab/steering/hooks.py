"""Apply steering vectors with forward hooks: exact positions, operators, per-row specs.

``steer()`` is a context manager. On entry it registers (1) a pre-hook on the module that owns
the decoder blocks, which reads each call's attention mask and cache offset to compute, for
every token of every row, its *absolute real-token index* (pads excluded), and (2) one hook per
steered block that rewrites that block's output (``block_output`` site) or input
(``block_input``). Because positions come from absolute indices and each row's prompt length,
they are the same with the KV cache on or off, with left or right padding, batched or alone.
Hooks never replace modules or store anything on the model; leaving the ``with`` (also by an
exception) removes them and the model is bit-identical to before.

Positions (per row): ``all``, ``prompt``, ``generation``, ``after_instruction`` (needs
``instruction_lengths``), ``front`` (row i of a position-resolved ActAdd vector is added at real
position i; a plain ``[d]`` vector goes to the first real position only), ``last_prompt:k``,
``window:a:b`` (real positions a..b-1; ``window:a:`` is open). Position-resolved ``[n_pos, d]``
vectors need ``front``. Global specs apply before a row's ``row_specs``, each list in order.

Operators: ``add`` (h + c·v), ``ablate`` (h − c·(h·v̂)v̂, c defaults to 1), ``clamp``
(h − (h·v̂)v̂ + c·v̂). ``preserve_norm`` rescales steered positions to their pre-steer norm.

Example:
    >>> import torch
    >>> from steerlab.testing.tiny import tiny_model
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.model.arch import find_blocks, resolve_layers
from steerlab.model.load import LoadedModel
from steerlab.vector import SteeringVector

OPERATORS = ("add", "ablate", "clamp")
_SIMPLE_POSITIONS = ("all", "prompt", "generation", "after_instruction", "front")


def parse_positions(positions: str) -> tuple[str, int, int | None]:
    """Validate a positions string; returns (kind, a, b).

    Example:
        >>> parse_positions("last_prompt:3")
        ('last_prompt', 3, None)
        >>> parse_positions("window:2:5")
        ('window', 2, 5)
    """
    if not isinstance(positions, str):
        raise SteerlabError(f"positions must be a string, got {type(positions).__name__}")
    if positions in _SIMPLE_POSITIONS:
        return positions, 0, None
    kind, _, rest = positions.partition(":")
    try:
        if kind == "last_prompt":
            k = int(rest)
            if k < 1:
                raise ValueError
            return kind, k, None
        if kind == "window":
            a_text, _, b_text = rest.partition(":")
            a = int(a_text)
            b = int(b_text) if b_text else None
            if a < 0 or (b is not None and b <= a):
                raise ValueError
            return kind, a, b
    except ValueError:
        pass
    raise SteerlabError(f"bad positions {positions!r}; expected one of "
                        f"{', '.join(_SIMPLE_POSITIONS)}, last_prompt:K or window:A:B")


@dataclass
class SteeringSpec:
    """One vector, where and how hard to apply it.

    Give ``coefficient`` (raw multiplier of the stored vector) or ``strength`` (multiple of the
    mean residual norm at the layer, from the vector's calibration) — not both. ``layers`` may be
    ints, negative ints, fractions ("0.5") or range strings ("8-12"); default: all of the
    vector's layers.

    Example:
        >>> spec = SteeringSpec(SteeringVector.from_directions({2: torch.ones(4)}), coefficient=3)
        >>> spec.operator, spec.positions
        ('add', 'all')
    """

    vector: SteeringVector
    layers: Sequence[int | float | str] | str | int | None = None
    coefficient: float | None = None
    strength: float | None = None
    positions: str = "all"
    operator: str = "add"
    preserve_norm: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.vector, SteeringVector):
            raise SteerlabError(f"SteeringSpec needs a SteeringVector, got "
                                f"{type(self.vector).__name__}")
        if self.coefficient is not None and self.strength is not None:
            raise SteerlabError("give coefficient or strength, not both")
        if self.operator not in OPERATORS:
            raise SteerlabError(f"unknown operator {self.operator!r}; expected one of "
                                f"{', '.join(OPERATORS)}")
        if self.operator == "ablate" and self.strength is not None:
            raise SteerlabError("ablate takes coefficient= (the fraction of the component to "
                                "remove, default 1), not strength=")
        parse_positions(self.positions)
        for value in (self.coefficient, self.strength):
            if value is not None and not torch.isfinite(torch.tensor(float(value))):
                raise SteerlabError(f"coefficient/strength must be finite, got {value}")

    def resolved_layers(self, n_layers: int) -> list[int]:
        """Layer indices this spec steers, checked against the vector."""
        if self.layers is None:
            layers = [k for k in self.vector.layers]
        else:
            layers = resolve_layers(self.layers, n_layers)
        missing = [k for k in layers if k not in self.vector.directions]
        if missing:
            raise SteerlabError(f"vector has no direction for layer(s) {missing}; "
                                f"it has layers {self.vector.layers}")
        bad = [k for k in layers if not 0 <= k < n_layers]
        if bad:
            raise SteerlabError(f"layer(s) {bad} out of range: model has {n_layers} layers")
        return layers

    def scale(self, layer: int) -> float:
        """The raw coefficient (add) or clamp value / ablation fraction for this layer."""
        if self.strength is not None:
            if self.operator == "add":
                return self.vector.coefficient_for_strength(layer, self.strength)
            resid = self.vector.resid_norm(layer)
            if resid is None:
                raise SteerlabError(f"vector has no residual-norm calibration for layer {layer}: "
                                    "use coefficient=, or vector.calibrate(model, texts)")
            return self.strength * resid  # clamp: the value, in units of the residual norm
        if self.coefficient is not None:
            return float(self.coefficient)
        return 1.0


@dataclass
class _Term:
    """One operation at one layer, possibly restricted to some rows with per-row scales."""

    operator: str
    direction: torch.Tensor  # raw for add, unit for ablate/clamp; [d] or [n_pos, d]
    positions: str
    preserve_norm: bool
    row_scale: torch.Tensor | None  # [B] per-row scale (0 where the row is not steered)
    scale: float = 1.0
    row_mask: torch.Tensor | None = None  # [B] bool, rows this term touches
    _cast: dict[tuple[torch.dtype, torch.device, bool], torch.Tensor] = field(
        default_factory=dict)

    def direction_as(self, like: torch.Tensor) -> torch.Tensor:
        # keyed by inference mode too: a copy made under torch.inference_mode() cannot be saved
        # for backward, so a later grad-mode call in the same context gets its own copy
        inference = torch.is_inference_mode_enabled()
        key = (like.dtype, like.device, inference)
        if key not in self._cast:
            cast = self.direction.to(device=like.device, dtype=like.dtype)
            if not inference and cast.is_inference():
                cast = cast.clone()
            self._cast[key] = cast
        return self._cast[key]


class PositionTracker:
    """Per-call absolute real-token indices and per-row prompt lengths for one steer context.

    Fed by a pre-hook on the blocks' parent module; steerlab's own engines may also call
    :meth:`set_call` directly when they run blocks themselves.
    """

    def __init__(self, prompt_lengths: Sequence[int] | None = None,
                 instruction_lengths: Sequence[int] | None = None):
        self.fixed_prompt = prompt_lengths is not None
        self.prompt_lengths = (torch.tensor(list(prompt_lengths)) if prompt_lengths is not None
                               else None)
        self.instruction_lengths = (torch.tensor(list(instruction_lengths))
                                    if instruction_lengths is not None else None)
        self._prompt_ids: list[torch.Tensor] | None = None
        self.real_index: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        self._masks: dict[str, torch.Tensor] = {}

    def set_call(self, real_index: torch.Tensor, valid: torch.Tensor) -> None:
        self.real_index, self.valid = real_index, valid
        self._masks = {}

    def observe(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                past_len: int, batch: int, length: int, device: torch.device) -> None:
        """Compute real indices for a call of ``length`` new tokens after ``past_len`` cached."""
        if attention_mask is not None and attention_mask.ndim == 2 and \
                attention_mask.shape[1] >= length:
            mask = attention_mask.to(torch.long)
            real = (mask.cumsum(-1) - 1)[:, -length:]
            valid = mask[:, -length:].bool()
        else:
            real = (past_len + torch.arange(length, device=device)).expand(batch, length)
            valid = torch.ones(batch, length, dtype=torch.bool, device=device)
        real = real.clamp_min(0)
        if past_len == 0:
            self._on_fresh_call(input_ids, valid)
        elif self.prompt_lengths is None:
            self.prompt_lengths = real[:, 0].cpu()
        self.set_call(real, valid)

    def _on_fresh_call(self, input_ids: torch.Tensor | None, valid: torch.Tensor) -> None:
        if self.fixed_prompt:
            return
        rows = ([ids[v] for ids, v in zip(input_ids.cpu(), valid.cpu(), strict=True)]
                if input_ids is not None else None)
        if rows is not None and self._prompt_ids is not None and \
                len(rows) == len(self._prompt_ids) and self._continues(rows):
            return  # no-cache generation: the same prompts, extended
        self._prompt_ids = rows
        self.prompt_lengths = valid.sum(-1).cpu()

    def _continues(self, rows: list[torch.Tensor]) -> bool:
        assert self._prompt_ids is not None
        longer = False
        for row, prompt in zip(rows, self._prompt_ids, strict=True):
            if len(row) < len(prompt) or not torch.equal(row[: len(prompt)], prompt):
                return False
            longer = longer or len(row) > len(prompt)
        return longer

    def mask(self, positions: str, n_pos: int = 0) -> torch.Tensor:
        """[B, T] bool mask of the current call's tokens selected by ``positions``."""
        key = f"{positions}/{n_pos}"
        if key in self._masks:
            return self._masks[key]
        if self.real_index is None or self.valid is None:
            raise SteerlabError("steering hook ran before positions were known; call the model "
                                "(or its blocks' parent module), not a block alone")
        real, valid = self.real_index, self.valid
        kind, a, b = parse_positions(positions)
        if kind == "all":
            out = valid
        elif kind == "front":
            out = valid & (real < n_pos)
        elif kind == "window":
            out = valid & (real >= a)
            if b is not None:
                out = out & (real < b)
        elif kind == "after_instruction":
            if self.instruction_lengths is None:
                raise SteerlabError("positions='after_instruction' needs instruction_lengths= "
                                    "(steerlab.scoring.ab/score_ab pass them)")
            out = valid & (real >= self.instruction_lengths.to(real.device)[:, None])
        else:
            if self.prompt_lengths is None:
                raise SteerlabError(f"positions={positions!r} needs the prompt length")
            plen = self.prompt_lengths.to(real.device)[:, None]
            if kind == "prompt":
                out = valid & (real < plen)
            elif kind == "generation":
                out = valid & (real >= plen)
            else:  # last_prompt
                out = valid & (real < plen) & (real >= plen - a)
        self._masks[key] = out
        return out


def apply_terms(hidden: torch.Tensor, terms: Sequence[_Term],
                tracker: PositionTracker) -> torch.Tensor:
    """Return a new hidden-state tensor with ``terms`` applied in order (never in place)."""
    for term in terms:
        direction = term.direction_as(hidden)
        if direction.shape[-1] != hidden.shape[-1]:
            raise SteerlabError(f"vector width {direction.shape[-1]} does not match hidden "
                                f"states of width {hidden.shape[-1]}")
        n_pos = direction.shape[0] if direction.ndim == 2 else 1
        mask = tracker.mask(term.positions, n_pos).to(hidden.dtype)
        if mask.shape != hidden.shape[:2]:
            raise SteerlabError(f"positions mask {list(mask.shape)} does not fit hidden states "
                                f"{list(hidden.shape[:2])}")
        if term.row_mask is not None:
            if term.row_mask.shape[0] != hidden.shape[0]:
                raise SteerlabError(f"per-row steering was given {term.row_mask.shape[0]} rows "
                                    f"but the batch has {hidden.shape[0]}")
            mask = mask * term.row_mask.to(hidden.device, hidden.dtype)[:, None]
        if term.row_scale is not None:
            weight = mask * term.row_scale.to(hidden.device, hidden.dtype)[:, None]
        else:
            weight = mask * term.scale
        before = hidden.norm(dim=-1, keepdim=True) if term.preserve_norm else None
        if term.operator == "add":
            if direction.ndim == 2:
                index = tracker.real_index
                assert index is not None
                delta = direction[index.clamp(max=n_pos - 1).to(hidden.device)]
                hidden = hidden + weight[..., None] * delta
            else:
                hidden = hidden + weight[..., None] * direction
        else:
            projection = hidden @ direction
            if term.operator == "ablate":
                hidden = hidden - (weight * projection)[..., None] * direction
            else:  # clamp: set the component along the direction to the scale
                hidden = hidden + (mask * (weight - projection * mask))[..., None] * direction
        if before is not None:
            after = hidden.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            hidden = torch.where(mask[..., None] > 0, hidden * (before / after), hidden)
    return hidden


def _split_output(output: Any) -> tuple[torch.Tensor, Any]:
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0], output[1:]
    raise SteerlabError(f"cannot steer a block whose output is {type(output).__name__}")


def _join_output(hidden: torch.Tensor, rest: Any) -> Any:
    return hidden if rest is None else (hidden, *rest)


#: Keyword names under which transformers has passed the KV cache to a model's forward
#: (``past_key_values`` up to 5.23; 5.24 renamed it ``cache``).
CACHE_KWARGS = ("cache", "past_key_values")


def cache_offset(kwargs: dict[str, Any], length: int,
                 attention_mask: torch.Tensor | None = None) -> int:
    """Tokens already in the KV cache before a call of ``length`` new tokens.

    Read from whatever the running transformers passes: ``cache_position`` (≤ 5.23), a cache
    object under ``cache`` (5.24+) or ``past_key_values`` (or any other keyword holding an
    object with ``get_seq_length``), checked against a 2-D attention mask, which covers cached
    plus new tokens. When those disagree, or a cache is present that steerlab cannot read,
    this raises instead of guessing: a wrong offset would silently steer the wrong tokens.

    Example:
        >>> cache_offset({}, 3)
        0
        >>> cache_offset({"cache_position": torch.tensor([7])}, 1)
        7
    """
    found: list[tuple[str, int]] = []
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, torch.Tensor) and cache_position.numel():
        found.append(("cache_position", int(cache_position.reshape(-1)[0])))
    for name, value in kwargs.items():
        if value is None or name == "cache_position":
            continue
        if callable(getattr(value, "get_seq_length", None)):
            found.append((name, int(value.get_seq_length())))
        elif name in CACHE_KWARGS:
            raise SteerlabError(f"cannot read the KV-cache length from {name}="
                                f"{type(value).__name__}; steering positions would be wrong")
    if attention_mask is not None and attention_mask.ndim == 2:
        found.append(("attention_mask", int(attention_mask.shape[1]) - length))
    offsets = {offset for _, offset in found}
    if len(offsets) > 1 or any(offset < 0 for offset in offsets):
        seen = ", ".join(f"{name} says {offset}" for name, offset in found)
        raise SteerlabError(f"cannot tell how many tokens are cached before this call ({seen}); "
                            "refusing to steer positions that may be wrong")
    return offsets.pop() if offsets else 0


def _model_width(module: nn.Module) -> int | None:
    """The residual-stream width: ``config.hidden_size``, else the input embeddings' width."""
    config = getattr(module, "config", None)
    width = getattr(config, "hidden_size", None)
    if isinstance(width, int):
        return width
    get_embeddings = getattr(module, "get_input_embeddings", None)
    if callable(get_embeddings):
        embeddings = get_embeddings()
        weight = getattr(embeddings, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 2:
            return int(weight.shape[1])
    return None


def as_specs(spec: SteeringSpec | SteeringVector | Sequence[SteeringSpec] | None,
             **kwargs: Any) -> list[SteeringSpec]:
    """Normalise the forms ``steer()`` accepts into a list of specs.

    Keywords (``layers``, ``coefficient``, ``positions``...) describe a bare vector; given with
    ready specs they would be silently ignored, so any non-default one is an error.
    """
    if isinstance(spec, SteeringVector):
        return [SteeringSpec(spec, **kwargs)]
    defaults = {"positions": "all", "operator": "add", "preserve_norm": False}
    if any(value != defaults.get(key) for key, value in kwargs.items()):
        raise SteerlabError("layers/coefficient/strength/positions/operator/preserve_norm "
                            "keywords go with a SteeringVector, not with ready SteeringSpecs")
    if spec is None:
        return []
    if isinstance(spec, SteeringSpec):
        return [spec]
    return list(spec)


def compile_terms(specs: Sequence[SteeringSpec], row_specs: Sequence[Sequence[SteeringSpec]] | None,
                  n_layers: int) -> dict[tuple[str, int], list[_Term]]:
    """Group specs into per-(site, layer) term lists; per-row adds of one vector are fused."""
    plan: dict[tuple[str, int], list[_Term]] = {}

    def direction_for(spec: SteeringSpec, layer: int) -> torch.Tensor:
        raw = spec.vector.directions[layer]
        if raw.ndim == 2 and spec.positions != "front":
            raise SteerlabError(f"layer {layer}: a position-resolved [n_pos, d] vector needs "
                                f"positions='front', not {spec.positions!r}")
        if spec.operator == "add":
            return raw
        if raw.ndim != 1:
            raise SteerlabError(f"operator {spec.operator!r} needs a single direction per layer, "
                                "not a position-resolved vector")
        norm = raw.norm()
        if norm == 0:
            raise SteerlabError(f"layer {layer}: cannot {spec.operator} along a zero vector")
        return raw / norm

    for spec in specs:
        _check_spec(spec)
        for layer in spec.resolved_layers(n_layers):
            plan.setdefault((spec.vector.site, layer), []).append(_Term(
                spec.operator, direction_for(spec, layer), spec.positions, spec.preserve_norm,
                None, spec.scale(layer)))
    if row_specs is not None:
        batch = len(row_specs)
        # Terms of the same (vector, layer, operator, positions) are fused across rows, but a
        # row may join an existing term only if that term comes after every term the row
        # already uses at that site/layer: each row's own order is kept exactly.
        fused: dict[tuple[Any, ...], tuple[_Term, int]] = {}
        for row, row_list in enumerate(row_specs):
            last: dict[tuple[str, int], int] = {}  # site/layer -> index of the row's last term
            for spec in row_list:
                _check_spec(spec)
                for layer in spec.resolved_layers(n_layers):
                    site_key = (spec.vector.site, layer)
                    terms = plan.setdefault(site_key, [])
                    key = (spec.vector.site, layer, id(spec.vector.directions[layer]),
                           spec.operator, spec.positions, spec.preserve_norm)
                    found = fused.get(key)
                    if found is not None and found[1] > last.get(site_key, -1):
                        term, index = found
                    else:
                        term = _Term(spec.operator, direction_for(spec, layer), spec.positions,
                                     spec.preserve_norm, torch.zeros(batch),
                                     row_mask=torch.zeros(batch, dtype=torch.bool))
                        index = len(terms)
                        terms.append(term)
                        fused[key] = (term, index)
                    assert term.row_scale is not None and term.row_mask is not None
                    term.row_scale[row] = spec.scale(layer)
                    term.row_mask[row] = True
                    last[site_key] = index
    return plan


def _check_spec(spec: Any) -> None:
    if not isinstance(spec, SteeringSpec):
        raise SteerlabError(f"expected a SteeringSpec, got {type(spec).__name__}")


class SteeringHandle:
    """Active hooks of one steer context; ``remove()`` detaches them (idempotent)."""

    def __init__(self, handles: list[torch.utils.hooks.RemovableHandle], tracker: PositionTracker):
        self._handles = handles
        self.tracker = tracker

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def attach(model: LoadedModel | nn.Module,
           spec: SteeringSpec | SteeringVector | Sequence[SteeringSpec] | None = None, *,
           layers: Sequence[int | float | str] | str | int | None = None,
           coefficient: float | None = None, strength: float | None = None,
           positions: str = "all", operator: str = "add", preserve_norm: bool = False,
           row_specs: Sequence[Sequence[SteeringSpec]] | None = None,
           prompt_lengths: Sequence[int] | None = None,
           instruction_lengths: Sequence[int] | None = None) -> SteeringHandle:
    """Register steering hooks and return a handle (prefer the ``steer`` context manager).

    Example:
        >>> handle = attach(model, vec, coefficient=2.0)   # doctest: +SKIP
        >>> handle.remove()                                 # doctest: +SKIP
    """
    module = model.model if isinstance(model, LoadedModel) else model
    specs = as_specs(spec, layers=layers, coefficient=coefficient, strength=strength,
                     positions=positions, operator=operator, preserve_norm=preserve_norm)
    path, blocks = find_blocks(module)
    n_layers = len(blocks)
    hidden = _model_width(module)
    for row in row_specs or []:
        if isinstance(row, SteeringSpec | SteeringVector):
            raise SteerlabError("row_specs needs one list of SteeringSpecs per batch row")
    for s in [*specs, *(x for row in row_specs or [] for x in row)]:
        _check_spec(s)
        if hidden is not None and s.vector.hidden_size != hidden:
            raise SteerlabError(f"vector hidden size {s.vector.hidden_size} does not match the "
                                f"model's {hidden}")
    plan = compile_terms(specs, row_specs, n_layers)
    tracker = PositionTracker(prompt_lengths, instruction_lengths)
    if not plan and row_specs is None:
        return SteeringHandle([], tracker)  # nothing to steer: leave the model untouched
    parent = module.get_submodule(path.rsplit(".", 1)[0]) if "." in path else module

    def observe(_module: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        input_ids = kw.get("input_ids")
        if input_ids is None and args and isinstance(args[0], torch.Tensor):
            input_ids = args[0]
        embeds = kw.get("inputs_embeds")
        source = input_ids if input_ids is not None else embeds
        if source is None:
            return
        batch, length = int(source.shape[0]), int(source.shape[1])
        if row_specs is not None and batch != len(row_specs):
            raise SteerlabError(f"per-row steering was given {len(row_specs)} rows but the batch "
                                f"has {batch}")
        mask = kw.get("attention_mask")
        tracker.observe(input_ids, mask, cache_offset(kw, length, mask), batch, length,
                        source.device)

    handles = [parent.register_forward_pre_hook(observe, with_kwargs=True)]

    def output_hook(terms: list[_Term]) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            hidden_states, rest = _split_output(output)
            return _join_output(apply_terms(hidden_states, terms, tracker), rest)
        return hook

    def input_hook(terms: list[_Term]) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            if args:
                return (apply_terms(args[0], terms, tracker), *args[1:]), kw
            kw = dict(kw)
            kw["hidden_states"] = apply_terms(kw["hidden_states"], terms, tracker)
            return args, kw
        return hook

    try:
        for (site, layer), terms in plan.items():
            block = blocks[layer]
            if site == "block_output":
                handles.append(block.register_forward_hook(output_hook(terms)))
            else:
                handles.append(block.register_forward_pre_hook(input_hook(terms),
                                                               with_kwargs=True))
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    return SteeringHandle(handles, tracker)


@contextlib.contextmanager
def steer(model: LoadedModel | nn.Module,
          spec: SteeringSpec | SteeringVector | Sequence[SteeringSpec] | None = None, *,
          layers: Sequence[int | float | str] | str | int | None = None,
          coefficient: float | None = None, strength: float | None = None,
          positions: str = "all", operator: str = "add", preserve_norm: bool = False,
          row_specs: Sequence[Sequence[SteeringSpec]] | None = None,
          prompt_lengths: Sequence[int] | None = None,
          instruction_lengths: Sequence[int] | None = None) -> Iterator[SteeringHandle]:
    """Steer ``model`` inside a ``with`` block; hooks are removed on exit, even on error.

    ``spec`` is a vector (then ``layers``/``coefficient``/``strength``/... describe it), one
    :class:`SteeringSpec` or a list of them (applied in order). ``row_specs[i]`` lists extra specs
    for batch row i only — one forward can carry a whole coefficient sweep.

    Example:
        >>> with steer(lm, vec, layers=[12], strength=0.5):        # doctest: +SKIP
        ...     out = lm.model.generate(**inputs)
    """
    handle = attach(model, spec, layers=layers, coefficient=coefficient, strength=strength,
                    positions=positions, operator=operator, preserve_norm=preserve_norm,
                    row_specs=row_specs, prompt_lengths=prompt_lengths,
                    instruction_lengths=instruction_lengths)
    try:
        yield handle
    finally:
        handle.remove()
