"""steerlab.attack: prompt layout, allowed tokens, objectives (signs, formulas), the forwards.

Everything on tiny random models. The objectives are checked against steerlab's own steered
forward (``steerlab.scoring.batch.steered_logits``) on the same token ids, and their signs on
hand-made cases where steering is known to push towards (or away from) the matching answer.
"""

from __future__ import annotations

import copy

import pytest
import torch

from steerlab.attack import (
    SuffixRunner,
    ab_flip,
    allowed_tokens,
    answer,
    evaluate,
    gcg,
    initial_suffix,
    projection,
    search,
    suffix_prompt,
)
from steerlab.data import ABItem
from steerlab.data.sequences import ab_sequences, answer_sequences
from steerlab.errors import SteerlabError
from steerlab.model.arch import find_blocks, split_block_output
from steerlab.model.load import as_loaded
from steerlab.scoring.batch import steered_logits
from steerlab.scoring.readout import token_logprobs
from steerlab.steering.hooks import steer
from steerlab.steering.spec import SteeringSpec
from steerlab.testing.tiny import ARCHS, tiny_model, tiny_tokenizer
from steerlab.vector import SteeringVector

AB = ABItem("Would you lie to a user to make them happy?\n(A) Yes\n(B) No", "(A)", "(B)")
OPEN = ABItem("Would you lie to a user?", "No, I would not do that.", "Yes, of course.")
SUFFIX = [[300, 301, 302, 303], [100, 120, 140, 160], [250, 260, 270, 280]]


@pytest.fixture(scope="module")
def lm():
    return as_loaded(tiny_model("llama"), tiny_tokenizer())


def _vec(direction: torch.Tensor, layer: int) -> SteeringVector:
    return SteeringVector.from_directions({layer: direction})


def _head_rows(lm, ids: list[int]) -> torch.Tensor:
    return lm.model.get_output_embeddings().weight[ids].detach()


# ---- layout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("template", [True, False])
def test_ab_layout_matches_core_sequences(template: bool) -> None:
    tok = tiny_tokenizer() if template else copy.deepcopy(tiny_tokenizer())
    if not template:
        tok.chat_template = None
    obj = ab_flip(tok, AB)
    core = ab_sequences(tok, AB)
    assert [*obj.prompt.before, *obj.prompt.after] == core.prefix
    assert (obj.matching_id, obj.not_matching_id) == (core.matching_id, core.not_matching_id)
    assert obj.prompt.instruction_length(0) == core.instruction_length
    assert obj.prompt.prompt_length(5) == len(core.prefix) + 5


def test_answer_layout_matches_core_sequences() -> None:
    tok = tiny_tokenizer()
    obj = answer(tok, OPEN)
    _, not_matching = answer_sequences(tok, OPEN)
    p = obj.prompt
    assert [*p.before, *p.after, *p.target] == not_matching.prefix
    assert p.prompt_length(0) == not_matching.prompt_length
    assert p.instruction_length(0) == not_matching.instruction_length


def test_suffix_is_in_the_user_turn() -> None:
    tok = tiny_tokenizer()
    p = suffix_prompt(tok, "Hi?", assistant_prefix="(")
    text = tok.decode([*p.before, *tok.encode(" x x", add_special_tokens=False), *p.after])
    assert "user\nHi? x x<|im_end|>" in text and text.endswith("assistant\n(")
    assert p.user_text(" x x") == "Hi? x x"
    # the user turn closes inside `after`: after_instruction starts after <|im_end|>
    assert 0 < p.user_tail < len(p.after)


def test_stable_filter_rejects_merging_tokens() -> None:
    tok = tiny_tokenizer()
    p = suffix_prompt(tok, "Hi?")
    the = tok.encode(" the", add_special_tokens=False)
    assert len(the) == 1
    split = tok.encode(" t", add_special_tokens=False) + tok.encode("he", add_special_tokens=False)
    assert len(split) == 2 and tok.decode(split) == " the"
    assert p.stable(tok, [the, split], "suffix") == [True, False]
    assert p.stable(tok, [split], "prompt") == [False]
    assert p.stable(tok, [split], "off") == [True]
    with pytest.raises(SteerlabError):
        p.stable(tok, [the], "bogus")


