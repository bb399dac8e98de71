"""Steering is per thread: concurrent ``steer()`` contexts on one model never contaminate.

Two real threads share one model. Each runs its forwards (and greedy generations) inside its
own steering context — different vectors, opposite coefficients, or none — and every result
must equal the single-threaded reference bit for bit. ``scope="global"`` steering is the one
exception by design: every thread sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from steerlab.model.load import as_loaded
from steerlab.scoring.generate import generate_ids
from steerlab.steering.hooks import attach, steer
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.vector import SteeringVector

ROWS = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
N_FORWARDS = 12


def _vec(seed: int) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector.from_directions({1: torch.randn(64, generator=gen)})


def _forwards(model: torch.nn.Module, coefficient: float | None,
              vec: SteeringVector) -> list[torch.Tensor]:
    out = []
    for i in range(N_FORWARDS):
        ids = ROWS[:, : 3 + i % 4]
        with torch.inference_mode():
            if coefficient is None:
                out.append(model(ids).logits)
            else:
                with steer(model, vec, coefficient=coefficient):
                    out.append(model(ids).logits)
    return out


def _in_threads(*jobs: Callable[[], list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    results: list[list[torch.Tensor]] = [[] for _ in jobs]
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(k: int) -> None:
        try:
            start.wait()
            results[k] = jobs[k]()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def _wrong(got: list[torch.Tensor], want: list[torch.Tensor]) -> int:
    return sum(not torch.equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize(("coef_a", "coef_b"), [(8.0, None), (8.0, -8.0)])
def test_two_threads_steering_one_model(coef_a: float, coef_b: float | None) -> None:
    model = tiny_model("llama")
    vec_a, vec_b = _vec(1), _vec(2)
    ref_a = _forwards(model, coef_a, vec_a)
    ref_b = _forwards(model, coef_b, vec_b)
    plain = _forwards(model, None, vec_a)
    assert _wrong(ref_a, plain) == N_FORWARDS  # the steering does something
    for _ in range(3):  # several rounds: interleavings differ
        got_a, got_b = _in_threads(lambda: _forwards(model, coef_a, vec_a),
                                   lambda: _forwards(model, coef_b, vec_b))
        assert (_wrong(got_a, ref_a), _wrong(got_b, ref_b)) == (0, 0)
    # afterwards the model is untouched
    assert _wrong(_forwards(model, None, vec_a), plain) == 0


def test_threads_generating_with_different_steering() -> None:
    lm = as_loaded(tiny_model("llama"), tiny_tokenizer())
    vec = _vec(3)
    prompts = [[5, 6, 7], [8, 9, 10, 11]]

    def gen(c: float | None) -> list[torch.Tensor]:
        spec = None if c is None else _spec(vec, c)
        return [torch.tensor(x) for x in generate_ids(lm, prompts, spec, max_new_tokens=6)]

    refs = [gen(c) for c in (6.0, None, -6.0)]
    got = _in_threads(lambda: gen(6.0), lambda: gen(None), lambda: gen(-6.0))
    assert [_wrong(g, r) for g, r in zip(got, refs, strict=True)] == [0, 0, 0]


def _spec(vec: SteeringVector, c: float):
    from steerlab.steering.spec import SteeringSpec

    return SteeringSpec(vec, coefficient=c)


def test_global_scope_is_seen_by_every_thread() -> None:
    model = tiny_model("llama")
    vec = _vec(4)
    ref = _forwards(model, 8.0, vec)
    handle = attach(model, vec, coefficient=8.0, scope="global")
    try:
        (got,) = _in_threads(lambda: _forwards(model, None, vec))
    finally:
        handle.remove()
    assert _wrong(got, ref) == 0
    assert not handle.active
    assert _wrong(_forwards(model, None, vec), _forwards(tiny_model("llama"), None, vec)) == 0
