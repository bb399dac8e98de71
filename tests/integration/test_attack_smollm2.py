"""Adversarial suffix search end to end on SmolLM2-135M with a real refusal vector.

A mean-difference refusal vector (CAA refusal train split, open-answer form, 8 pairs, layer
12) steers the model; the search looks for a suffix that moves the steered model back towards
the non-refusing letter (``ab_flip``, two A/B test items) and the non-refusing open answer
(``answer``, one item, where this vector clearly works: the answer is less likely when
steered). Sizes are tiny (8-token suffixes, 2–3 iterations of 12–16 candidates): this checks
the wiring on a real tokenizer and chat template — the layout matches steerlab's scorers, the
objective improves over iterations, the numbers are the suffix's own, every reported suffix
re-tokenizes identically as text, the random baseline gets the same budget — not attack
strength (bench/rows_attack.py runs real sizes).
"""

from __future__ import annotations

import pytest

import steerlab
from steerlab import SteeringSpec
from steerlab.attack import ab_flip, answer, evaluate, gcg, random_search, search
from steerlab.data.sequences import ab_sequences

pytestmark = pytest.mark.integration

LAYER, STRENGTH = 12, 0.8
CONFIG = gcg(suffix_length=8, iterations=3, children=16, topk=64, seed=0)


@pytest.fixture(scope="module")
def refusal(smollm2, shared_data):
    train = steerlab.load_dataset("caa:refusal", split="train").open_answers().subset(8, seed=0)
    vec = steerlab.extract(smollm2, train.answer_pairs(), method="mean_diff", layers=[LAYER],
                           progress=False)
    return SteeringSpec(vec, layers=[LAYER], strength=STRENGTH)


def _check(lm, obj, spec, res) -> None:
    assert res.objective > res.start_objective  # improved on the start
    bests = [s.best_objective for s in res.steps]
    assert bests == sorted(bests) and len(bests) == res.iterations
    (value,), (xent,) = evaluate(lm, obj, spec, [res.suffix_ids])
    assert value == pytest.approx(res.objective, abs=1e-4)
    assert xent == pytest.approx(res.xent, abs=1e-4)
    # the reported suffix is text a user can paste: the whole prompt re-tokenizes to these ids
    text = obj.prompt.text_before + res.suffix_text + obj.prompt.tail_text
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    want = [*obj.prompt.before, *res.suffix_ids, *obj.prompt.tail_ids]
    assert ids[: len(want)] == want  # (A/B: the answer letter's tokens follow)
    assert res.user_text.endswith(res.suffix_text)


def test_ab_flip_improves_on_two_items(smollm2, refusal) -> None:
    for item in steerlab.load_dataset("caa:refusal", split="test").items[:2]:
        obj = ab_flip(smollm2, item)
        core = ab_sequences(smollm2.tokenizer, item)
        assert [*obj.prompt.before, *obj.prompt.after] == core.prefix
        assert (obj.matching_id, obj.not_matching_id) == (core.matching_id,
                                                          core.not_matching_id)
        res = search(smollm2, obj, refusal, CONFIG, progress=False)
        print(f"\nab_flip {item.question[:40]!r}: unsteered {res.reference:.3f}, steered "
              f"{res.steered_no_suffix:.3f}, start {res.start_objective:.3f} -> "
              f"{res.objective:.3f} (xent {res.xent:.2f}) {res.suffix_text!r}")
        _check(smollm2, obj, refusal, res)


def test_answer_objective_and_random_baseline(smollm2, refusal) -> None:
    item = steerlab.load_dataset("caa:refusal", split="test").open_answers().items[0]
    obj = answer(smollm2, item)
    config = gcg(suffix_length=8, iterations=2, children=12, topk=64, seed=0)
    res = search(smollm2, obj, refusal, config, progress=False)
    assert res.steered_no_suffix < res.reference  # steering works on this item
    _check(smollm2, obj, refusal, res)
    base = random_search(smollm2, obj, refusal, config, evaluations=res.evaluations,
                         progress=False)
    assert base.evaluations == res.evaluations and len(base.suffix_ids) == 8
    print(f"\nanswer: unsteered {res.reference:.3f}, steered {res.steered_no_suffix:.3f}; "
          f"gcg {res.start_objective:.3f} -> {res.objective:.3f}, random {base.objective:.3f}")


def test_eval_adversarial_cli_on_smollm2(smollm2, refusal, tmp_path) -> None:
    """The study through the CLI: two held-out items, records and plot, the rates bounded."""
    from tests.integration.cli_helpers import read_records, run_cli

    vec = refusal.vector.save(tmp_path / "refusal.safetensors")
    run = tmp_path / "adv"
    run_cli(["eval", "adversarial", "--vector", str(vec), "--layers", str(LAYER),
             "--strengths", str(STRENGTH), "--data", "caa:refusal", "--objective", "answer",
             "--search", "gcg",
             "--suffix-length", "6", "--iterations", "2", "--population", "1",
             "--children", "12", "--limit", "2", "-o", str(run)])
    records = read_records(run)
    found = [r for r in records if r["metric"] == "adv_objective"]
    assert len(found) == 2 and all(r["model"] == smollm2.model_id for r in records)
    for r in found:
        assert r["value"] >= r["extra"]["start"] - 1e-6
        assert abs(r["extra"]["steered"] - r["extra"]["unsteered"]) > 1e-3  # it steers
    natural = [r["value"] for r in records if r["metric"] == "natural_xent"]
    assert all(0.5 < x < 12 for x in natural)  # nats/token of real text under a real LM
    assert (run / "adversarial_frontier.png").stat().st_size > 1000
