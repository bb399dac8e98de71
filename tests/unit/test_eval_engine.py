"""The sweep engine equals the naive loop (one steering context per cell) on eight archs."""

from __future__ import annotations

import warnings

import pytest
import torch

from steerlab.data.formats import ABItem
from steerlab.data.sequences import ab_sequences
from steerlab.errors import SteerlabError
from steerlab.model.load import as_loaded
from steerlab.scoring.sweep import SweepEngine, sweep_ab
from steerlab.testing.reference import naive_sweep
from steerlab.testing.tiny import ARCHS, tiny_model, tiny_tokenizer
from steerlab.vector import SteeringVector

ITEMS = [ABItem(f"Question {i}: is it {'very ' * (i % 4)}fine?\n\nChoices:\n (A) yes\n (B) no",
                "(A)" if i % 2 else "(B)", "(B)" if i % 2 else "(A)") for i in range(7)]


def _vector(lm, seed: int = 0, norms: bool = False) -> SteeringVector:
    torch.manual_seed(seed)
    n, d = lm.n_layers, lm.hidden_size
    resid = {str(k): 5.0 for k in range(n)} if norms else None
    return SteeringVector.from_directions({k: torch.randn(d) for k in range(n)},
                                          resid_norms=resid)


def _max_delta(a, b) -> float:
    assert a.keys() == b.keys()
    return max(abs(x - y) for key in a for x, y in zip(
        a[key].scores + a[key].propensities, b[key].scores + b[key].propensities, strict=True))


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_equals_naive_loop(arch: str) -> None:
    lm = as_loaded(tiny_model(arch), tiny_tokenizer())
    vec = _vector(lm)
    last = lm.n_layers - 1
    layers = [0, 1, last, (0, last)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to whole forwards would warn: fail instead
        fast = sweep_ab(lm, ITEMS, vec, layers, [-3, 0, 2], batch_size=3)
    slow = naive_sweep(lm, ITEMS, vec, layers, [-3, 0, 2], batch_size=1)
    assert _max_delta(fast, slow) < 1e-4
    # the steering must actually change something, or equality would be vacuous
    assert max(abs(fast[(1, -3.0)].scores[i] - fast[(1, 0.0)].scores[i])
               for i in range(len(ITEMS))) > 1e-3


def test_engine_strength_units_and_positions_match_naive() -> None:
    lm = as_loaded(tiny_model("qwen2"), tiny_tokenizer())
    vec = _vector(lm, seed=1, norms=True)
    for positions in ("after_instruction", "last_prompt:2", "window:3:"):
        fast = sweep_ab(lm, ITEMS, vec, [1, 2], [-0.5, 0.5], unit="strength",
                        positions=positions, batch_size=4)
        slow = naive_sweep(lm, ITEMS, vec, [1, 2], [-0.5, 0.5], unit="strength",
                              positions=positions, batch_size=2)
        assert _max_delta(fast, slow) < 1e-4


def test_engine_block_input_site() -> None:
    lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    base = _vector(lm, seed=2)
    vec = SteeringVector.from_directions(base.directions, site="block_input")
    fast = sweep_ab(lm, ITEMS, vec, [0, 3], [-2, 2], batch_size=5)
    slow = naive_sweep(lm, ITEMS, vec, [0, 3], [-2, 2], batch_size=5)
    assert _max_delta(fast, slow) < 1e-4


def test_engine_falls_back_when_head_is_unknown() -> None:
    lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    vec = _vector(lm)
    engine = SweepEngine(lm, batch_size=4)
    engine.head.norm = torch.nn.Identity()  # wrong final norm: the self-check must catch it
    seqs = [ab_sequences(lm.tokenizer, item) for item in ITEMS]
    with pytest.warns(UserWarning, match="prefix reuse disabled"):
        fast = engine.score(seqs, vec, [[2]], [-1.0, 1.0])
    assert not engine.prefix_reuse
    slow = naive_sweep(lm, ITEMS, vec, [2], [-1, 1], batch_size=3)
    assert _max_delta(fast, slow) < 1e-4


def test_engine_rejects_missing_layers_and_units() -> None:
    lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    vec = SteeringVector.from_directions({1: torch.ones(64)})
    with pytest.raises(SteerlabError, match="no direction for layer"):
        sweep_ab(lm, ITEMS, vec, [2], [1.0])
    with pytest.raises(SteerlabError, match="unit must be"):
        sweep_ab(lm, ITEMS, vec, [1], [1.0], unit="volts")


@pytest.mark.parametrize("arch", ARCHS)
def test_token_prefix_reuse_equals_naive_after_instruction(arch: str, monkeypatch) -> None:
    lm = as_loaded(tiny_model(arch), tiny_tokenizer())
    vec = _vector(lm, seed=4)
    engine = SweepEngine(lm, batch_size=3)
    calls = []
    original = engine._score_suffix
    monkeypatch.setattr(engine, "_score_suffix", lambda *a, **k: calls.append(1) or original(
        *a, **k))
    seqs = [ab_sequences(lm.tokenizer, item) for item in ITEMS]
    fast = engine.score(seqs, vec, [[0], [lm.n_layers - 1]], [-4.0, 0.0, 4.0],
                        positions="after_instruction")
    assert calls, "the KV-cache (token prefix) path was not taken"
    slow = naive_sweep(lm, ITEMS, vec, [0, lm.n_layers - 1], [-4, 0, 4], batch_size=1,
                          positions="after_instruction")
    assert _max_delta(fast, slow) < 1e-4
    assert max(abs(fast[(0, 4.0)].scores[i] - fast[(0, 0.0)].scores[i])
               for i in range(len(ITEMS))) > 1e-3


OPEN = [ABItem(f"Tell me about day {i}{' please' * (i % 3)}.", "It was lovely and bright.",
               "It was awful" + " and grey" * (i % 2) + ".") for i in range(5)]


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("positions", ["all", "generation"])
def test_open_answer_sweep_equals_score_answers(arch: str, positions: str) -> None:
    from steerlab.scoring.sweep import sweep_answers

    lm = as_loaded(tiny_model(arch), tiny_tokenizer())
    vec = _vector(lm, seed=5)
    layers = [1, lm.n_layers - 1]
    fast = sweep_answers(lm, OPEN, vec, layers, [-3, 0, 3], positions=positions, batch_size=3)
    slow = naive_sweep(lm, OPEN, vec, layers, [-3, 0, 3], form="open", positions=positions)
    assert _max_delta(fast, slow) < 1e-4
    assert max(abs(a - b) for a, b in zip(fast[(1, 3.0)].propensities,
                                          fast[(1, 0.0)].propensities, strict=True)) > 1e-3


@pytest.mark.parametrize("positions,values", [("all", [-2.0, 0.0, 2.0]), ("all", [0.0, 2.0]),
                                              ("after_instruction", [-2.0, 0.0, 2.0])])
def test_several_vectors_share_the_base_and_equal_separate_calls(positions: str,
                                                                 values: list[float]) -> None:
    lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    first = _vector(lm, seed=6)
    second = SteeringVector.from_directions(_vector(lm, seed=7).directions, site="block_input")
    seqs = [ab_sequences(lm.tokenizer, item) for item in ITEMS]
    engine = SweepEngine(lm, batch_size=3)
    passes = []
    handle = engine.blocks[0].register_forward_pre_hook(lambda *_: passes.append(1))
    try:
        together = engine.score_vectors(seqs, [first, second], [[1], [2]], values,
                                        positions=positions)
    finally:
        handle.remove()
    batches = -(-len(seqs) // 3)
    # block 0 is never steered: on the layer-prefix path it runs once per batch; on the
    # token-prefix path once for the cached prefix, once for the 0 cell, once per steered tail
    per_batch = 1 if positions == "all" else 2 + 2 * 2  # (one value: the stored inputs
    # pass to the tails uncopied, so a tail writing into them would corrupt the next vector)
    assert len(passes) == batches * per_batch
    for vec, shared in zip([first, second], together, strict=True):
        alone = SweepEngine(lm, batch_size=3).score(seqs, vec, [[1], [2]], values,
                                                    positions=positions)
        assert _max_delta(shared, alone) < 1e-4
        slow = naive_sweep(lm, ITEMS, vec, [1, 2], values, batch_size=1, positions=positions)
        assert _max_delta(shared, slow) < 1e-4
    assert _max_delta(together[0], together[1]) > 1e-3  # the two vectors did differ
    with pytest.raises(SteerlabError, match="no vectors"):
        engine.score_vectors(seqs, [], [[1]], [1.0])
