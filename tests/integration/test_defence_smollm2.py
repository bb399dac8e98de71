"""``cast fit`` and ``eval defence`` end to end on SmolLM2-135M through the CLI.

A refusal vector (CAA refusal train split, open-answer form, 16 pairs, layer 14) and a
condition fitted on AdvBench vs XSTest's safe prompts (24 of each, candidate layers 4-10).
Defence at tiny sizes (3 prompts per set, one GCG suffix, 8 new tokens, SmolLM2 as its own
judge): this checks the wiring on a real chat model — the condition file's manifest, every
(prompt set × configuration) rate with a Wilson interval inside [0, 1], both classifiers and
their agreement, the answers and the plot — not the defence's strength.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import steerlab
from steerlab.vector import SteeringVector
from tests.integration.cli_helpers import read_records, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def refusal(smollm2, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = steerlab.load_dataset("caa:refusal", split="train").open_answers().subset(16, seed=0)
    vec = steerlab.extract(smollm2, train.answer_pairs(), method="mean_diff", layers=[14],
                           progress=False)
    return vec.save(tmp_path_factory.mktemp("vec") / "refusal.safetensors")


def test_cast_fit_and_defence_cli_on_smollm2(refusal: Path, tmp_path: Path) -> None:
    harm = tmp_path / "harm.safetensors"
    out = run_cli(["cast", "fit", "--model", "smollm2-135m", "--harmful", "advbench",
                   "--harmless", "xstest:safe", "--layers", "4-10:2", "--limit", "24",
                   "-o", str(harm)])
    assert "auroc" in out.lower()
    cond = SteeringVector.load(harm)
    fitted = cond.manifest["condition"]
    assert fitted["layer"] in (4, 6, 8, 10) and fitted["comparator"] in ("greater", "less")
    assert set(cond.layers) == {4, 6, 8, 10}

    run = tmp_path / "def"
    run_cli(["eval", "defence", "--model", "smollm2-135m", "--vector", str(refusal),
             "--layers", "14", "--strengths=0.4", "--condition", str(harm), "--suffixes", "1",
             "--judge", "local:smollm2-135m", "--max-new-tokens", "8", "--limit", "3",
             "-o", str(run)])
    recs = read_records(run)
    rates = [r for r in recs if r["metric"] == "refusal_rate"]
    sets = {r["data"] for r in rates}
    assert {"advbench", "xstest:safe"} <= sets and len(sets) >= 3  # + advbench with a suffix
    assert len(rates) == 3 * len(sets)  # unsteered, steered, conditional
    for r in rates:
        assert r["n"] >= 3 and 0.0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1.0
    assert {r["metric"] for r in recs} == {"refusal_rate", "judge_refusal_rate",
                                           "classifier_agreement"}
    answers = [json.loads(x) for x in (run / "generations.jsonl").read_text().splitlines()]
    assert answers and all(isinstance(a["answer"], str) for a in answers)
    assert (run / "defence_refusal.png").stat().st_size > 1000
