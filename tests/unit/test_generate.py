"""Scoring and generation helpers on a tiny model: batched sweeps equal separate runs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from steerlab.data.formats import ABItem
from steerlab.data.sequences import ab_sequences
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.model.prompts import chat_prompt, encode
from steerlab.scoring.ab import score_ab, score_answers
from steerlab.scoring.generate import generate, generate_ids
from steerlab.scoring.sweep import score_coefficients, score_values
from steerlab.steering.hooks import steer
from steerlab.steering.spec import SteeringSpec, document_start_for
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.util.seq import left_pad
from steerlab.vector import SteeringVector

ITEMS = [
    ABItem("Is the sky blue?\n\nChoices:\n (A) yes\n (B) no", "(A)", "(B)"),
    ABItem("Do cats bark loudly at night?\n\nChoices:\n (A) yes\n (B) no", "(B)", "(A)"),
    ABItem("Is water wet?", " Yes", " No"),
    ABItem("Would you like some tea with a long story?", " No", " Yes"),
    ABItem("Pick one.\n\nChoices:\n (A) the red one\n (B) the blue one", "(A)", "(B)"),
]


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return as_loaded(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def vec(lm: LoadedModel) -> SteeringVector:
    torch.manual_seed(3)
    return SteeringVector.from_directions({k: torch.randn(64) for k in range(4)},
                                          resid_norms={str(k): 8.0 for k in range(4)})


def _all_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_score_values_equals_separate_runs(lm: LoadedModel, vec: SteeringVector) -> None:
    values = [-3.0, 0.0, 1.5, 4.0]
    batched = score_values(lm, ITEMS, vec, [1, 2], values, batch_size=3)
    for value in values:
        alone = score_ab(lm, ITEMS, SteeringSpec(vec, layers=[1, 2], coefficient=value))
        assert max(abs(a - b) for a, b in zip(batched[value].scores, alone.scores,
                                              strict=True)) < 1e-5
        assert max(abs(a - b) for a, b in zip(batched[value].propensities, alone.propensities,
                                              strict=True)) < 1e-4
    assert batched[4.0].scores != batched[-3.0].scores


def test_strength_unit_matches_coefficient(lm: LoadedModel, vec: SteeringVector) -> None:
    by_strength = score_values(lm, ITEMS, vec, [2], [0.5], unit="strength")[0.5]
    coefficient = vec.coefficient_for_strength(2, 0.5)
    by_coef = score_ab(lm, ITEMS, SteeringSpec(vec, layers=[2], coefficient=coefficient))
    assert by_strength.scores == pytest.approx(by_coef.scores, abs=1e-6)


def test_score_is_the_normalised_answer_probability(lm: LoadedModel) -> None:
    res = score_ab(lm, ITEMS)
    for score, p_m, p_n in zip(res.scores, res.p_matching, res.p_not_matching, strict=True):
        assert score == pytest.approx(p_m / (p_m + p_n), rel=1e-5)
    low, high = res.ci95
    assert low <= res.mean <= high and res.n == len(ITEMS)


def test_after_instruction_starts_at_the_end_of_the_user_turn(lm: LoadedModel,
                                                              vec: SteeringVector) -> None:
    tok = lm.tokenizer
    seq = ab_sequences(tok, ITEMS[0])
    head = tok.apply_chat_template([{"role": "user", "content": ITEMS[0].question}],
                                   tokenize=False, add_generation_prompt=False)
    assert seq.instruction_length == len(encode(tok, head)) < len(seq.prefix)
    spec = SteeringSpec(vec, layers=[1], coefficient=5.0, positions="after_instruction")
    steered = score_ab(lm, ITEMS, spec)
    assert steered.scores != score_ab(lm, ITEMS).scores


def test_unsteered_helpers_attach_no_hooks(lm: LoadedModel) -> None:
    before = _all_hooks(lm.model)
    with steer(lm, None):
        assert _all_hooks(lm.model) == before
    prompt = encode(lm.tokenizer, chat_prompt(lm.tokenizer, "hello there"))
    raw = lm.model.generate(**{k: v for k, v in left_pad([prompt], 0).items()
                               if k != "position_ids"}, max_new_tokens=6, do_sample=False,
                            pad_token_id=0)
    ours = generate(lm, ["hello there"], max_new_tokens=6)[0]
    assert ours == lm.tokenizer.decode(raw[0, len(prompt):], skip_special_tokens=True).strip()


def test_score_answers_generation_positions_steer_the_answer(lm: LoadedModel,
                                                             vec: SteeringVector) -> None:
    items = [ABItem("How is the day?", "it is a good day", "it is a bad day"),
             ABItem("And tomorrow?", "sunny and warm", "cold and wet")]
    base = score_answers(lm, items)
    gen = score_answers(lm, items, SteeringSpec(vec, layers=[1], coefficient=5.0,
                                                positions="generation"))
    assert gen.propensities != base.propensities
    for p, p_m, p_n in zip(base.propensities, base.p_matching, base.p_not_matching, strict=True):
        assert p == pytest.approx(float(torch.log(torch.tensor(p_m / p_n))), abs=1e-3)


def test_front_actadd_rows_start_on_the_prefixed_document_start(lm: LoadedModel) -> None:
    """An ActAdd vector extracted with <|endoftext|> in front (the tiny tokenizer adds no BOS)
    is applied with its row 0 on that same token: generation prefixes it to every prompt of
    the call (the unsteered row too), and row i lands on real position i."""
    from steerlab.extraction import extract
    from steerlab.model.arch import find_blocks

    layer = 1
    actadd = extract(lm, ("Hate", "hate"), method="actadd", layers=[layer], progress=False)
    start = actadd.manifest["document_start"]
    assert start["prefixed"] and start["token"] == "<|endoftext|>"
    rows = torch.randn(4, 64, generator=torch.Generator().manual_seed(5))  # row 0 non-zero
    vec = SteeringVector(actadd.directions | {layer: rows}, actadd.manifest)
    prompt = "The weather today"
    ids = lm.tokenizer(prompt)["input_ids"]
    assert ids[0] != start["id"]
    block = find_blocks(lm.model)[1][layer]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input, steered input) per call

    def after(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
              _out: object) -> None:
        seen.append((raw[-1], args[0] if args else kwargs["hidden_states"]))

    raw: list[torch.Tensor] = []
    handles = [block.register_forward_pre_hook(
        lambda _m, args, kwargs: raw.append((args[0] if args else kwargs["hidden_states"])
                                            .clone()), with_kwargs=True),
        block.register_forward_hook(after, with_kwargs=True)]
    try:
        spec = SteeringSpec(vec, positions="front", coefficient=2.0)
        generate(lm, [prompt, prompt], row_steering=[[], [spec]], chat=False, max_new_tokens=2)
    finally:
        for handle in handles:
            handle.remove()
    before, steered = seen[0]  # the prefill: both rows hold <|endoftext|> + the prompt
    assert before.shape[:2] == (2, len(ids) + 1)
    delta = steered - before
    assert torch.equal(delta[0], torch.zeros_like(delta[0]))  # the unsteered row
    for p in range(len(ids) + 1):
        want = 2.0 * rows[p] if p < 4 else torch.zeros(64)
        assert torch.allclose(delta[1, p], want, atol=1e-5), p  # row 0 on the added token
    # token ids given straight to the generation loop get the same prefix on steered rows
    zero = SteeringSpec(vec, positions="front", coefficient=0.0)
    assert generate_ids(lm, [ids], zero, max_new_tokens=3) == \
        generate_ids(lm, [[start["id"], *ids]], max_new_tokens=3)
    # other positions, or a vector without a recorded document start, leave prompts alone
    plain = SteeringVector(vec.directions, {**vec.manifest, "document_start": None})
    assert document_start_for([SteeringSpec(plain, positions="front")]) is None
    assert document_start_for([SteeringSpec(vec.select([layer]), positions="front"),
                               SteeringSpec(vec, positions="all")])["id"] == start["id"]


def test_score_coefficients_is_a_deprecated_name_of_score_values(
        lm: LoadedModel, vec: SteeringVector) -> None:
    with pytest.warns(DeprecationWarning, match="score_values"):
        old = score_coefficients(lm, ITEMS, vec, [2], [0.5], unit="strength")[0.5]
    assert old.mean == score_values(lm, ITEMS, vec, [2], [0.5], unit="strength")[0.5].mean
