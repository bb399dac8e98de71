"""``steerlab eval sweep|samples|models`` end to end on SmolLM2-135M with small n, and a real
sweep killed mid-run that resumes without redoing or losing finished cells."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerlab.cli import app
from tests.integration.cli_helpers import read_records, run_cli

pytestmark = pytest.mark.integration
runner = CliRunner()


_records = read_records
_invoke = run_cli


def test_sweep_end_to_end_and_rerun_skips(smollm2, shared_data, tmp_path: Path) -> None:
    run = tmp_path / "sweep"
    args = ["eval", "sweep", "--data", "caa:refusal", "--layers", "10,14",
            "--strengths=-0.5,0,0.5", "--limit", "4", "--train-limit", "8", "--out", str(run)]
    out = _invoke(args)
    assert "test split at layer" in out
    records = _records(run)
    val = [r for r in records if r["split"] == "val" and r["metric"] == "score"]
    assert sorted({(r["layer"], r["strength"]) for r in val}) == [
        (k, s) for k in (10, 14) for s in (-0.5, 0.0, 0.5)]
    assert all(r["n"] == 4 and 0 <= r["value"] <= 1 for r in val)
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in val)
    chosen = {r["layer"] for r in records if r["split"] == "test"}
    assert len(chosen) == 1
    effects = {r["layer"]: r["value"] for r in records
               if r["split"] == "val" and r["metric"] == "effect"}
    assert chosen == {max(effects, key=effects.__getitem__)}  # chosen on val, not on test
    assert {"steerability", "anti_steerable", "propensity"} <= {r["metric"] for r in records}
    for png in ("sweep_heatmap.png", "sweep_test.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG"
    before = (run / "results.jsonl").read_text()
    _invoke(args)
    assert (run / "results.jsonl").read_text() == before  # every cell skipped


def test_sweep_killed_mid_run_resumes(smollm2, shared_data, tmp_path: Path) -> None:
    run = tmp_path / "killed"
    # layers 2..22 step 4 = 6 layers → two engine cells on val (4 + 2 layers), then test
    cmd = [sys.executable, "-m", "steerlab.cli", "eval", "sweep", "--data", "caa:refusal",
           "--layers", "2-22:4", "--coefficients=-4,4", "--limit", "3", "--train-limit", "6",
           "--out", str(run)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    results = run / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cells_before = {r["cell"] for r in _records(run)}
    assert len(cells_before) == 1  # only the first cell had landed
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = _records(run)
    keys = [(r["cell"], r["split"], r["layer"], r["coefficient"], r["metric"]) for r in records]
    assert len(keys) == len(set(keys))  # nothing written twice
    val_layers = {r["layer"] for r in records if r["split"] == "val"}
    assert val_layers == {2, 6, 10, 14, 18, 22}
    assert any(r["split"] == "test" for r in records)


def test_samples_end_to_end(smollm2, shared_data, tmp_path: Path) -> None:
    run = tmp_path / "samples"
    out = _invoke(["eval", "samples", "--data", "builtin:optimism", "--layers", "10", "--n",
                   "1,4", "--seeds", "2", "--strengths=-0.3,0.3", "--limit", "4",
                   "--train-limit", "12", "--out", str(run)])
    assert "plateau" in out
    records = _records(run)
    cos = {(r["n_pairs"], r["seed"]): r["value"] for r in records if r["metric"] == "cosine"}
    assert sorted(cos) == [(1, 0), (1, 1), (4, 0), (4, 1), (12, 0)]
    assert cos[(12, 0)] == pytest.approx(1.0, abs=1e-6)        # the full vector itself
    assert all(-1 - 1e-6 <= v <= 1 + 1e-6 for v in cos.values())
    assert cos[(1, 0)] != cos[(1, 1)]                          # different draws differ
    assert sum(r["metric"] == "effect" for r in records) == 5
    assert (run / "samples_effect.png").exists() and (run / "samples_cosine.png").exists()


def test_models_end_to_end(smollm2, shared_data, tmp_path: Path) -> None:
    run = tmp_path / "size"
    out = _invoke(["eval", "models", "--models", "smollm2-135m", "--data", "builtin:optimism",
                   "--depths", "0.3,0.5", "--strengths=-0.3,0,0.3", "--limit", "3",
                   "--train-limit", "8", "--out", str(run)])
    assert "models_effect.png" in out
    records = _records(run)
    assert {r["layer"] for r in records if r["split"] == "val"} == {9, 14}  # 0.3, 0.5 of 29
    assert {r["model"] for r in records} == {"smollm2-135m"}
    assert (run / "models_effect.png").exists()


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "sweep", "--data", "caa:refusal", "--strengths", "0.4",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "at least two values" in str(result.exception)
    result = runner.invoke(app, ["eval", "samples", "--data", "builtin:optimism", "--layers", "3",
                                 "--n", "a,b", "--out", str(tmp_path / "y")])
    assert result.exit_code != 0 and "--n" in str(result.exception)


def test_sweep_open_answer_format(smollm2, shared_data, tmp_path: Path) -> None:
    run = tmp_path / "open"
    _invoke(["eval", "sweep", "--data", "caa:refusal", "--format", "open", "--layers", "14",
             "--strengths=-0.4,0.4", "--limit", "3", "--train-limit", "6", "--out", str(run)])
    records = _records(run)
    scores = [r for r in records if r["metric"] == "score"]
    assert {r["data"] for r in records} == {"caa:refusal/open"}
    assert {(r["split"], r["strength"]) for r in scores} == {
        (s, v) for s in ("val", "test") for v in (-0.4, 0.4)}
    assert all(r["n"] == 3 and 0 < r["value"] < 1 for r in scores)
