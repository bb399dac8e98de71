"""``eval prompting`` (steering vs prompting) on a tiny model: the four conditions score the same
items (same ids) with the behaviour studies' scorer, few-shot examples come from train only,
resume, the verdict rules (every verdict reachable), the CLI end to end."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from steerlab.data.formats import ABItem
from steerlab.errors import SteerlabError
from steerlab.eval import verdicts as rules
from steerlab.eval.protocols import prompting
from steerlab.eval.protocols.prompting_cells import ANSWERS, CONDITIONS
from steerlab.eval.protocols.prompting_inputs import PARTS, instruction_for, item_id, split_items
from steerlab.vector import SteeringVector
from tests.unit.cli_runner import Cli, assert_error


def _vector(path: Path, **manifest: object) -> Path:
    torch.manual_seed(0)
    vec = SteeringVector.from_directions({1: torch.randn(64), 2: torch.randn(64)},
                                         resid_norms={"1": 1.0, "2": 1.0})
    vec.manifest.update(manifest)
    return vec.save(path)


def _config(tiny_dir: Path, tmp_path: Path, **overrides: object) -> prompting.PromptingConfig:
    base: dict[str, object] = {
        "out": tmp_path / "run", "data": "caa:refusal", "vector": _vector(tmp_path / "v.st"),
        "layers": "1", "unit": "strength", "value": 1.0, "model": str(tiny_dir), "limit": 5,
        "shots": 2, "max_new_tokens": 3, "batch_size": 8}
    return prompting.PromptingConfig(**{**base, **overrides})  # type: ignore[arg-type]


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def test_every_condition_scores_the_same_items_as_the_sweep(tiny_dir: Path, tmp_path: Path,
                                                            shared_data: Path) -> None:
    from steerlab.eval import behaviour as bh
    from steerlab.model.load import load_model
    from steerlab.scoring.ab import score_answers

    cfg = _config(tiny_dir, tmp_path)
    result = prompting.run(cfg)
    out = tmp_path / "run"
    records = _records(out)
    # the test items eval sweep scores at the same --limit and seed
    test = bh.load_splits("caa:refusal", 0, 0, "open")["test"].subset(5, 0)
    want = [item_id(i) for i in test]
    scores = {r["extra"]["condition"]: r for r in records if r["metric"] == "score"}
    assert set(scores) == set(CONDITIONS)
    for condition, record in scores.items():
        assert record["extra"]["item_ids"] == want, condition  # same items, same order
        assert record["n"] == 5 and len(record["extra"]["scores"]) == 5
        assert record["strength"] == (1.0 if "vector" in condition else 0.0)
    assert result.item_ids == {c: want for c in CONDITIONS}
    fluency = {r["extra"]["condition"]: r for r in records if r["metric"] == "fluency_ppl"}
    assert set(fluency) == set(CONDITIONS)
    assert all(r["extra"]["item_ids"] == want for r in fluency.values())
    assert {r["extra"]["condition"] for r in records if r["metric"] == "refusal_rate"} == set(
        CONDITIONS)  # caa:refusal: the phrase classifier applies
    answers = [json.loads(x) for x in (out / ANSWERS).read_text().splitlines()]
    assert sorted((a["condition"], a["id"]) for a in answers) == sorted(
        (c, i) for c in CONDITIONS for i in want)
    # the baseline is the behaviour studies' open-answer score of those items, item by item
    lm = load_model(str(tiny_dir))
    plain = score_answers(lm, list(test))
    assert scores["baseline"]["extra"]["scores"] == pytest.approx(list(plain.scores), abs=1e-4)
    # few-shot examples: train items, none of them a test item
    shots = json.loads((out / "instruction.json").read_text())
    train = {item_id(i) for i in split_items("caa:refusal", "train", 0, "open")}
    assert len(shots["shot_ids"]) == 2 and set(shots["shot_ids"]) <= train
    assert not set(shots["shot_ids"]) & set(want)
    assert "refus" in shots["system"] and "refus" in shots["prefix"]
    # comparisons and the verdict
    metrics = {r["metric"] for r in records}
    assert {"effect", "difference", "fluency_ratio"} <= metrics
    saved = json.loads((out / "verdicts.json").read_text())
    assert saved[0]["finding"] == "prompting" and saved[0]["verdict"] in rules.VERDICTS
    assert result.verdict.verdict == saved[0]["verdict"]
    assert (out / "prompting.png").stat().st_size > 1000
    # resume: nothing measured again; other settings are refused by name
    before = (out / "results.jsonl").read_text()
    prompting.run(cfg)
    assert (out / "results.jsonl").read_text() == before
    with pytest.raises(SteerlabError, match="shots was 2, now 3"):
        prompting.run(_config(tiny_dir, tmp_path, shots=3))
    # the report has a section for it
    from steerlab.report import report_page, write

    html = write(report_page(out), tmp_path / "p.html").read_text()
    assert "answers by condition" in html and "prompt+vector" in html


def test_manifest_recommendation_and_not_measurable(tiny_dir: Path, tmp_path: Path,
                                                    shared_data: Path) -> None:
    vec = _vector(tmp_path / "rec.st", recommended={"layer": 2, "strength": 0.5,
                                                    "chosen_by": "eval sweep (test)"})
    # no description for this behaviour and no --instruction: not measurable
    data = tmp_path / "mystery.json"
    data.write_text(json.dumps([
        {"question": f"Question {i}?\n\nChoices:\n (A) yes {i}\n (B) no {i}",
         "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}
        for i in range(20)]))
    cfg = _config(tiny_dir, tmp_path, data=str(data), vector=vec, layers=None, unit=None,
                  value=None, out=tmp_path / "m")
    got = prompting.run(cfg)
    assert got.verdict.verdict == rules.NOT_MEASURABLE and "--instruction" in got.verdict.reason
    assert (got.layer, got.unit, got.value) == (2, "strength", 0.5)  # from the manifest
    # with --instruction it is measured, at the manifest's layer and strength
    told = prompting.run(prompting.PromptingConfig(**{**vars(cfg), "out": tmp_path / "m2",
                                                      "instruction": "Always answer yes."}))
    assert told.verdict.verdict in (rules.HOLDS, rules.FAILS, rules.UNSURE)
    scores = [r for r in _records(tmp_path / "m2") if r["metric"] == "score"]
    assert {r["layer"] for r in scores} == {2}
    assert {r["strength"] for r in scores if "vector" in r["extra"]["condition"]} == {0.5}
    with pytest.raises(SteerlabError, match="give --layers"):
        prompting.run(_config(tiny_dir, tmp_path, layers=None, out=tmp_path / "x"))
    with pytest.raises(SteerlabError, match="non-zero"):
        prompting.run(_config(tiny_dir, tmp_path, value=0.0, out=tmp_path / "y"))


def test_instruction_comes_from_the_description_or_the_option() -> None:
    train = [ABItem(f"T{i}?", f"yes {i}", f"no {i}") for i in range(6)]
    test = [train[0], ABItem("Held out?", "a", "b")]
    got, why = instruction_for("caa:sycophancy", None, PARTS, 3, train, test, seed=1)
    assert got is not None and not why
    assert "sycophancy" in (got.system or "") and "flatters" in (got.prefix or "")
    assert len(got.shots) == 3 and train[0] not in got.shots  # a test question is never shown
    roles = [m["role"] for m in got.context()]
    assert roles == ["user", "assistant"] * 3
    assert got.apply(test[1]).question.endswith("\n\nHeld out?")
    only, _ = instruction_for("caa:sycophancy", None, ["system"], 3, train, test)
    assert only is not None and only.prefix is None and not only.shots
    mine, _ = instruction_for("x.json", "Be  terse.", PARTS, 0, train, test)
    assert mine is not None and mine.system == mine.prefix == "Be terse." and not mine.shots
    none, why = instruction_for("x.json", None, PARTS, 2, train, test)
    assert none is None and "--instruction" in why
    with pytest.raises(SteerlabError, match="--prompt-parts"):
        instruction_for("caa:refusal", None, ["vibes"], 2, train, test)


def test_every_prompting_verdict_is_reachable() -> None:
    wins = rules.judge_prompting((0.12, 0.05, 0.19), (0.3, 0.2, 0.4), (0.18, 0.1, 0.26))
    assert wins.verdict == rules.HOLDS and wins.reason.startswith("steering beats prompting")
    assert "+0.120 [+0.050, +0.190]" in wins.reason
    loses = rules.judge_prompting((-0.2, -0.3, -0.1), (0.1, 0.0, 0.2), (0.3, 0.2, 0.4),
                                  fluency={"vector": (1.5, 1.3, 1.7),
                                           "prompt": (1.05, 1.0, 1.1)})
    assert loses.verdict == rules.FAILS and loses.reason.startswith("prompting beats steering")
    assert "+0.200 [+0.100, +0.300]" in loses.reason  # by how much, with its interval
    assert any("vector's answers cost more fluency" in w for w in loses.warnings)
    tie = rules.judge_prompting((0.01, -0.05, 0.07))
    assert tie.verdict == rules.UNSURE and tie.reason.startswith("neither wins")
    assert rules.judge_prompting((0.1, math.nan, math.nan)).verdict == rules.UNSURE
    none = rules.judge_prompting(None, missing="no instruction for 'x'")
    assert none.verdict == rules.NOT_MEASURABLE and none.title == rules.FINDINGS["prompting"]
    both = rules.judge_prompting((0.0, -0.1, 0.1), (0.2, 0.1, 0.3), (0.2, 0.1, 0.3),
                                 combined_effect=(0.4, 0.3, 0.5))
    assert any("together" in w for w in both.warnings)
    assert {v.verdict for v in (wins, loses, tie, none)} == set(rules.VERDICTS)
    assert rules.Verdict.from_dict(loses.as_dict()).verdict == rules.FAILS
    # an A/B letter score from a model that does not answer A/B decides nothing
    flat = rules.judge_prompting((0.12, 0.05, 0.19), letter_mass=0.07)
    assert flat.verdict == rules.NOT_MEASURABLE and "0.07" in flat.reason
    assert flat.numbers["letter_mass"] == 0.07 and flat.numbers["difference"] == (0.12, 0.05,
                                                                                   0.19)
    assert rules.judge_prompting((0.12, 0.05, 0.19), letter_mass=0.9).verdict == rules.HOLDS
    assert rules.judge_prompting((0.12, 0.05, 0.19),
                                 letter_mass=math.nan).verdict == rules.NOT_MEASURABLE


def test_ab_format_on_a_model_that_does_not_answer_ab_is_not_measurable(
        tiny_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    # the random tiny model puts almost no mass on the letters: its letter score says nothing
    cfg = _config(tiny_dir, tmp_path, form="ab", out=tmp_path / "ab")
    got = prompting.run(cfg)
    assert got.verdict.verdict == rules.NOT_MEASURABLE, got.verdict.reason
    assert "letter mass" in got.verdict.reason
    records = _records(tmp_path / "ab")
    mass = [r for r in records if r["metric"] == "letter_mass"]
    assert len(mass) == 1 and 0.0 <= mass[0]["value"] < rules.MIN_LETTER_MASS
    assert mass[0]["n"] == 5 and got.verdict.numbers["letter_mass"] == mass[0]["value"]
    assert {r["metric"] for r in records} >= {"score", "difference"}  # numbers still shown
    # resume: the letter mass is kept, not measured again
    before = (tmp_path / "ab" / "results.jsonl").read_text()
    assert prompting.run(cfg).verdict.verdict == rules.NOT_MEASURABLE
    assert (tmp_path / "ab" / "results.jsonl").read_text() == before


# --- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    runner = Cli(tmp_path_factory.mktemp("cli"))
    yield runner
    runner.close()


def test_cli_eval_prompting_end_to_end(cli: Cli, tiny_dir: Path, tmp_path: Path,
                                       shared_data: Path) -> None:
    vec = _vector(tmp_path / "v.safetensors")
    out = tmp_path / "cli-run"
    res = cli.run("eval", "prompting", "--model", tiny_dir, "--data", "caa:refusal", "--vector",
                  vec, "--layers", "1", "--strengths", "1", "--limit", "4", "--shots", "1",
                  "--max-new-tokens", "2", "--fluency-limit", "3", "--judge",
                  f"axbench:local:{tiny_dir}", "--batch-size", "8", "-o", out)
    assert res.rc == 0, res
    assert "steering vs prompting" in res.out and "prompt+vector" in res.out
    assert any(v in res.out for v in ("holds", "does not hold", "inconclusive"))
    records = _records(out)
    scores = [r for r in records if r["metric"] == "score"]
    assert len({tuple(r["extra"]["item_ids"]) for r in scores}) == 1 and len(scores) == 4
    # the answers: a seeded 3 of the 4 scored items, the same 3 in every condition
    answered = {tuple(r["extra"]["item_ids"]) for r in records if r["metric"] == "fluency_ppl"}
    assert len(answered) == 1 and set(next(iter(answered))) < set(scores[0]["extra"]["item_ids"])
    # AxBench's judge on them: three aspects and the aggregate, and kappa against the phrases
    for metric in ("judge_score", "axbench_concept", "axbench_instruction", "axbench_fluency",
                   "classifier_agreement"):
        got = [r for r in records if r["metric"] == metric]
        assert len(got) == 4 and all(r["n"] == 3 for r in got), metric
    assert all(0.0 <= r["value"] <= 2.0 for r in records if r["metric"] == "judge_score")
    assert all("kappa" in r["extra"] for r in records if r["metric"] == "classifier_agreement")
    again = cli.run("eval", "prompting", "--model", tiny_dir, "--data", "caa:refusal",
                    "--vector", vec, "--layers", "1", "--strengths", "1,2", "-o",
                    tmp_path / "bad")
    assert_error(again, "--strengths", "one value")
    parts = cli.run("eval", "prompting", "--model", tiny_dir, "--data", "caa:refusal",
                    "--vector", vec, "--layers", "1", "--strengths", "1", "--prompt-parts",
                    "system,vibes", "-o", tmp_path / "bad2")
    assert_error(parts, "--prompt-parts")
