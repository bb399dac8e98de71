"""Arithmetic of the perplexity, capabilities and sentiment evals, on tiny random models.

Every metric is checked against a hand computation: perplexity from known log-probs, window /
stride indexing, the paired ratio, accuracy + Wilson, success rate, paired shift and fluency
(with a stub scorer standing in for VADER), and the token-level NLL helper against a direct
log-softmax of the model's logits.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from steerlab.data import benchmarks
from steerlab.errors import SteerlabError
from steerlab.eval.protocols import capabilities as cap
from steerlab.eval.protocols import perplexity as ppl
from steerlab.eval.protocols import sentiment as sent
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.scoring.ab import ABResult
from steerlab.scoring.generate import Sampling, generate_ids
from steerlab.scoring.likelihood import continuation_nll
from steerlab.steering.spec import SteeringSpec
from steerlab.testing.tiny import tiny_model, tiny_tokenizer
from steerlab.util.parse import unit_values
from steerlab.vector import SteeringVector


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return as_loaded(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture(scope="module")
def vec() -> SteeringVector:
    torch.manual_seed(5)
    return SteeringVector.from_directions({k: torch.randn(64) for k in range(4)})


# ---------------------------------------------------------------- perplexity: windows


def test_non_overlapping_windows_score_all_but_the_first_token() -> None:
    plan = ppl.plan_windows(1000, window=100, n_windows=0)
    assert plan.starts == tuple(range(0, 901, 100))  # 10 windows, the last ends at 1000
    assert (plan.stride, plan.context, plan.n_scored) == (100, 1, 99)


def test_strided_windows_score_only_the_last_stride_tokens() -> None:
    plan = ppl.plan_windows(20, window=8, stride=4, n_windows=0)
    assert plan.starts == (0, 4, 8, 12)
    assert (plan.context, plan.n_scored) == (4, 4)  # local tokens 4..7, >= 4 tokens of context
    rows = plan.rows(list(range(100, 120)), prefix=[1])
    assert rows[1] == [1, *range(104, 112)]
    # scored absolute tokens of consecutive windows are disjoint and contiguous
    scored = [t for s in plan.starts for t in range(s + plan.context, s + plan.window)]
    assert scored == list(range(4, 20))


def test_windows_are_a_seeded_subset_and_generation_prompt_sets_the_context() -> None:
    tiling = set(range(0, 901, 100))
    plan = ppl.plan_windows(1000, window=100, n_windows=4, seed=1)
    assert len(plan.starts) == 4 and set(plan.starts) <= tiling
    assert list(plan.starts) == sorted(plan.starts)  # in text order
    assert ppl.plan_windows(1000, window=100, n_windows=4, seed=1).starts == plan.starts
    others = {ppl.plan_windows(1000, window=100, n_windows=4, seed=s).starts for s in range(6)}
    assert len(others) > 1  # the seed chooses
    assert len(ppl.plan_windows(1000, window=100, n_windows=1).starts) == 1
    gen = ppl.plan_windows(1000, window=100, n_windows=2, prompt_tokens=50)
    assert (gen.context, gen.n_scored, gen.prompt_tokens) == (50, 50, 50)
    # the larger of the stride's context and the prompt wins
    assert ppl.plan_windows(1000, window=100, stride=20, prompt_tokens=50).context == 80


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 1}, "--window"), ({"stride": 300}, "--stride"),
    ({"prompt_tokens": 256}, "--prompt-tokens"), ({"n_windows": -1}, "--limit")])
def test_bad_window_options_fail_in_one_line(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(SteerlabError, match=message):
        ppl.plan_windows(10_000, **kwargs)
    with pytest.raises(SteerlabError, match="fewer than one window"):
        ppl.plan_windows(10, window=256)


# ---------------------------------------------------------------- perplexity: arithmetic


def test_perplexity_and_ratio_from_known_nlls() -> None:
    # a model that gives every token p = 1/4 has perplexity 4; p = 1/2 → 2
    assert ppl.perplexity([math.log(4.0)] * 3) == pytest.approx(4.0)
    assert ppl.perplexity([math.log(2.0), math.log(8.0)]) == pytest.approx(4.0)  # exp(mean)
    value, low, high = ppl.ppl_ci([math.log(2.0), math.log(8.0)], seed=1)
    assert value == pytest.approx(4.0) and 2.0 <= low <= value <= high <= 8.0
    ratio, low, high = ppl.ratio_ci([math.log(6.0), math.log(3.0)],
                                    [math.log(2.0), math.log(1.0)])
    assert (ratio, low, high) == pytest.approx((3.0, 3.0, 3.0))  # every window 3x
    ratio, low, high = ppl.ratio_ci([1.0, 2.0, 3.0, 5.0], [1.0, 1.0, 1.0, 1.0], seed=0)
    assert ratio == pytest.approx(math.exp(1.75)) and low < ratio < high
    with pytest.raises(SteerlabError, match="paired"):
        ppl.ratio_ci([1.0], [1.0, 2.0])


def test_continuation_nll_matches_a_direct_log_softmax(lm: LoadedModel) -> None:
    rows = [[5, 9, 14, 20, 33, 41], [7, 8, 9, 10]]
    starts = [2, 1]
    got = continuation_nll(lm, rows, starts, batch_size=2)  # padded batch of unequal rows
    for row, start, nll in zip(rows, starts, got, strict=True):
        with torch.no_grad():
            logprobs = torch.log_softmax(lm.model(torch.tensor([row])).logits[0].float(), -1)
        expected = [-float(logprobs[t - 1, row[t]]) for t in range(start, len(row))]
        assert nll == pytest.approx(expected, abs=1e-4)
    with pytest.raises(SteerlabError, match="start 0"):
        continuation_nll(lm, [[1, 2]], [0])


def test_window_nll_is_the_mean_over_scored_tokens(lm: LoadedModel) -> None:
    tokens = list(range(10, 50))
    plan = ppl.plan_windows(len(tokens), window=10, stride=5, n_windows=3)
    rows = plan.rows(tokens)
    per_token = continuation_nll(lm, rows, [plan.context] * len(rows))
    assert all(len(r) == 5 for r in per_token)
    means = ppl.window_nlls(lm, rows, plan)
    assert means == pytest.approx([sum(r) / 5 for r in per_token], abs=1e-6)


def test_generation_mode_steers_only_after_the_prompt(lm: LoadedModel,
                                                      vec: SteeringVector) -> None:
    tokens = list(range(10, 74))
    plan = ppl.plan_windows(len(tokens), window=16, n_windows=2, prompt_tokens=8)
    rows = plan.rows(tokens)
    spec = SteeringSpec(vec, layers=[1], coefficient=20.0, positions="generation")
    base = continuation_nll(lm, rows, [8, 8])
    steered = continuation_nll(lm, rows, [8, 8], spec, prompt_lengths=[8, 8])
    for b, s in zip(base, steered, strict=True):
        assert s[0] == pytest.approx(b[0], abs=1e-5)  # token 8 comes from unsteered position 7
        assert max(abs(x - y) for x, y in zip(s[1:], b[1:], strict=True)) > 1e-3
    means = ppl.window_nlls(lm, rows, plan, spec)
    assert means == pytest.approx([sum(r) / 8 for r in steered], abs=1e-6)
    everywhere = ppl.window_nlls(lm, rows, plan, SteeringSpec(vec, layers=[1], coefficient=20.0))
    assert everywhere != pytest.approx(means, abs=1e-4)  # `all` also steers the prompt


def test_load_tokens_reads_a_text_once(lm: LoadedModel, tmp_path: Path) -> None:
    text = tmp_path / "wiki.txt"
    text.write_text(" = Title = \n\n The quick brown fox jumps over the lazy dog .\n")
    tokens, prefix = ppl.load_tokens(lm, text)
    assert tokens == list(lm.tokenizer(text.read_text(), add_special_tokens=False)["input_ids"])
    assert prefix in ([], [lm.tokenizer.bos_token_id])
    with pytest.raises(SteerlabError, match="not found"):
        ppl.load_tokens(lm, tmp_path / "missing.txt")


# ---------------------------------------------------------------- capabilities


def _ab(scores: list[float], p_match: list[float], p_other: list[float]) -> ABResult:
    props = [math.log(m / o) for m, o in zip(p_match, p_other, strict=True)]
    return ABResult(tuple(scores), tuple(props), tuple(p_match), tuple(p_other))


def test_accuracy_counts_items_whose_correct_letter_wins() -> None:
    p_match, p_other = [0.6, 0.1, 0.3, 0.45, 0.2], [0.2, 0.3, 0.3, 0.05, 0.6]
    scores = [m / (m + o) for m, o in zip(p_match, p_other, strict=True)]
    result = _ab(scores, p_match, p_other)
    acc, low, high = cap.accuracy(result)
    assert acc == pytest.approx(2 / 5)  # 0.75 and 0.9 win; the 0.5 tie does not
    # Wilson 95 %: centre (p + z²/2n)/(1 + z²/n), half z·sqrt(p(1-p)/n + z²/4n²)/(1 + z²/n)
    z = 1.959963984540054
    centre = (0.4 + z * z / 10) / (1 + z * z / 5)
    half = z * math.sqrt(0.4 * 0.6 / 5 + z * z / 100) / (1 + z * z / 5)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    records = {r["metric"]: r for r in cap.cell_records(result, layer=3, coefficient=2.0)}
    assert records["accuracy"]["n"] == 5 and records["accuracy"]["layer"] == 3
    assert records["p_correct"]["value"] == pytest.approx(sum(scores) / 5)
    assert records["letter_mass"]["value"] == pytest.approx(
        sum(m + o for m, o in zip(p_match, p_other, strict=True)) / 5)


def test_capability_items_read_correct_as_matching(shared_data: Path) -> None:
    data = cap.load_benchmark("truthfulqa", 5, seed=0)
    assert len(data) == 5
    assert {item.matching for item in data} <= {"(A)", "(B)"}
    with pytest.raises(SteerlabError, match="--benchmarks: bad value"):
        cap.load_benchmark("gsm8k", 5, 0)


# ---------------------------------------------------------------- sentiment / toxicity


def test_success_rate_rate_above_and_shift_by_hand() -> None:
    scores = [0.6, -0.3, 0.0, 0.2, 0.9]
    assert sent.success_rate(scores)[0] == pytest.approx(3 / 5)
    assert sent.success_rate(scores, "negative")[0] == pytest.approx(1 / 5)
    assert sent.rate_above([0.51, 0.5, 0.9, 0.1])[0] == pytest.approx(0.5)
    # two prompts × two samples, prompt-major: shifts (0.4+0.6)/2 = 0.5 and (0.1-0.1)/2 = 0
    shift, low, high = sent.paired_shift([0.5, 0.7, 0.1, -0.1], [0.1, 0.1, 0.0, 0.0], 2)
    assert shift == pytest.approx(0.25)
    half = 12.706205 * math.sqrt(((0.5 - 0.25) ** 2 + (0 - 0.25) ** 2) / 1 / 2)  # t(.975, 1)
    assert (low, high) == pytest.approx((0.25 - half, 0.25 + half))
    with pytest.raises(SteerlabError, match="shift"):
        sent.paired_shift([0.1, 0.2, 0.3], [0.0, 0.0, 0.0], 2)


def test_fluency_is_the_geometric_mean_perplexity() -> None:
    value, low, high = sent.fluency_ppl([math.log(2.0), None, math.log(8.0), math.log(4.0)])
    assert value == pytest.approx(4.0)  # exp(mean(log 2, log 8, log 4)); None skipped
    assert low < 4.0 < high


def test_cell_records_with_a_stub_scorer(lm: LoadedModel, vec: SteeringVector,
                                         tmp_path: Path) -> None:
    from steerlab.eval.run import EvalRun

    def stub(texts: list[str]) -> list[float]:
        return [0.5 if "good" in t else -0.5 for t in texts]

    run = sent._Run(lm, vec, EvalRun(tmp_path, "sentiment", {}), stub, "sentiment", "positive",
                    "coefficient", "all", 1, 4, True, 1.0, 1.0, 0, 4)
    got = sent.Completions([[1], [2], [3]], ["good", "bad", "good"], stub(["good", "bad",
                           "good"]), [1.0, None, 3.0])
    base = sent.Completions([], [], [-0.5, -0.5, -0.5], [])
    records = {r["metric"]: r for r in sent.cell_records(run, got, base, n=3)}
    assert records["compound"]["value"] == pytest.approx(1 / 6)
    assert records["success_rate"]["value"] == pytest.approx(2 / 3)
    assert records["shift"]["value"] == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3
    assert records["fluency_ppl"]["value"] == pytest.approx(math.exp(2.0))
    assert records["fluency_ppl"]["n"] == 2


def test_completions_are_scored_given_their_prompt(lm: LoadedModel, vec: SteeringVector,
                                                   tmp_path: Path) -> None:
    from steerlab.eval.run import EvalRun

    run = sent._Run(lm, vec, EvalRun(tmp_path, "sentiment", {}),
                    lambda ts: [float(len(t)) for t in ts], "sentiment", "positive",
                    "coefficient", "all", 2, 5, True, 1.0, 1.0, 0, 4)
    got = run.complete(["The weather today is", "Once upon a time"], None)
    assert len(got.ids) == 4 and all(len(x) <= 5 for x in got.ids)
    assert got.ids[0] == got.ids[1]  # greedy: both samples of a prompt agree
    assert got.scores == [float(len(t)) for t in got.texts]
    prompt = lm.tokenizer("Once upon a time")["input_ids"]
    if got.ids[2]:
        expected = continuation_nll(lm, [prompt + got.ids[2]], [len(prompt)])[0]
        assert got.nll[2] == pytest.approx(sum(expected) / len(expected), abs=1e-5)


def test_prompt_files_are_filtered_and_subset(tmp_path: Path) -> None:
    tsv = tmp_path / "reviews.tsv"
    tsv.write_text("1\t0.2\tA calm film about a quiet town and its people\n"
                   "2\t-2.5\tDreadful, boring and far too long for its own good\n"
                   "3\t0.1\tShort one\n"
                   "4\t-0.4\tIt is a movie that exists and has some scenes\n")
    assert benchmarks.load_review_prompts("neutral", 0, 0, tsv) == [
        "A calm film about a quiet town and its people",
        "It is a movie that exists and has some scenes"]  # "Short one" has < 5 words
    assert len(benchmarks.load_review_prompts("negative", 0, 0, tsv)) == 1
    assert len(benchmarks.load_review_prompts("neutral", 1, 0, tsv)) == 1
    tsv.write_text("1\tnot-a-number\ttext\n")
    with pytest.raises(SteerlabError, match="line 1"):
        benchmarks.load_review_prompts("neutral", 0, 0, tsv)
    (tmp_path / "toxicity").mkdir()
    (tmp_path / "toxicity" / "rtp_a.txt").write_text("one\ntwo\n\n")
    (tmp_path / "toxicity" / "rtp_b.txt").write_text("three\n")
    assert benchmarks.load_toxicity_prompts(0, 0, tmp_path) == ["one", "two", "three"]


def test_vader_direction() -> None:
    score = sent.vader_scorer()
    good, bad, empty = score(["I love this wonderful film", "I hate this awful film", ""])
    assert good > 0 > bad and empty == 0.0


# ---------------------------------------------------------------- helpers


def test_sampling_is_seeded_and_stops_at_eos(lm: LoadedModel) -> None:
    prompts = [[5, 6, 7], [8, 9]]
    sampling = Sampling(temperature=1.0, seed=3)
    a = generate_ids(lm, prompts, max_new_tokens=6, sampling=sampling)
    b = generate_ids(lm, prompts, max_new_tokens=6, sampling=sampling)
    assert a == b and all(len(x) <= 6 for x in a)
    assert not any(t in lm.stop_ids for x in a for t in x)


def test_unit_values() -> None:
    assert unit_values("0,1,2", None) == ("coefficient", [0.0, 1.0, 2.0])
    assert unit_values(None, "0:1:0.5") == ("strength", [0.0, 0.5, 1.0])
    for args in ((None, None), ("1", "2")):
        with pytest.raises(SteerlabError, match="strengths"):
            unit_values(*args)
    with pytest.raises(SteerlabError, match="repeated"):
        unit_values("1,1", None)
