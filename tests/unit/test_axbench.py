"""AxBench's judge (Wu et al. 2025): the harmonic-mean aggregate of the concept, instruction and
fluency ratings (0..2, 0 if any is 0) on hand-made scores, the ``axbench:`` scheme over the
local and HTTP judges, and Cohen's kappa between the refusal phrase classifier and the judge."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from steerlab.errors import SteerlabError
from steerlab.eval.judges import (
    AxBenchJudge,
    HTTPJudge,
    JudgeItem,
    LocalJudge,
    Rating,
    axbench_aggregate,
    logprob_rating,
    parse_judge,
    parse_reply_score,
    phrase_agreement,
)


def test_axbench_aggregate_is_the_harmonic_mean_with_the_zero_rule() -> None:
    assert axbench_aggregate(2, 2, 2) == 2.0
    assert axbench_aggregate(1, 1, 1) == 1.0
    assert axbench_aggregate(1, 2, 2) == pytest.approx(3 / (1 + 0.5 + 0.5))  # 1.5
    assert axbench_aggregate(2, 1, 0.5) == pytest.approx(3 / (0.5 + 1 + 2))  # 0.857
    assert axbench_aggregate(0, 2, 2) == 0.0 and axbench_aggregate(2, 2, 0) == 0.0
    assert axbench_aggregate(1, 2, 1) < (1 + 2 + 1) / 3  # below the arithmetic mean
    assert math.isnan(axbench_aggregate(math.nan, 2, 2))
    with pytest.raises(SteerlabError, match=r"0\.\.2"):
        axbench_aggregate(3, 1, 1)


class FixedRater:
    """A judge that gives each aspect a fixed rating (keyed by a word of its question)."""

    name = "fixed"

    def __init__(self, by_aspect: dict[str, float]):
        self.by_aspect = by_aspect
        self.asked: list[tuple[str, tuple[int, ...]]] = []

    def rate_prompts(self, prompts: Sequence[str], numbers: Sequence[int] = (),
                     system: str = "") -> list[Rating]:
        out = []
        for prompt in prompts:
            aspect = next(a for a in ("concept", "instruction", "fluency")
                          if prompt.lower().startswith(f"evaluate whether the {a}")
                          or (a == "instruction" and "related to the instruction" in prompt)
                          or (a == "fluency" and prompt.startswith("Evaluate the fluency")))
            self.asked.append((aspect, tuple(numbers)))
            out.append(Rating(self.by_aspect[aspect], 0.9))
        return out


def test_axbench_judge_rates_three_aspects_and_aggregates() -> None:
    rater = FixedRater({"concept": 2.0, "instruction": 1.0, "fluency": 2.0})
    judge = AxBenchJudge(rater)  # type: ignore[arg-type]
    item = JudgeItem("refusal", None, "Write a poem.", "Sorry, I can't.")
    got = judge.rate_aspects([item, item])
    assert [(g.concept, g.instruction, g.fluency) for g in got] == [(2.0, 1.0, 2.0)] * 2
    assert got[0].aggregate == pytest.approx(1.5) and got[0].coverage == 0.9
    assert judge.score(*vars(item).values()) == pytest.approx(1.5)
    assert {numbers for _, numbers in rater.asked} == {(0, 1, 2)}
    zero = AxBenchJudge(FixedRater({"concept": 0.0, "instruction": 2.0, "fluency": 2.0}))  # type: ignore[arg-type]
    assert zero.rate_many([item])[0].score == 0.0
    with pytest.raises(SteerlabError, match="cannot rate"):
        AxBenchJudge(object())  # type: ignore[arg-type]


def test_axbench_is_a_judge_scheme_for_local_and_http_judges() -> None:
    from steerlab.model.load import as_loaded
    from steerlab.testing.tiny import tiny_model, tiny_tokenizer

    lm = as_loaded(tiny_model("llama", n_layers=1), tiny_tokenizer())
    local = parse_judge("axbench:local:tiny", {"tiny": lm}, allow_axbench=True)
    assert isinstance(local, AxBenchJudge) and isinstance(local.inner, LocalJudge)
    assert local.name == f"axbench:local:{lm.model_id}"
    rated = local.rate_aspects([JudgeItem("refusal", None, "Write a poem.", "No.")])[0]
    for score in (rated.concept, rated.instruction, rated.fluency):
        assert 0.0 <= score <= 2.0  # the expectation over 0, 1, 2
    assert 0.0 < rated.coverage <= 1.0
    http = parse_judge("axbench:http:https://api.example.com/v1#gpt-x", allow_axbench=True)
    assert isinstance(http, AxBenchJudge) and isinstance(http.inner, HTTPJudge)
    for bad in ("axbench:gpt4", "axbench:", "axbench:http:https://x/v1"):
        with pytest.raises(SteerlabError):
            parse_judge(bad, allow_axbench=True)
    with pytest.raises(SteerlabError, match="not another axbench"):
        parse_judge("axbench:axbench:local:tiny", {"tiny": lm}, allow_axbench=True)
    # studies that read a 1..10 trait score (ood, defence, the audit) refuse it in one line
    with pytest.raises(SteerlabError, match="aggregate, not the 1"):
        parse_judge("axbench:local:tiny", {"tiny": lm})
    # an OpenAI-compatible reply on the 0..2 scale: logprobs, else the first 0..2 in the text
    pos = {"token": "2", "top_logprobs": [{"token": "2", "logprob": math.log(0.75)},
                                          {"token": "0", "logprob": math.log(0.25)}]}
    assert logprob_rating([pos], (0, 1, 2)) == Rating(1.5, 1.0)
    assert parse_reply_score("Rating: [[1]]", (0, 1, 2)) == 1.0
    assert parse_reply_score("7 of 10", (0, 1, 2)) is None


def test_phrase_classifier_and_judge_agreement_kappa() -> None:
    answers = ["I'm sorry, but I can't help with that.", "Sure! Here is a poem.",
               "I cannot do that.", "Of course, happy to help."]
    raw, kappa = phrase_agreement(answers, [2.0, 0.0, 1.6, 0.2])
    assert (raw, kappa) == (1.0, 1.0)
    raw, kappa = phrase_agreement(answers, [0.1, 2.0, 0.3, 1.9])  # the opposite
    assert raw == 0.0 and kappa == pytest.approx(-1.0)
    raw, kappa = phrase_agreement(answers, [2.0, 1.5, 1.2, 0.0])  # refusal, yes, yes, no
    assert raw == 0.75 and kappa == pytest.approx(0.5)
    with pytest.raises(SteerlabError, match="one rating per answer"):
        phrase_agreement(answers, [1.0])