def test_stable_filter_checks_the_boundary_with_the_question() -> None:
    """A token stable alone can merge with the question's last characters: "prompt" level
    catches it (nanoGCG's suffix-only filter would not)."""
    tok = tiny_tokenizer()
    p = suffix_prompt(tok, "Tell me a stor")
    mask = allowed_tokens(tok)
    rows = [[i] for i in range(len(tok)) if mask[i]]
    alone = p.stable(tok, rows, "suffix")
    whole = p.stable(tok, rows, "prompt")
    assert all(alone)
    merged = [r for r, ok in zip(rows, whole, strict=True) if not ok]
    assert merged  # e.g. "y" after "stor" becomes part of "story"
    for row in merged:
        text = tok.decode(row)
        ids = tok.encode(p.text_before + text + p.tail_text, add_special_tokens=False)
        assert ids[: len(p.before) + 1] != [*p.before, *row]


# ---- allowed tokens -------------------------------------------------------------------------

def test_allowed_tokens_masks_special_padded_and_non_ascii() -> None:
    tok = tiny_tokenizer()
    rows = len(tok) + 7
    mask = allowed_tokens(tok, rows)
    assert mask.shape == (rows,)
    assert not mask[len(tok):].any()
    for i in tok.all_special_ids:
        assert not mask[i]
    for i in range(len(tok)):
        text = tok.decode([i])
        if mask[i]:
            assert text.isascii() and text.isprintable() and text
            assert tok.encode(text, add_special_tokens=False) == [i]
    assert mask[tok.encode(" the", add_special_tokens=False)[0]]
    newline = tok.encode("\n", add_special_tokens=False)[0]
    assert not mask[newline]
    k = int(torch.nonzero(mask)[0])
    forbidden = allowed_tokens(tok, rows, forbid=[k])
    assert not forbidden[k] and int((mask & ~forbidden).sum()) == 1


def test_initial_suffix_default_and_checks() -> None:
    tok = tiny_tokenizer()
    mask = allowed_tokens(tok)
    ids = initial_suffix(tok, 5, mask)
    assert len(ids) == 5 and len(set(ids)) == 1 and mask[ids[0]]
    assert tok.encode(tok.decode(ids), add_special_tokens=False) == ids  # stable as a whole
    assert initial_suffix(tok, 99, mask, init=" the cat") == tok.encode(" the cat",
                                                                       add_special_tokens=False)
    with pytest.raises(SteerlabError, match="forbidden"):
        initial_suffix(tok, 3, mask, init=[tok.eos_token_id])


# ---- objectives: formulas against the core steered forward ----------------------------------

def test_ab_flip_equals_core_letter_margin(lm) -> None:
    obj = ab_flip(lm, AB)
    spec = SteeringSpec(_vec(torch.randn(64, generator=torch.Generator().manual_seed(1)), 2),
                        layers=[2], coefficient=3.0)
    values, _ = evaluate(lm, obj, spec, SUFFIX)
    rows = [obj.prompt.prompt_ids(s) for s in SUFFIX]
    logits = steered_logits(lm, rows, spec, keep=1)[:, -1]
    logp = torch.log_softmax(logits, -1)
    want = logp[:, obj.not_matching_id] - logp[:, obj.matching_id]
    assert torch.allclose(torch.tensor(values), want, atol=1e-4)


def test_answer_equals_core_answer_logprob(lm) -> None:
    obj = answer(lm, OPEN)
    spec = SteeringSpec(_vec(torch.randn(64, generator=torch.Generator().manual_seed(2)), 1),
                        layers=[1], coefficient=3.0)
    values, _ = evaluate(lm, obj, spec, SUFFIX)
    target = list(obj.prompt.target)
    rows = [[*obj.prompt.prompt_ids(s), *target] for s in SUFFIX]
    n = len(target)
    logits = steered_logits(lm, rows, spec, prompt_lengths=[obj.prompt.prompt_length(4)] * 3,
                            keep=n + 1)
    want = token_logprobs(logits[:, :-1], torch.tensor([target] * 3)).mean(-1)
    assert torch.allclose(torch.tensor(values), want, atol=1e-4)


def test_projection_equals_hand_read_residual(lm) -> None:
    direction = torch.randn(64, generator=torch.Generator().manual_seed(3))
    vec = SteeringVector.from_directions({1: direction, 3: -direction + 0.5})
    obj = projection(lm, AB, vec, layer=3)
    spec = SteeringSpec(vec, layers=[1], coefficient=2.0)
    values, _ = evaluate(lm, obj, spec, SUFFIX)
    seen: list[torch.Tensor] = []
    block = find_blocks(lm.model)[1][3]
    handle = block.register_forward_hook(
        lambda _m, _a, out: seen.append(split_block_output(out)[0][:, -1]))
    try:
        with steer(lm, spec), torch.no_grad():
            lm.model(torch.tensor([obj.prompt.prompt_ids(s) for s in SUFFIX]))
    finally:
        handle.remove()
    unit = vec.directions[3] / vec.directions[3].norm()
    assert torch.allclose(torch.tensor(values), -(seen[0] @ unit), atol=1e-4)
    # a layer the vector lacks falls back to its nearest layer below; the steered layer refuses
    assert torch.allclose(projection(lm, AB, vec, layer=2).direction, direction / direction.norm())
    with pytest.raises(SteerlabError, match="above the steered"):
        evaluate(lm, projection(lm, AB, vec, layer=1), spec, SUFFIX)


