"""Compiled steering: per-(site, layer) terms, token positions, and applying them.

:func:`compile_terms` turns specs (global ones and per-row ones) into :class:`Term` lists per
``(site, layer)``; per-row adds of the same vector are fused into one term with a per-row operand,
so a whole coefficient sweep rides in one forward. :class:`PositionTracker` knows, for every
token of the current call, its absolute real-token index (pads excluded) and each row's prompt
length, so positions are right with the KV cache on or off, left or right padding, batched or
alone. :func:`apply_terms` returns new hidden states with the terms applied in order (never in
place).

Example:
    >>> import torch
    >>> from steerlab.vector import SteeringVector
    >>> from steerlab.steering.spec import SteeringSpec
    >>> vec = SteeringVector.from_directions({0: torch.ones(2)})
    >>> plan = compile_terms([SteeringSpec(vec, coefficient=3.0)], None, n_layers=1)
    >>> tracker = PositionTracker()
    >>> tracker.set_call(torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool))
    >>> apply_terms(torch.zeros(1, 2, 2), plan[("block_output", 0)], tracker)[0, 1].tolist()
    [3.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from steerlab.errors import SteerlabError
from steerlab.steering.spec import Condition, SteeringSpec, check_spec, parse_positions
from steerlab.util.vocabulary import Operator, Site

#: What a term does: one of the steering operators, or ``"gate"`` (evaluate a condition).
TermOperator = Operator | Literal["gate"]
Plan = dict[tuple[Site, int], list["Term"]]


@dataclass
class Term:
    """One operation at one layer, possibly restricted to some rows with per-row operands.

    ``operand`` is the number the operator takes (:meth:`SteeringSpec.operand
    <steerlab.steering.spec.SteeringSpec.operand>`): add's coefficient, ablate's fraction or
    clamp's target value.
    """

    operator: TermOperator
    direction: torch.Tensor  # raw for add, unit for ablate/clamp; [d] or [n_pos, d]
    positions: str
    preserve_norm: bool
    row_operand: torch.Tensor | None  # [B] per-row operand (0 where the row is not steered)
    operand: float = 1.0
    row_mask: torch.Tensor | None = None  # [B] bool, rows this term touches
    gate: Gate | None = None  # steer only the rows whose condition fires (or, for the
    #                           operator "gate", the condition this term evaluates)
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


@dataclass(eq=False)
class Gate:
    """One condition's per-row decision for the current batch (set at the prefill).

    ``scores[b]`` is row b's similarity, ``values[b]`` whether its condition fires.
    """

    condition: Condition
    direction: torch.Tensor
    scores: torch.Tensor | None = None
    values: torch.Tensor | None = None

    def compute(self, hidden: torch.Tensor, tracker: PositionTracker) -> None:
        """Score each row on its prompt tokens (pads excluded) and decide its gate."""
        positions = "prompt" if self.condition.aggregate == "mean" else "last_prompt:1"
        mask = tracker.mask(positions).to(hidden.device, torch.float32)
        h = hidden.float()
        c = self.direction.to(h.device, torch.float32)
        if self.condition.mode == "cast":
            projected = torch.tanh((h @ c)[..., None] * c / (c @ c))
            sim = torch.nn.functional.cosine_similarity(h, projected, dim=-1, eps=1e-12)
        else:
            sim = torch.nn.functional.cosine_similarity(h, c.expand_as(h), dim=-1, eps=1e-12)
        counts = mask.sum(-1)
        if bool((counts == 0).any()):
            raise SteerlabError("conditional steering: a row has no prompt tokens to read the "
                                "condition from")
        self.scores = ((sim * mask).sum(-1) / counts).cpu()
        fire = (self.scores > self.condition.threshold
                if self.condition.comparator == "greater"
                else self.scores < self.condition.threshold)
        self.values = fire

    def select(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` (a batch that lost some rows)."""
        if self.scores is not None and self.values is not None:
            self.scores, self.values = self.scores[index], self.values[index]


