"""Every verdict of every finding is reachable from hand-made results, by the written rules."""

from __future__ import annotations

import math

import pytest

from steerlab.eval.verdicts import (
    FAILS,
    HOLDS,
    UNSURE,
    judge_adversarial,
    judge_ood,
    judge_perplexity,
    judge_samples,
    judge_size,
    validity_warnings,
)

NAN = (math.nan, math.nan, math.nan)


@pytest.mark.parametrize(("id_effect", "ood", "verdict"), [
    ((0.30, 0.20, 0.40), (0.05, -0.02, 0.12), HOLDS),       # OOD high 0.12 < 0.15
    ((0.30, 0.20, 0.40), (0.25, 0.18, 0.32), FAILS),        # OOD low 0.18 >= 0.15
    ((0.30, 0.20, 0.40), (0.10, 0.02, 0.20), UNSURE),       # straddles 0.15
    ((0.02, -0.05, 0.09), (0.00, -0.1, 0.1), UNSURE),       # no ID effect
    ((0.30, 0.20, 0.40), NAN, UNSURE),
])
def test_ood(id_effect, ood, verdict) -> None:
    assert judge_ood(id_effect, ood).verdict == verdict


@pytest.mark.parametrize(("plateau", "sizes", "full", "verdict"), [
    (40, [1, 10, 40, 80, 160], (0.3, 0.2, 0.4), HOLDS),
    (None, [1, 10, 40, 80, 160], (0.3, 0.2, 0.4), FAILS),
    (320, [1, 80, 320, 640], (0.3, 0.2, 0.4), FAILS),
    (10, [1, 10, 40], (0.3, 0.2, 0.4), UNSURE),             # never tried ~80
    (10, [1, 10, 80], (0.01, -0.05, 0.07), UNSURE),         # nothing to saturate
])
def test_samples(plateau, sizes, full, verdict) -> None:
    assert judge_samples(plateau, sizes, full, 400).verdict == verdict


def test_samples_warns_about_fewer_pairs_than_the_plateau() -> None:
    assert "fewer than the plateau" in judge_samples(80, [1, 80, 160], (0.3, 0.2, 0.4),
                                                     40).warnings[0]


@pytest.mark.parametrize(("success", "baseline", "xent", "natural", "n", "verdict"), [
    ((0.6, 0.4, 0.8), (0.1, 0.0, 0.3), (8.0, 7.5, 8.5), (4.0, 3.5, 4.5), 20, HOLDS),
    ((0.6, 0.4, 0.8), (0.1, 0.0, 0.3), (4.0, 3.0, 5.0), (4.0, 3.5, 4.5), 20, UNSURE),
    ((0.1, 0.02, 0.3), (0.1, 0.02, 0.3), (8.0, 7.5, 8.5), (4.0, 3.5, 4.5), 20, FAILS),
    ((0.2, 0.02, 0.6), (0.1, 0.01, 0.5), (8.0, 7.5, 8.5), (4.0, 3.5, 4.5), 5, UNSURE),
    (NAN, (0.1, 0.0, 0.3), None, None, 0, UNSURE),
])
def test_adversarial(success, baseline, xent, natural, n, verdict) -> None:
    assert judge_adversarial(success, baseline, xent, natural, n).verdict == verdict


@pytest.mark.parametrize(("ratio", "verdict"), [
    ((1.10, 1.05, 1.15), HOLDS), ((1.002, 0.99, 1.008), FAILS),
    ((1.01, 0.995, 1.03), UNSURE), (NAN, UNSURE)])
def test_perplexity(ratio, verdict) -> None:
    assert judge_perplexity(ratio, 0.4).verdict == verdict


@pytest.mark.parametrize(("big", "verdict"), [
    ((1.05, 1.02, 1.08), HOLDS), ((1.9, 1.7, 2.1), FAILS), ((1.35, 1.2, 1.5), UNSURE)])
def test_size(big, verdict) -> None:
    rows = [("small", 1.35e8, (1.4, 1.3, 1.5)), ("big", 1.5e9, big)]
    assert judge_size(rows).verdict == verdict
    assert judge_size(rows[:1]).verdict == UNSURE


def test_validity_warnings() -> None:
    assert validity_warnings(letter_mass=0.95, matching_a_share=0.5, base_rate=0.5) == []
    warned = validity_warnings(letter_mass=0.5, matching_a_share=0.8, base_rate=0.02)
    assert len(warned) == 3 and "(A) in 80%" in warned[1]
