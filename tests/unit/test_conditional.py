"""Conditional steering (CAST): the gate is computed per row from that row's prompt tokens.

* ``cast`` similarity equals a direct implementation of cos(h, tanh(P h)), P = ccᵀ/(c·c),
  averaged over the prompt's real tokens; ``cosine`` is cos(h, c).
* In a left-padded batch each row's gate equals the gate of that row alone; rows whose
  condition does not fire are bit-identical to the unsteered model, rows where it fires are
  steered exactly as unconditional steering would.
* The gate is fixed at the prefill: generated tokens never change it, and it follows its row
  when other rows finish early.
* A behaviour layer that runs before the condition is refused.
"""

from __future__ import annotations

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.model.arch import find_blocks
from steerlab.model.load import as_loaded
from steerlab.scoring.generate import GenerationRow, run_rows
from steerlab.steering.hooks import steer
from steerlab.steering.spec import Condition, SteeringSpec
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.util.seq import left_pad
from steerlab.vector import SteeringVector

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
COND_LAYER = 1


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("llama")


def _inputs_of_block(model: torch.nn.Module, ids: list[int], layer: int) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    block = find_blocks(model)[1][layer]
    handle = block.register_forward_pre_hook(
        lambda _m, args, kw: seen.append((args[0] if args else kw["hidden_states"]).detach()),
        with_kwargs=True)
    try:
        with torch.inference_mode():
            model(torch.tensor([ids]))
    finally:
        handle.remove()
    return seen[0][0]


def _direct_cast(h: torch.Tensor, c: torch.Tensor) -> float:
    """CAST's similarity written out: mean over tokens of cos(h_t, tanh(P h_t))."""
    proj = torch.outer(c, c) / (c @ c)
    sims = [torch.nn.functional.cosine_similarity(ht, torch.tanh(proj @ ht), dim=0)
            for ht in h.double()]
    return float(torch.stack(sims).mean())


def _condition(vec: SteeringVector, threshold: float, mode: str = "cast",
               comparator: str = "greater") -> Condition:
    return Condition(vec, layer=COND_LAYER, threshold=threshold, mode=mode,
                     comparator=comparator)


@pytest.mark.parametrize("mode", ["cast", "cosine"])
def test_similarity_equals_the_formula_per_row_in_a_padded_batch(model: torch.nn.Module,
                                                                  mode: str) -> None:
    c = torch.randn(64, generator=torch.Generator().manual_seed(1))
    cond_vec = SteeringVector.from_directions({COND_LAYER: c})
    behaviour = SteeringVector.from_directions({2: torch.randn(64)})
    spec = SteeringSpec(behaviour, coefficient=1.0, condition=_condition(cond_vec, 0.0, mode))
    batch = left_pad(PROMPTS, 0)
    batch.pop("position_ids")
    with steer(model, spec) as handle, torch.inference_mode():
        model(**batch)
        gate = next(t.gate for terms in handle._entry.plan.values()  # type: ignore[union-attr]
                    for t in terms if t.operator == "gate")
    for row, ids in enumerate(PROMPTS):
        h = _inputs_of_block(model, ids, COND_LAYER)
        if mode == "cast":
            expected = _direct_cast(h, c.double())
        else:
            expected = float(torch.nn.functional.cosine_similarity(
                h.double(), c.double().expand_as(h), dim=-1).mean())
        assert gate.scores[row].item() == pytest.approx(expected, abs=1e-5), row


def _logits(model: torch.nn.Module, ids: list[int], spec: SteeringSpec | None) -> torch.Tensor:
    with torch.inference_mode():
        if spec is None:
            return model(torch.tensor([ids])).logits[0]
        with steer(model, spec):
            return model(torch.tensor([ids])).logits[0]


