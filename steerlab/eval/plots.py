"""PNG plots for eval runs (matplotlib, Agg backend, written atomically).

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "curve.png"
    >>> save_curves(out, [1, 2], {"score": ([0.5, 0.6], [0.4, 0.5], [0.6, 0.7])},
    ...             xlabel="n", ylabel="score", title="demo")
    >>> out.stat().st_size > 0
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Band = tuple[Sequence[float], Sequence[float], Sequence[float]]  # mean, low, high


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        tmp.replace(target)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def save_heatmap(path: str | os.PathLike[str], values: Sequence[Sequence[float]],
                 rows: Sequence[Any], cols: Sequence[Any], *, xlabel: str, ylabel: str,
                 title: str, cbar: str = "", center: float | None = None) -> None:
    """Heatmap of ``values[r][c]`` with each cell annotated (NaN cells left blank).

    Example:
        >>> save_heatmap("/tmp/h.png", [[0.1, 0.9]], [10], [-1, 1], xlabel="c",
        ...              ylabel="layer", title="t")
    """
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(cols), 1.0 + 0.38 * len(rows)))
    finite = [v for row in values for v in row if not math.isnan(v)]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if center is not None and finite:
        span = max(abs(vmax - center), abs(center - vmin)) or 1.0
        vmin, vmax = center - span, center + span
    image = ax.imshow([list(r) for r in values], aspect="auto", cmap="RdBu_r", vmin=vmin,
                      vmax=vmax)
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for r, row in enumerate(values):
        for c, value in enumerate(row):
            if not math.isnan(value):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label=cbar)
    _save(fig, path)


def save_curves(path: str | os.PathLike[str], xs: Sequence[float],
                series: Mapping[str, Band], *, xlabel: str, ylabel: str, title: str,
                logx: bool = False, hline: float | None = None) -> None:
    """One line per series with its 95 % band (mean, low, high per x).

    Example:
        >>> save_curves("/tmp/c.png", [0, 1], {"a": ([1, 2], [0, 1], [2, 3])}, xlabel="x",
        ...             ylabel="y", title="t")
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (mean, low, high) in series.items():
        ax.plot(xs, mean, marker="o", label=label)
        if not any(math.isnan(v) for v in [*low, *high]):
            ax.fill_between(xs, low, high, alpha=0.2)
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8, ls="--")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def save_bars(path: str | os.PathLike[str], groups: Sequence[str],
              series: Mapping[str, Band], *, ylabel: str, title: str) -> None:
    """Grouped bars with 95 % error bars: ``series[name] = (means, lows, highs)`` per group.

    Example:
        >>> save_bars("/tmp/b.png", ["ID", "OOD"], {"trait": ([0.3, 0.1], [0.2, 0.0],
        ...           [0.4, 0.2])}, ylabel="effect", title="t")
    """
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(groups) * max(1, len(series)) / 2, 4))
    width = 0.8 / max(1, len(series))
    for k, (label, (mean, low, high)) in enumerate(series.items()):
        xs = [g + (k - (len(series) - 1) / 2) * width for g in range(len(groups))]
        err = [[0 if math.isnan(lo) else m - lo for m, lo in zip(mean, low, strict=True)],
               [0 if math.isnan(hi) else hi - m for m, hi in zip(mean, high, strict=True)]]
        ax.bar(xs, mean, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    _save(fig, path)
