"""Interval and slope arithmetic used by every eval command (DESIGN §7).

Example:
    >>> mean_ci([0.0, 1.0, 1.0, 0.0])[0]
    0.5
    >>> round(slope([0, 1, 2], [1.0, 3.0, 5.0]), 6)
    2.0
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z95 = 1.959963984540054


def t95(df: int) -> float:
    """Two-sided 95 % Student-t quantile (→ 1.96 for large ``df``).

    Example:
        >>> round(t95(3), 3), round(t95(10_000), 2)
        (3.182, 1.96)
    """
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_ci(values: Sequence[float],
            bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval (mean ± t₀.₉₇₅,ₙ₋₁·s/√n); NaN interval if n < 2.

    With few items or seeds (OOD cells, sample-count draws) the t quantile matters: n = 4
    gives ±3.18 standard errors, not ±1.96. ``bounds`` is the range the quantity lives in
    (e.g. (0, 1) for a probability, (−1, 1) for a difference of two): the interval is clipped
    to it, so it never claims an impossible value.

    Example:
        >>> m, lo, hi = mean_ci([1.0, 2.0, 3.0])
        >>> m, round(hi - m, 4)
        (2.0, 2.4841)
        >>> mean_ci([0.9, 1.0, 1.0], bounds=(0.0, 1.0))[2]
        1.0
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = t95(n - 1) * math.sqrt(var / n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return mean, low, high


def wilson(successes: int, n: int) -> tuple[float, float, float]:
    """Proportion and Wilson 95 % interval.

    Example:
        >>> p, lo, hi = wilson(8, 10)
        >>> p, round(lo, 3), round(hi, 3)
        (0.8, 0.49, 0.943)
    """
    if n == 0:
        return math.nan, math.nan, math.nan
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # (clamped so float rounding never puts p itself outside its interval)
    return p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def bootstrap_ci(values: Sequence[float], *, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap 95 % interval (seeded, so reruns agree).

    Example:
        >>> m, lo, hi = bootstrap_ci([1.0, 1.0, 1.0])
        >>> (m, lo, hi)
        (1.0, 1.0, 1.0)
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    low = means[int(0.025 * (resamples - 1))]
    high = means[math.ceil(0.975 * (resamples - 1))]
    return mean, low, high


def mean_diff_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Difference of means mean(a) − mean(b), unpaired 95 % interval (Welch standard error,
    conservative df = min(n_a, n_b) − 1).

    Example:
        >>> mean_diff_ci([2.0, 4.0], [1.0, 1.0])[0]
        2.0
    """
    ma, la, _ = mean_ci(a)
    mb, lb, _ = mean_ci(b)
    diff = ma - mb
    if math.isnan(la) or math.isnan(lb):
        return diff, math.nan, math.nan
    se = math.hypot((ma - la) / t95(len(a) - 1), (mb - lb) / t95(len(b) - 1))
    half = t95(min(len(a), len(b)) - 1) * se
    return diff, diff - half, diff + half


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys on xs (NaN when xs has no spread).

    Example:
        >>> slope([0, 1], [0.0, -2.0])
        -2.0
    """
    if len(xs) != len(ys):
        raise ValueError(f"slope needs equal lengths, got {len(xs)} and {len(ys)}")
    n = len(xs)
    if n < 2:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def steerability(coefficients: Sequence[float],
                 propensities: Sequence[Sequence[float]]) -> tuple[list[float], float, float]:
    """Per-item steerability (slope of propensity vs coefficient, Tan et al. 2024).

    ``propensities[j][i]`` is item i's propensity at ``coefficients[j]``. Returns the per-item
    slopes, their mean, and the anti-steerable fraction (share of items with a negative slope).

    Example:
        >>> slopes, mean, anti = steerability([-1, 1], [[0.0, 1.0], [2.0, 0.0]])
        >>> slopes, mean, anti
        ([1.0, -0.5], 0.25, 0.5)
    """
    if len(coefficients) != len(propensities):
        raise ValueError(f"{len(coefficients)} coefficients but {len(propensities)} rows of "
                         "propensities")
    n_items = len(propensities[0]) if propensities else 0
    slopes = [slope(coefficients, [row[i] for row in propensities]) for i in range(n_items)]
    finite = [s for s in slopes if not math.isnan(s)]
    mean = sum(finite) / len(finite) if finite else math.nan
    anti = sum(s < 0 for s in finite) / len(finite) if finite else math.nan
    return slopes, mean, anti


def plateau(ns: Sequence[int], means: Sequence[float],
            half_widths: Sequence[float]) -> int | None:
    """The sample count past which more pairs gain less than the interval of the larger count.

    The smallest n such that every larger n' improves the mean by less than the half-width of
    n''s 95 % interval (mean(n') − mean(n) < hw(n')). Comparing with *every* later size, not
    just the next, keeps a noisy early plateau (wide intervals at n = 1, 2) from counting.
    ``None`` if even the second-largest size is still beaten by the largest.

    Example:
        >>> plateau([10, 20, 40, 80], [0.5, 0.7, 0.72, 0.73], [0.05, 0.05, 0.05, 0.05])
        20
    """
    if not len(ns) == len(means) == len(half_widths):
        raise ValueError("plateau needs equal-length ns, means and half_widths")
    order = sorted(range(len(ns)), key=lambda i: ns[i])
    ns = [ns[i] for i in order]
    means = [means[i] for i in order]
    half_widths = [half_widths[i] for i in order]
    for k in range(len(ns) - 1):
        if all(means[j] - means[k] < half_widths[j] for j in range(k + 1, len(ns))):
            return ns[k]
    return None
