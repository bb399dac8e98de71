"""``eval adversarial`` on a tiny model: records per item, the random baseline on the same
budget, natural-text cross-entropy, the frontier plot, resume and refusal of changed settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.eval.protocols import adversarial
from steerlab.vector import SteeringVector


def _config(tiny_dir: Path, tmp_path: Path, **overrides: object) -> adversarial.AdversarialConfig:
    torch.manual_seed(0)
    vec = SteeringVector.from_directions({1: torch.randn(64)}, resid_norms={"1": 1.0})
    path = vec.save(tmp_path / "v.safetensors")
    base: dict[str, object] = {
        "out": tmp_path / "run", "vector": path, "layers": "1", "value": 2.0,
        "model": str(tiny_dir), "data": "caa:refusal", "suffix_length": 3, "iterations": 2,
        "population": 2, "children": 4, "topk": 16, "limit": 3}
    return adversarial.AdversarialConfig(**{**base, **overrides})  # type: ignore[arg-type]


def test_adversarial_end_to_end_and_resume(tiny_dir: Path, tmp_path: Path,
                                           shared_data: Path) -> None:
    cfg = _config(tiny_dir, tmp_path)
    summary = adversarial.run(cfg)
    for key in ("success", "random_success"):
        value, low, high = summary[key]
        assert 0.0 <= low <= value <= high <= 1.0
    lines = (tmp_path / "run" / "results.jsonl").read_text()
    records = [json.loads(x) for x in lines.splitlines()]
    by_metric: dict[str, list[dict]] = {}
    for r in records:
        by_metric.setdefault(r["metric"], []).append(r)
    assert set(by_metric) == {"adv_success", "adv_objective", "adv_xent", "random_success",
                              "random_objective", "random_xent", "natural_xent"}
    assert all(len(v) == 3 for v in by_metric.values())  # one per item
    for found, rand in zip(by_metric["adv_objective"], by_metric["random_objective"],
                           strict=True):
        # the search never ends below its start, the baseline had the same budget
        assert found["value"] >= found["extra"]["start"] - 1e-6
        assert rand["extra"]["evaluations"] == found["extra"]["evaluations"]
        assert len(found["extra"]["suffix_ids"]) == 3
        success = next(r for r in by_metric["adv_success"]
                       if r["extra"]["item"] == found["extra"]["item"])
        assert success["value"] == float(found["value"] >= found["extra"]["unsteered"])
    assert all(r["n"] == adversarial.NATURAL_WINDOWS for r in by_metric["natural_xent"])
    frontiers = (tmp_path / "run" / "frontiers.jsonl").read_text().splitlines()
    assert len(frontiers) == 3 and all(json.loads(f)["points"] for f in frontiers)
    assert (tmp_path / "run" / "adversarial_frontier.png").stat().st_size > 1000
    adversarial.run(cfg)  # resumes: nothing new
    assert (tmp_path / "run" / "results.jsonl").read_text() == lines
    with pytest.raises(SteerlabError, match="iterations was 2, now 3"):
        adversarial.run(adversarial.AdversarialConfig(**{**cfg.__dict__, "iterations": 3}))


def test_adversarial_refuses_bad_settings_before_loading(tmp_path: Path) -> None:
    cfg = adversarial.AdversarialConfig(out=tmp_path / "r", vector=tmp_path / "v.safetensors",
                                        layers="1", value=1.0, model="/nonexistent",
                                        method="pgd")
    with pytest.raises(SteerlabError, match="--search must be one of epo, gcg"):
        adversarial.run(cfg)
    with pytest.raises(SteerlabError, match="--objective must be one of"):
        adversarial.run(adversarial.AdversarialConfig(**{**cfg.__dict__, "method": "epo",
                                                         "objective": "flip"}))
