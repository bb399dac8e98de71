"""``steerlab eval perplexity | capabilities | sentiment`` end to end on the real SmolLM2-135M.

Small n everywhere (2–3 items, short windows, a few tokens): these check the plumbing — the
records in results.jsonl, the PNG plots, resuming (a rerun measures nothing; a cell cut short
by a kill is measured again) — plus one cheap direction check: a large push along a real
steering direction raises WikiText perplexity.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import steerlab
from steerlab.cli import app
from steerlab.errors import SteerlabError
from tests.integration.cli_helpers import read_records, run_cli

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture(scope="module")
def vector(smollm2, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = steerlab.load_dataset("builtin:optimism", split="train").subset(12, seed=0)
    vec = steerlab.extract(smollm2, data, method="mean_diff", layers=[6, 12], progress=False)
    return vec.save(tmp_path_factory.mktemp("vec") / "opt.safetensors")


def invoke(*args: str) -> str:
    return run_cli(["eval", *args])


records = read_records


def test_perplexity_ratio_grows_and_resumes(vector: Path, tmp_path: Path) -> None:
    args = ["perplexity", "--vector", str(vector), "--layers", "12", "--coefficients=0,60",
            "--window", "48", "--limit", "2", "--out", str(tmp_path)]
    output = invoke(*args)
    assert "ratio" in output
    recs = records(tmp_path)
    assert {r["cell"] for r in recs if r["extra"].get("baseline")}  # the unsteered pass
    ratio = {r["coefficient"]: r for r in recs if r["metric"] == "ppl_ratio"}
    assert ratio[0.0]["value"] == pytest.approx(1.0)
    assert ratio[60.0]["value"] > 1.05 and ratio[60.0]["ci_low"] > 1.0  # the cost of steering
    assert all(r["n"] == 2 and r["model"] == "smollm2-135m" and r["layer"] == 12
               for r in ratio.values())
    ppl = next(r for r in recs if r["metric"] == "ppl" and r["coefficient"] == 60.0)
    assert len(ppl["extra"]["window_nll"]) == 2 and ppl["extra"]["tokens_per_window"] == 47
    assert (tmp_path / "perplexity_ratio.png").stat().st_size > 1000

    lines = (tmp_path / "results.jsonl").read_text().splitlines(keepends=True)
    invoke(*args)  # nothing left to do
    assert (tmp_path / "results.jsonl").read_text().splitlines(keepends=True) == lines
    (tmp_path / "results.jsonl").write_text("".join(lines[:-1]))  # killed mid-cell
    invoke(*args)
    again = records(tmp_path)
    assert len(again) == len(recs)
    assert again[-1]["metric"] == "ppl_ratio" and again[-1]["value"] == pytest.approx(
        ratio[60.0]["value"], rel=1e-4)

    # other settings into the same directory: refused with the setting named, nothing changed
    refused = runner.invoke(app, ["eval", *args[:-2], "--positions", "generation", "--out",
                                  str(tmp_path)])
    assert isinstance(refused.exception, SteerlabError)
    assert "positions was 'all', now 'generation'" in str(refused.exception)
    assert len(records(tmp_path)) == len(recs)
    gen_dir = tmp_path / "generation"
    invoke(*args[:-2], "--positions", "generation", "--out", str(gen_dir))
    gen_ratio = [r for r in records(gen_dir) if r["metric"] == "ppl_ratio"
                 and r["extra"]["positions"] == "generation"]
    assert len(gen_ratio) == 2 and gen_ratio[0]["extra"]["context"] == 24


def test_capabilities_accuracy_cells(vector: Path, tmp_path: Path) -> None:
    args = ["capabilities", "--vector", str(vector), "--layers", "12", "--coefficients=-4,0",
            "--limit", "2", "--out", str(tmp_path)]
    invoke(*args)
    recs = records(tmp_path)
    assert len(recs) == 2 * 2 * 3  # benchmarks × coefficients × (accuracy, p_correct, mass)
    acc = [r for r in recs if r["metric"] == "accuracy"]
    assert {r["data"] for r in acc} == {"capabilities:mmlu", "capabilities:truthfulqa"}
    for r in acc:
        assert r["n"] == 2 and 0.0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1.0
        assert r["value"] in (0.0, 0.5, 1.0)  # a share of 2 items
    assert (tmp_path / "capabilities_accuracy.png").stat().st_size > 1000
    invoke(*args)
    assert len(records(tmp_path)) == len(recs)


def test_sentiment_actadd_pair_and_toxicity(tmp_path: Path) -> None:
    args = ["sentiment", "--pair", " love", " hate", "--layers", "6", "--coefficients=0,8",
            "--prompt-sets", "negative", "--limit", "2", "--max-new-tokens", "4",
            "--temperature", "0",
            "--out", str(tmp_path)]
    output = invoke(*args)
    assert "coefficient 8 = strength" in output  # the raw value's calibrated equivalent
    recs = records(tmp_path)
    by = {(r["metric"], r["coefficient"]): r for r in recs if r["layer"] == 6}
    assert {m for m, _ in by} == {"p_positive", "success_rate", "shift", "fluency_ppl",
                                  "shift_masked", "mask_rate", "compound", "shift_vader",
                                  "shift_vader_masked", "ppl_ratio"}
    assert by[("shift", 0.0)]["value"] == 0.0 and by[("ppl_ratio", 0.0)]["value"] == 1.0
    assert by[("p_positive", 8.0)]["n"] == 2 and by[("p_positive", 8.0)]["method"] == "actadd"
    assert by[("p_positive", 8.0)]["extra"]["positions"] == "front"
    assert by[("p_positive", 8.0)]["extra"]["as_strength"] > 0
    assert all(0.0 <= s <= 1.0 for s in by[("p_positive", 8.0)]["extra"]["scores"])
    assert all(-1.0 <= s <= 1.0 for s in by[("compound", 8.0)]["extra"]["scores"])
    assert by[("mask_rate", 8.0)]["extra"]["words"] == ["love", "hate"]
    assert by[("fluency_ppl", 8.0)]["value"] > 1.0 and by[("ppl_ratio", 8.0)]["value"] > 0
    for name in ("sentiment_shift.png", "sentiment_success_rate.png", "actadd.safetensors"):
        assert (tmp_path / name).stat().st_size > 1000
    invoke(*args)
    assert len(records(tmp_path)) == len(recs)

    tox = tmp_path / "tox"
    invoke("sentiment", "--task", "toxicity", "--vector", str(tmp_path / "actadd.safetensors"),
           "--layers", "6", "--coefficients=0,8", "--limit", "2", "--max-new-tokens", "4",
           "--temperature", "0", "--out", str(tox))
    metrics = {r["metric"] for r in records(tox)}
    # the ActAdd vector's own words (love/hate, from its pair tokens) are masked here too
    assert metrics == {"toxicity", "toxic_rate", "fluency_ppl", "shift", "shift_masked",
                       "mask_rate", "ppl_ratio"}
    assert all(0.0 <= r["value"] <= 1.0 for r in records(tox) if r["metric"] == "toxicity")
    assert (tox / "toxicity_toxic_rate.png").is_file()


def test_bad_input_is_one_clear_error(vector: Path, tmp_path: Path) -> None:
    cases = [
        (["perplexity", "--vector", str(vector), "--layers", "12", "--coefficients=0,1",
          "--strengths=0,1", "--out", str(tmp_path)], "not both"),
        (["capabilities", "--vector", str(vector), "--layers", "12", "--coefficients=0",
          "--benchmarks", "gsm8k", "--out", str(tmp_path)], "bad value 'gsm8k'"),
        (["sentiment", "--coefficients=0", "--out", str(tmp_path)], "--pair POS NEG"),
        (["sentiment", "--pair", " love", " hate", "--coefficients=0", "--task", "poems",
          "--out", str(tmp_path)], "--task"),
        # SmolLM2 splits "Hate" into "H" + "ate": ActAdd's rows would pair different words
        (["sentiment", "--pair", "Love", "Hate", "--coefficients=0", "--limit", "1",
          "--out", str(tmp_path / "misaligned")], "['Love'] vs ['H', 'ate']"),
        (["sentiment", "--pair", "Love", "Love", "--coefficients=0", "--out", str(tmp_path)],
         "both 'Love'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["eval", *args])
        assert isinstance(result.exception, SteerlabError), result.output
        assert message in str(result.exception) and "\n" not in str(result.exception)