class PositionTracker:
    """Per-call absolute real-token indices and per-row prompt lengths for one steer context.

    Fed by a pre-hook on the blocks' parent module; steerlab's own engines may also call
    :meth:`set_call` directly when they run blocks themselves.

    Example:
        >>> t = PositionTracker(prompt_lengths=[2])
        >>> t.set_call(torch.tensor([[0, 1, 2]]), torch.ones(1, 3, dtype=torch.bool))
        >>> t.mask("generation").tolist()
        [[False, False, True]]
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
        self.prefill = True  # the current call holds each row's whole prompt
        self._masks: dict[str, torch.Tensor] = {}

    def set_call(self, real_index: torch.Tensor, valid: torch.Tensor,
                 prefill: bool = True) -> None:
        self.real_index, self.valid, self.prefill = real_index, valid, prefill
        self._masks = {}

    def select(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` (a generation whose finished rows left the batch)."""
        for name in ("prompt_lengths", "instruction_lengths"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[index.cpu()])
        if self._prompt_ids is not None:
            self._prompt_ids = [self._prompt_ids[int(i)] for i in index]

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
        self.set_call(real, valid, prefill=past_len == 0)

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
        where = parse_positions(positions)
        kind = where.kind
        if kind == "all":
            out = valid
        elif kind == "front":
            out = valid & (real < n_pos)
        elif kind == "window":
            out = valid & (real >= where.start)
            if where.stop is not None:
                out = out & (real < where.stop)
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
                out = valid & (real < plen) & (real >= plen - where.count)
        self._masks[key] = out
        return out


def apply_terms(hidden: torch.Tensor, terms: Sequence[Term],
                tracker: PositionTracker) -> torch.Tensor:
    """Return a new hidden-state tensor with ``terms`` applied in order (never in place)."""
    for term in terms:
        if term.operator == "gate":  # evaluate a condition (on the prefill only)
            assert term.gate is not None
            if tracker.prefill or term.gate.values is None:
                if not tracker.prefill:
                    raise SteerlabError(
                        f"conditional steering: the condition at layer "
                        f"{term.gate.condition.layer} first ran on a decode step; run the "
                        "prompt through the model first (generation does)")
                term.gate.compute(hidden, tracker)
            continue
        direction = term.direction_as(hidden)
        if direction.shape[-1] != hidden.shape[-1]:
            raise SteerlabError(f"vector width {direction.shape[-1]} does not match hidden "
                                f"states of width {hidden.shape[-1]}")
        n_pos = direction.shape[0] if direction.ndim == 2 else 1
        mask = tracker.mask(term.positions, n_pos).to(hidden.device, hidden.dtype)
        if mask.shape != hidden.shape[:2]:
            raise SteerlabError(f"positions mask {list(mask.shape)} does not fit hidden states "
                                f"{list(hidden.shape[:2])}")
        if term.row_mask is not None:
            if term.row_mask.shape[0] != hidden.shape[0]:
                raise SteerlabError(f"per-row steering was given {term.row_mask.shape[0]} rows "
                                    f"but the batch has {hidden.shape[0]}")
            mask = mask * term.row_mask.to(hidden.device, hidden.dtype)[:, None]
        if term.gate is not None:
            if term.gate.values is None:
                raise SteerlabError("conditional steering: the condition was not evaluated on "
                                    "this batch's prompt")
            mask = mask * term.gate.values.to(hidden.device, hidden.dtype)[:, None]
        if term.row_operand is not None:
            weight = mask * term.row_operand.to(hidden.device, hidden.dtype)[:, None]
        else:
            weight = mask * term.operand
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
            else:  # clamp: set the component along the direction to the target
                hidden = hidden + (mask * (weight - projection * mask))[..., None] * direction
        if before is not None:
            after = hidden.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            hidden = torch.where(mask[..., None] > 0, hidden * (before / after), hidden)
    return hidden