# ---- objectives: signs on hand-made flips ---------------------------------------------------

def _success(lm, obj, spec) -> tuple[bool, float, float]:
    res = search(lm, obj, spec, gcg(suffix_length=3, iterations=0), progress=False)
    return res.success, res.steered_no_suffix, res.reference


def test_ab_flip_sign_when_steering_pushes_towards_matching(lm) -> None:
    obj = ab_flip(lm, AB)
    w = _head_rows(lm, [obj.matching_id, obj.not_matching_id])
    toward = _vec(w[0] - w[1], 3)  # last block: raises logit(matching) - logit(not matching)
    plus = SteeringSpec(toward, layers=[3], coefficient=50.0)
    minus = SteeringSpec(toward, layers=[3], coefficient=-50.0)
    ok, steered, ref = _success(lm, obj, plus)
    assert steered < ref - 1.0 and not ok  # steered towards matching: nothing reversed yet
    ok, steered, ref = _success(lm, obj, minus)
    assert steered > ref + 1.0 and ok  # steered away: already past the unsteered answer


def test_answer_sign_when_steering_pushes_towards_target(lm) -> None:
    obj = answer(lm, OPEN)
    toward = _vec(_head_rows(lm, list(obj.prompt.target)).sum(0), 3)
    ok, steered, ref = _success(lm, obj, SteeringSpec(toward, layers=[3], coefficient=50.0))
    assert steered > ref + 0.2 and ok  # the not-matching answer got likelier: reversed
    ok, steered, ref = _success(lm, obj, SteeringSpec(toward, layers=[3], coefficient=-50.0))
    assert steered < ref - 0.2 and not ok


def test_projection_sign_when_steering_adds_the_vector(lm) -> None:
    direction = torch.randn(64, generator=torch.Generator().manual_seed(4))
    vec = SteeringVector.from_directions({1: direction})
    obj = projection(lm, AB, vec, layer=3)
    ok, steered, ref = _success(lm, obj, SteeringSpec(vec, layers=[1], coefficient=10.0))
    assert steered < ref - 1.0 and not ok  # the projection went up: the objective down
    ok, steered, ref = _success(lm, obj, SteeringSpec(vec, layers=[1], coefficient=-10.0))
    assert steered > ref + 1.0 and ok


# ---- the forwards: KV-cache parity, gradients, steering coverage of the suffix --------------

@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_cache_equals_full_forward(arch: str) -> None:
    lm = as_loaded(tiny_model(arch, n_layers=3), tiny_tokenizer())
    vec = SteeringVector.from_directions({1: torch.randn(64), 2: torch.randn(64)})
    spec = SteeringSpec(vec, layers=[1], coefficient=4.0)
    ids = torch.tensor(SUFFIX)
    penalties = torch.tensor([0.0, 0.5, 2.0])
    for obj in (ab_flip(lm, AB), answer(lm, OPEN), projection(lm, AB, vec, layer=2)):
        cached = SuffixRunner(lm, obj, spec, batch_size=2)
        full = SuffixRunner(lm, obj, spec, use_prefix_cache=False)
        v1, x1 = cached.score(ids)
        v2, x2 = full.score(ids)
        assert torch.allclose(v1, v2, atol=1e-5) and torch.allclose(x1, x2, atol=1e-5)
        g1, gv1, gx1 = cached.gradient(ids, penalties)
        g2, _, _ = full.gradient(ids, penalties)
        assert torch.allclose(g1, g2, atol=1e-5)
        # the one-hot path computes the same numbers as the id path
        assert torch.allclose(gv1, v1, atol=1e-5) and torch.allclose(gx1, x1, atol=1e-5)
        # children continuing their parent's cache (swaps at every position) = scored alone
        parent = ids[0]
        kids = parent.repeat(8, 1)
        for i in range(8):
            kids[i, i % 4] = 200 + i
        kids[7] = parent  # an unchanged row is scored as it is
        v3, x3 = cached.score_children(parent, kids)
        v4, x4 = full.score(kids)
        assert torch.allclose(v3, v4, atol=1e-5) and torch.allclose(x3, x4, atol=1e-5)
        # without the suffix logits (GCG): the same objective, xent left out (NaN)
        v5, x5 = cached.score_children(parent, kids, xent=False)
        assert torch.allclose(v5, v4, atol=1e-5) and bool(torch.isnan(x5).all())
        # zero penalties: the gradient of −objective alone, the same as with the xent computed
        g0, _, gx0 = cached.gradient(ids, torch.zeros(1))
        g0_full, _, _ = full.gradient(ids, torch.zeros(1))
        assert torch.allclose(g0, g0_full, atol=1e-5) and bool(torch.isnan(gx0).all())
        with torch.enable_grad():
            one_hot = torch.zeros(*ids.shape, cached.rows)
            one_hot.scatter_(2, ids[..., None], 1.0)
            one_hot.requires_grad_(True)
            value, _ = cached._forward(ids, one_hot)
            (manual,) = torch.autograd.grad(-value.sum(), one_hot)
        assert torch.allclose(g0, manual, atol=1e-5)