def test_rows_are_steered_exactly_when_their_condition_fires(model: torch.nn.Module) -> None:
    c = torch.randn(64, generator=torch.Generator().manual_seed(2))
    cond_vec = SteeringVector.from_directions({COND_LAYER: c})
    behaviour = SteeringVector.from_directions({2: torch.randn(64) * 3})
    plain = SteeringSpec(behaviour, coefficient=2.0)
    sims = [_direct_cast(_inputs_of_block(model, ids, COND_LAYER), c.double())
            for ids in PROMPTS]
    ranked = sorted(sims)
    threshold = (ranked[1] + ranked[2]) / 2  # between the rows: one fires, two do not
    gated = SteeringSpec(behaviour, coefficient=2.0, condition=_condition(cond_vec, threshold))
    batch = left_pad(PROMPTS, 0)
    batch.pop("position_ids")
    with torch.inference_mode(), steer(model, gated):
        together = model(**batch).logits
    fired = 0
    for row, ids in enumerate(PROMPTS):
        alone = _logits(model, ids, gated)
        want = _logits(model, ids, plain if sims[row] > threshold else None)
        fired += sims[row] > threshold
        assert torch.equal(alone, want), row
        assert torch.allclose(together[row, -len(ids):], alone, atol=1e-5), row
    assert fired == 1
    less = SteeringSpec(behaviour, coefficient=2.0,
                        condition=_condition(cond_vec, threshold, comparator="less"))
    assert torch.equal(_logits(model, PROMPTS[1], less),
                       _logits(model, PROMPTS[1], plain if sims[1] < threshold else None))


def test_the_gate_is_fixed_at_the_prefill_and_follows_its_row() -> None:
    lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    c = torch.randn(64, generator=torch.Generator().manual_seed(3))
    cond_vec = SteeringVector.from_directions({COND_LAYER: c})
    behaviour = SteeringVector.from_directions({2: torch.randn(64) * 4})
    sims = [_direct_cast(_inputs_of_block(lm.model, ids, COND_LAYER), c.double())
            for ids in PROMPTS]
    ranked = sorted(sims)
    threshold = (ranked[0] + ranked[1]) / 2  # two rows fire
    cond = _condition(cond_vec, threshold)
    none: frozenset[int] = frozenset()  # no stop ids: every row runs to its own budget
    gated = [GenerationRow(ids, max_new_tokens=n, stop=none, steering=[
        SteeringSpec(behaviour, coefficient=2.0, condition=cond)])
        for ids, n in zip(PROMPTS, (6, 2, 4), strict=True)]  # rows finish at different steps
    want = [GenerationRow(ids, max_new_tokens=n, stop=none, steering=[SteeringSpec(
        behaviour, coefficient=2.0)] if s > threshold else [])
        for ids, n, s in zip(PROMPTS, (6, 2, 4), sims, strict=True)]
    got, expected = run_rows(lm, gated), run_rows(lm, want)
    assert got == expected
    assert [len(x) for x in got] == [6, 2, 4]
    unsteered = run_rows(lm, [GenerationRow(ids, max_new_tokens=6, stop=none)
                              for ids in PROMPTS])
    assert got[0] != unsteered[0] or got[2] != unsteered[2]  # something was steered


def test_a_behaviour_layer_before_the_condition_is_refused(model: torch.nn.Module) -> None:
    cond_vec = SteeringVector.from_directions({2: torch.randn(64)})
    behaviour = SteeringVector.from_directions({1: torch.randn(64)})
    spec = SteeringSpec(behaviour, coefficient=1.0,
                        condition=Condition(cond_vec, layer=2, threshold=0.0))
    with pytest.raises(SteerlabError, match="runs before the condition"), steer(model, spec):
        pass


def test_condition_arguments_are_checked() -> None:
    vec = SteeringVector.from_directions({1: torch.randn(8)})
    for kwargs, match in (({"comparator": "above"}, "comparator"), ({"mode": "dot"}, "mode"),
                          ({"layer": 3}, "no direction for layer 3"),
                          ({"threshold": float("nan")}, "finite")):
        args = {"vector": vec, "layer": 1, "threshold": 0.0, **kwargs}
        with pytest.raises(SteerlabError, match=match):
            Condition(**args)  # type: ignore[arg-type]
