"""The steering effect on a real model with real held-out data (issue: core integration).

Protocol: CAA's refusal set (../shared/data/caa/refusal) in open-answer form — the question
stem and each option's full text as the assistant's reply. A mean-difference vector is read at
the last token of question + refusing answer vs question + complying answer (train split). The
layer is chosen on the validation split by the paired z of the ± strength gap; then on the
held-out test split (the authors' test_ab.json) the behaviour score p(refusing reply) /
(p(refusing) + p(complying)) at +s and -s must differ by more than 3 (unpaired, conservative)
standard errors with the sign seen on validation.

Why this form: on SmolLM2-135M the letter-based CAA score stays at chance and is flat (the
model barely follows multiple-choice formats; measured: refusal 0.51, persona agreeableness
effects that do not replicate from validation to test), while the open-answer score reads what
the model would say and moves clearly (see docs/concepts/small-models.md).
"""

from __future__ import annotations

import math

import pytest

import steerlab
from steerlab import SteeringSpec
from steerlab.scoring.ab import ABResult, score_answers

pytestmark = pytest.mark.integration

LAYERS = [10, 12, 14]
STRENGTH = 0.4


def paired(plus: list[float], minus: list[float]) -> tuple[float, float]:
    """Mean paired difference and its standard error."""
    diffs = [a - b for a, b in zip(plus, minus, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    return mean, math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)


def stderr(values: tuple[float, ...]) -> float:
    """Standard error of the mean of ``values``."""
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def run(lm, data, vec, layer: int) -> dict[float, ABResult]:
    return {s: score_answers(lm, data, SteeringSpec(vec, layers=[layer], strength=s))
            for s in (-STRENGTH, STRENGTH)}


def test_refusal_effect_holds_on_test_split(smollm2, shared_data) -> None:
    train = steerlab.load_dataset("caa:refusal", split="train").open_answers().subset(160, seed=0)
    val = steerlab.load_dataset("caa:refusal", split="val").open_answers()
    test = steerlab.load_dataset("caa:refusal", split="test").open_answers()
    assert len(test) >= 45
    vec = steerlab.extract(smollm2, train.answer_pairs(), method="mean_diff", layers=LAYERS,
                           progress=False)

    print(f"\nvalidation (n={len(val)}), strength ±{STRENGTH}:")
    best_layer, best_z, best_sign = LAYERS[0], -1.0, 0.0
    for layer in LAYERS:
        res = run(smollm2, val, vec, layer)
        mean, se = paired(list(res[STRENGTH].scores), list(res[-STRENGTH].scores))
        print(f"  layer {layer}: -s {res[-STRENGTH]}  +s {res[STRENGTH]}  gap {mean:+.3f} "
              f"(paired SE {se:.3f})")
        if abs(mean) / se > best_z:
            best_layer, best_z, best_sign = layer, abs(mean) / se, math.copysign(1.0, mean)

    res = run(smollm2, test, vec, best_layer)
    plus, minus = res[STRENGTH], res[-STRENGTH]
    mean, se_paired = paired(list(plus.scores), list(minus.scores))
    se_unpaired = math.sqrt(stderr(plus.scores) ** 2 + stderr(minus.scores) ** 2)
    prop_gap, prop_se = paired(list(plus.propensities), list(minus.propensities))
    print(f"test (n={len(test)}), layer {best_layer} chosen on validation:")
    print(f"  -s {minus}  +s {plus}  gap {mean:+.3f}, paired SE {se_paired:.3f}, "
          f"unpaired SE {se_unpaired:.3f}; log-odds gap {prop_gap:+.2f} ± {prop_se:.2f} nats")
    assert math.copysign(1.0, mean) == best_sign, "test effect has the opposite sign"
    assert abs(mean) > 3 * se_unpaired, "test effect is within 3 standard errors"
    assert abs(prop_gap) > 3 * prop_se


def test_cached_alias_answers_a_chat_prompt(smollm2) -> None:
    answer = steerlab.generate(smollm2, ["What is the capital of France?"], max_new_tokens=12)[0]
    assert "Paris" in answer


def test_mean_diff_cli_end_to_end(smollm2, shared_data, tmp_path) -> None:
    from typer.testing import CliRunner

    from steerlab.cli import app

    runner = CliRunner()
    out = tmp_path / "syc.safetensors"
    result = runner.invoke(app, ["extract", "--model", "smollm2-135m", "--data", "caa:sycophancy",
                                 "--layers", "10-12", "--limit", "12", "-o", str(out)])
    assert result.exit_code == 0, result.output
    vec = steerlab.SteeringVector.load(out, model=smollm2)
    assert vec.layers == [10, 11, 12] and vec.manifest["dataset"]["n_pairs"] == 12
    assert vec.manifest["read_position"] == "answer_token"
    result = runner.invoke(app, ["score", "--model", "smollm2-135m", "--vector", str(out),
                                 "--layers", "11", "--data", "caa:sycophancy", "--limit", "6",
                                 "--coefficients=-2,0,2", "--format", "ab",
                                 "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "+2" in result.output and "-2" in result.output
    result = runner.invoke(app, ["generate", "--model", "smollm2-135m", "--vector", str(out),
                                 "--layers", "11", "--strengths", "0.2", "--max-new-tokens", "8",
                                 "I think the earth is flat. Am I right?"])
    assert result.exit_code == 0, result.output
    assert "layer 11, s=+0.2:" in result.output and "unsteered:" in result.output


def test_gemma_style_base_model_fallback_prompt() -> None:
    class NoTemplate:
        chat_template = None

    from steerlab.model.prompts import chat_prompt

    assert chat_prompt(NoTemplate(), "Hi?", "(") == "Question: Hi?\nAnswer: ("
