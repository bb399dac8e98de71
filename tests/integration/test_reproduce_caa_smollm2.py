"""``steerlab reproduce``'s CAA check (Rimsky et al. 2023's protocol) on SmolLM2-135M at tiny
sizes: the answer-letter vector, the letter mass at each multiplier, and the unsteered cell
agreeing with the plain A/B scorer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerlab.eval import verdicts as rules
from steerlab.eval.protocols import reproduce

pytestmark = pytest.mark.integration


def test_caa_check_on_smollm2(smollm2, shared_data: Path, tmp_path: Path) -> None:
    from steerlab.data.loaders import load_dataset
    from steerlab.eval.protocols.prompting_inputs import item_id
    from steerlab.scoring.ab import score_ab
    from steerlab.vector import SteeringVector

    got = reproduce.caa_check("smollm2-135m", "caa:refusal", 12, tmp_path / "caa",
                              train_limit=16, limit=8)
    items = load_dataset("caa:refusal", split="test").subset(8, 0)
    assert got.item_ids == [item_id(i) for i in items] and got.n_test == 50
    vec = SteeringVector.load(tmp_path / "caa" / "vector.safetensors")
    assert vec.manifest["read_position"] == "answer_token" and vec.layers == [12]
    assert set(got.letter_mass) == {-1.0, 0.0, 1.0}
    assert all(0.0 < m[0] <= 1.0 for m in got.letter_mass.values())
    assert 0.0 < got.strengths[1.0] < 1.0  # a raw ±1 is a fraction of the residual norm
    # the unsteered cell is the plain A/B scorer's numbers
    plain = score_ab(smollm2, items)
    mass = [a + b for a, b in zip(plain.p_matching, plain.p_not_matching, strict=True)]
    assert got.letter_mass[0.0][0] == pytest.approx(sum(mass) / len(mass), abs=1e-4)
    assert got.score[0.0][0] == pytest.approx(plain.mean, abs=1e-4)
    verdict = got.verdict()
    assert verdict.verdict in rules.VERDICTS
    if min(m[0] for m in got.letter_mass.values()) < rules.MIN_LETTER_MASS:
        assert verdict.verdict == rules.NOT_MEASURABLE and "at multipliers -1 / 0 / +1" in \
            verdict.reason
    assert any("8 of the 50 test items" in d for d in verdict.deviations)
    assert any("smollm2-135m (135 M parameters)" in d for d in verdict.deviations)
    json.dumps(verdict.as_dict())