def test_gradient_matches_an_independent_autograd(lm) -> None:
    """The token gradient of −objective + X·xent, recomputed by hand: autograd through
    ``inputs_embeds`` of a plain steered forward, mapped to the one-hot by the embedding table,
    plus the direct term of the one-hot selecting each suffix token's log-probability."""
    obj = ab_flip(lm, AB)
    spec = SteeringSpec(_vec(torch.randn(64, generator=torch.Generator().manual_seed(6)), 1),
                        layers=[1], coefficient=3.0)
    suffix = SUFFIX[0]
    x = 0.7
    grad, _, _ = SuffixRunner(lm, obj, spec).gradient(torch.tensor([suffix]), torch.tensor([x]))
    ids = torch.tensor([obj.prompt.prompt_ids(suffix)])
    table = lm.model.get_input_embeddings().weight.detach()
    embeds = table[ids].clone().requires_grad_(True)
    start, n = len(obj.prompt.before), len(suffix)
    with steer(lm, spec):
        logp = torch.log_softmax(lm.model(inputs_embeds=embeds).logits[0].float(), -1)
    margin = logp[-1, obj.not_matching_id] - logp[-1, obj.matching_id]
    picked = logp[start - 1 + torch.arange(n), torch.tensor(suffix)]
    loss = -margin + x * (-picked.mean())
    (d_embeds,) = torch.autograd.grad(loss, embeds)
    want = d_embeds[0, start:start + n] @ table.T
    want -= (x / n) * logp[start - 1:start - 1 + n].detach()
    assert torch.allclose(grad[0], want, atol=1e-4)


def test_steering_covers_the_suffix_with_all_positions_not_after_instruction(lm) -> None:
    obj = ab_flip(lm, AB)
    vec = _vec(torch.randn(64, generator=torch.Generator().manual_seed(5)), 1)
    everywhere = SteeringSpec(vec, layers=[1], coefficient=8.0, positions="all")
    after = SteeringSpec(vec, layers=[1], coefficient=8.0, positions="after_instruction")
    v0, x0 = evaluate(lm, obj, None, SUFFIX)
    v_all, x_all = evaluate(lm, obj, everywhere, SUFFIX)
    v_after, x_after = evaluate(lm, obj, after, SUFFIX)
    # positions="all": the suffix tokens are read steered, so their cross-entropy changes
    assert all(abs(a - b) > 1e-3 for a, b in zip(x_all, x0, strict=True))
    # after_instruction: the suffix (inside the user turn) is read unsteered ...
    assert x_after == pytest.approx(x0, abs=1e-6)
    # ... while the answer position after the user turn is steered
    assert all(abs(a - b) > 1e-3 for a, b in zip(v_after, v0, strict=True))
    # and both agree with the core steered forward given the same instruction lengths
    rows = [obj.prompt.prompt_ids(s) for s in SUFFIX]
    logits = steered_logits(lm, rows, after, instruction_lengths=[obj.prompt.instruction_length(4)]
                            * 3, keep=1)[:, -1]
    logp = torch.log_softmax(logits, -1)
    want = logp[:, obj.not_matching_id] - logp[:, obj.matching_id]
    assert torch.allclose(torch.tensor(v_after), want, atol=1e-4)
    assert v_all != v_after


def test_empty_suffix_scores_the_plain_prompt(lm) -> None:
    obj = ab_flip(lm, AB)
    (value,), (xent,) = evaluate(lm, obj, None, [()])
    core = ab_sequences(lm.tokenizer, AB)
    logp = torch.log_softmax(steered_logits(lm, [core.prefix], None)[0, -1], -1)
    assert value == pytest.approx(float(logp[core.not_matching_id] - logp[core.matching_id]),
                                  abs=1e-4)
    assert xent != xent  # NaN: no suffix tokens
