"""Hand-computed expectations for the eval arithmetic (DESIGN §7)."""

from __future__ import annotations

import math

import pytest

from steerlab.eval.behaviour import cell_records, layer_chunks
from steerlab.scoring.ab import ABResult
from steerlab.util.stats import (
    bootstrap_ci,
    mean_ci,
    mean_diff_ci,
    plateau,
    slope,
    steerability,
    wilson,
)


def test_mean_ci_by_hand() -> None:
    mean, low, high = mean_ci([1.0, 2.0, 3.0, 6.0])
    # mean 3, sample sd sqrt(14/3) = 2.1602, se 1.0801, t(0.975, 3) = 3.1824
    assert mean == 3.0
    assert high - mean == pytest.approx(3.182446 * math.sqrt(14 / 3) / 2, rel=1e-5)
    assert mean - low == pytest.approx(high - mean)
    assert math.isnan(mean_ci([1.0])[1])


def test_wilson_by_hand() -> None:
    p, low, high = wilson(0, 10)
    assert p == 0.0 and low == 0.0
    assert high == pytest.approx(3.8415 / (10 + 3.8415), rel=1e-3)  # z²/(n+z²) when k=0
    assert wilson(5, 10)[1] == pytest.approx(1 - wilson(5, 10)[2])


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = [0.0, 1.0] * 20
    a, b = bootstrap_ci(values, seed=3), bootstrap_ci(values, seed=3)
    assert a == b and a[1] < 0.5 < a[2]


def test_mean_diff_and_slope() -> None:
    diff, low, high = mean_diff_ci([2.0, 4.0], [1.0, 3.0])
    assert diff == 1.0
    se = math.hypot(math.sqrt(2 / 2), math.sqrt(2 / 2))  # var 2 each, n 2
    assert high - diff == pytest.approx(12.706205 * se, rel=1e-5)  # t(0.975, df=1)
    assert diff - low == pytest.approx(high - diff)
    assert slope([0, 1, 2, 3], [1.0, 1.5, 2.0, 2.5]) == pytest.approx(0.5)
    assert math.isnan(slope([1, 1], [0.0, 2.0]))


def test_steerability_and_anti_steerable_fraction() -> None:
    coefficients = [-2.0, 0.0, 2.0]
    # item 0: +1 per unit; item 1: -0.25 per unit; item 2: flat
    props = [[-2.0, 0.5, 0.0], [0.0, 0.0, 0.0], [2.0, -0.5, 0.0]]
    slopes, mean, anti = steerability(coefficients, props)
    assert slopes == pytest.approx([1.0, -0.25, 0.0])
    assert mean == pytest.approx(0.25)
    assert anti == pytest.approx(1 / 3)


def test_plateau() -> None:
    ns = [1, 2, 5, 10, 20, 40, 80, 160]
    means = [0.50, 0.60, 0.70, 0.78, 0.84, 0.87, 0.88, 0.885]
    half = [0.03] * 8
    assert plateau(ns, means, half) == 40  # 40→80 (+0.01), 40→160 (+0.015) < 0.03
    assert plateau([1, 2], [0.1, 0.9], [0.01, 0.01]) is None
    # a wide early interval does not make n=1 the plateau: later sizes beat it clearly
    assert plateau([1, 5, 40, 80], [0.14, 0.20, 0.28, 0.30], [0.5, 0.3, 0.04, 0.03]) == 40


def test_cell_records_by_hand() -> None:
    res = {(4, -1.0): ABResult((0.2, 0.6), (-2.0, 0.4), (0.2, 0.6), (0.8, 0.4)),
           (4, 1.0): ABResult((0.8, 0.4), (2.0, -0.4), (0.8, 0.4), (0.2, 0.6))}
    recs = cell_records(res, 4, [-1.0, 1.0], "coefficient", 2.0, split="val", model="m")
    by_metric = {(r["metric"], r["coefficient"]): r for r in recs}
    assert by_metric[("score", -1.0)]["value"] == pytest.approx(0.4)
    assert by_metric[("propensity", 1.0)]["value"] == pytest.approx(0.8)
    assert by_metric[("steerability", None)]["value"] == pytest.approx((2.0 - 0.4) / 2)
    assert by_metric[("anti_steerable", None)]["value"] == pytest.approx(0.5)
    assert by_metric[("effect", None)]["value"] == pytest.approx(((0.8 - 0.2) + (0.4 - 0.6)) / 2)
    assert all(r["split"] == "val" and r["layer"] == 4 for r in recs)


def test_layer_chunks_are_deterministic() -> None:
    assert layer_chunks([12, 4, 8, 0, 16], 2) == [[0, 4], [8, 12], [16]]