def compile_terms(specs: Sequence[SteeringSpec], row_specs: Sequence[Sequence[SteeringSpec]] | None,
                  n_layers: int) -> Plan:
    """Group specs into per-(site, layer) term lists; per-row adds of one vector are fused.

    A spec with a :class:`~steerlab.steering.spec.Condition` gets a gate: one ``"gate"`` term
    at the condition's site evaluates it (first in its list), and the spec's terms steer only
    the rows where it fires. A behaviour layer that runs before its condition is refused.
    """
    plan: Plan = {}
    gates: dict[int, Gate] = {}

    def gate_for(spec: SteeringSpec, layer: int) -> Gate | None:
        condition = spec.condition
        if condition is None:
            return None
        order = 2 * layer + (0 if spec.vector.site == "block_input" else 1)
        if order < condition.order:
            raise SteerlabError(f"conditional steering: behaviour layer {layer} "
                                f"({spec.vector.site}) runs before the condition at layer "
                                f"{condition.layer} ({condition.site}) is known; use "
                                "behaviour layers at or above the condition layer")
        return gates[id(condition)]

    # every condition's gate term first, so later per-row bookkeeping of indices holds
    for spec in [*specs, *(x for row in row_specs or [] for x in row)]:
        check_spec(spec)
        condition = spec.condition
        if condition is None or id(condition) in gates:
            continue
        if not 0 <= condition.layer < n_layers:
            raise SteerlabError(f"condition layer {condition.layer} out of range: model has "
                                f"{n_layers} layers")
        new_gate = Gate(condition, condition.vector.directions[condition.layer])
        gates[id(condition)] = new_gate
        plan.setdefault((condition.site, condition.layer), []).append(
            Term("gate", new_gate.direction, "all", False, None, gate=new_gate))

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
        unit: torch.Tensor = raw / norm
        return unit

    for spec in specs:
        check_spec(spec)
        for layer in spec.resolved_layers(n_layers):
            gate = gate_for(spec, layer)
            plan.setdefault((spec.vector.site, layer), []).append(Term(
                spec.operator, direction_for(spec, layer), spec.positions, spec.preserve_norm,
                None, spec.operand(layer), gate=gate))
    if row_specs is not None:
        batch = len(row_specs)
        # Terms of the same (vector, layer, operator, positions) are fused across rows, but a
        # row may join an existing term only if that term comes after every term the row
        # already uses at that site/layer: each row's own order is kept exactly.
        fused: dict[tuple[Any, ...], tuple[Term, int]] = {}
        for row, row_list in enumerate(row_specs):
            last: dict[tuple[Site, int], int] = {}  # site/layer -> index of the row's last term
            for spec in row_list:
                check_spec(spec)
                for layer in spec.resolved_layers(n_layers):
                    site_key = (spec.vector.site, layer)
                    terms = plan.setdefault(site_key, [])
                    gate = gate_for(spec, layer)
                    key = (spec.vector.site, layer, id(spec.vector.directions[layer]),
                           spec.operator, spec.positions, spec.preserve_norm, id(gate))
                    found = fused.get(key)
                    if found is not None and found[1] > last.get(site_key, -1):
                        term, index = found
                    else:
                        term = Term(spec.operator, direction_for(spec, layer), spec.positions,
                                    spec.preserve_norm, torch.zeros(batch),
                                    row_mask=torch.zeros(batch, dtype=torch.bool), gate=gate)
                        index = len(terms)
                        terms.append(term)
                        fused[key] = (term, index)
                    assert term.row_operand is not None and term.row_mask is not None
                    term.row_operand[row] = spec.operand(layer)
                    term.row_mask[row] = True
                    last[site_key] = index
    return plan


def select_rows(plan: Plan, index: torch.Tensor) -> None:
    """Keep only the batch rows ``index`` in every per-row term and gate of ``plan``."""
    seen: set[int] = set()
    for terms in plan.values():
        for term in terms:
            if term.row_operand is not None:
                term.row_operand = term.row_operand[index.cpu()]
            if term.row_mask is not None:
                term.row_mask = term.row_mask[index.cpu()]
            if term.gate is not None and id(term.gate) not in seen:
                seen.add(id(term.gate))
                term.gate.select(index.cpu())
