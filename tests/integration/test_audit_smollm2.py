"""``steerlab audit`` end to end on SmolLM2-135M at tiny sizes through the CLI: every study
runs on the real model and data, the verdict table names all five findings, and the report
renders the audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerlab.eval.verdicts import FINDINGS
from tests.integration.cli_helpers import run_cli

pytestmark = pytest.mark.integration


def test_audit_cli_on_smollm2(smollm2, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    output = run_cli(["audit", "--model", "smollm2-135m", "--data", "caa:refusal",
                      "--layers", "10,14", "--strengths=-0.4,0,0.4", "--limit", "8",
                      "--train-limit", "16", "--n", "4,16", "--seeds", "1",
                      "--judge", "local:smollm2-135m", "--ood-limit", "2",
                      "--max-new-tokens", "8", "--adversarial-limit", "2", "--iterations", "1",
                      "--perplexity-limit", "2", "-o", str(out)])
    assert "verdicts.json" in output
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert [v["finding"] for v in verdicts] == list(FINDINGS)
    summary = json.loads((out / "audit.json").read_text())
    assert summary["layer"] in (10, 14) and summary["strength"] == 0.4
    assert summary["params"] > 100e6  # SmolLM2-135M's own parameters were counted
    for study in ("sweep", "samples", "ood", "adversarial", "perplexity"):
        records = (out / study / "results.jsonl").read_text().splitlines()
        assert records and all(json.loads(r)["model"] in ("smollm2-135m", None)
                               for r in records[:5]), study
    page = tmp_path / "audit.html"
    run_cli(["report", str(out), "-o", str(page)])
    html = page.read_text()
    assert all(title in html for title in FINDINGS.values())
