"""``steerlab doctor`` on the real SmolLM2-135M: blocks, width and final norm found; at each
checked layer the steering moves the logits, is exactly h + v at the block output (and in
``output_hidden_states``), equals a hand-written hook, and ``prompt`` / ``generation`` positions
are right under ``generate`` with the KV cache and in steerlab's own decoder."""

from __future__ import annotations

import time

import pytest
import torch

from steerlab.testing.doctor import doctor
from steerlab.vector import SteeringVector
from tests.integration.cli_helpers import run_cli

pytestmark = pytest.mark.integration


def test_doctor_smollm2_is_exact(smollm2) -> None:
    start = time.perf_counter()
    result = doctor(smollm2, layers="14")
    seconds = time.perf_counter() - start
    report = result.report
    assert (report.blocks_path, report.n_blocks, report.width) == ("model.layers", 30, 576)
    assert report.final_norm == "model.norm (LlamaRMSNorm)"
    assert report.kinds == {"LlamaDecoderLayer": list(range(30))}
    assert result.exact, result.verdict
    row = result.per_layer[14]
    assert row["delta"] > 1.0  # a residual-norm push moves the logits a lot
    assert row["error"] == 0.0 and row["h+v"] == 0.0 and row["hidden_states"] == 0.0
    assert row["generate prompt"] <= 1e-4 and row["generate generation"] <= 1e-4
    print(f"doctor on SmolLM2 at layer 14: {seconds:.1f} s; {result.verdict}")


def test_doctor_smollm2_with_a_vector_file(smollm2, tmp_path) -> None:
    width = smollm2.hidden_size
    direction = torch.randn(width, generator=torch.Generator().manual_seed(0))
    path = SteeringVector.from_directions({10: direction * 4}).save(tmp_path / "v.safetensors")
    out = run_cli(["doctor", "--model", "smollm2-135m", "--vector", str(path), "--no-generate"])
    assert "30 blocks at model.layers, width 576" in out
    assert "vector: the given vector, coefficient 1" in out
    assert "verdict: exact: at layer(s) 10" in out
