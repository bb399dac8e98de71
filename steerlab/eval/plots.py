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
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from steerlab.util.io import atomic_path

Band = tuple[Sequence[float], Sequence[float], Sequence[float]]  # mean, low, high


def _save(fig: Any, path: str | os.PathLike[str], note: str | None = None) -> None:
    """Write ``fig`` as PNG atomically; ``note`` (what the bands/bars are, n) goes under it."""
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, color="dimgrey", ha="left", va="top")
    try:
        with atomic_path(path, what="plot") as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


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
    ax.set_title(title, fontsize=10)
    for r, row in enumerate(values):
        for c, value in enumerate(row):
            if not math.isnan(value):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label=cbar)
    _save(fig, path)


def save_curves(path: str | os.PathLike[str], xs: Sequence[float],
                series: Mapping[str, Band], *, xlabel: str, ylabel: str, title: str,
                logx: bool = False, logy: bool = False, hline: float | None = None,
                band: str | None = "95 % interval") -> None:
    """One line per series with its band (mean, low, high per x); ``band`` says what the band
    is (printed under the plot).

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
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path, f"shaded: {band}" if band else None)


def save_scatter(path: str | os.PathLike[str],
                 series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str,
                 ylabel: str, title: str, vline: float | None = None,
                 note: str | None = None) -> None:
    """Points joined per series (x, y pairs, sorted by x), with an optional dashed vertical
    reference line at ``vline``.

    Example:
        >>> save_scatter("/tmp/s.png", {"a": ([1.0, 2.0], [0.5, 0.7])}, xlabel="x",
        ...              ylabel="y", title="t", vline=1.5)
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in series.items():
        points = sorted(zip(xs, ys, strict=True))
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", ms=3, lw=0.8,
                label=label)
    if vline is not None and not math.isnan(vline):
        ax.axvline(vline, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if 1 < len(series) <= 10:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path, note)


def save_bars(path: str | os.PathLike[str], groups: Sequence[str],
              series: Mapping[str, Band], *, ylabel: str, title: str,
              bars: str | None = "95 % interval", ylim: tuple[float, float] | None = None
              ) -> None:
    """Grouped bars with error bars: ``series[name] = (means, lows, highs)`` per group;
    ``bars`` says what the error bars are; ``ylim`` fixes the axis to the quantity's range.

    Example:
        >>> save_bars("/tmp/b.png", ["ID", "OOD"], {"trait": ([0.3, 0.1], [0.2, 0.0],
        ...           [0.4, 0.2])}, ylabel="effect", title="t")
    """
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(groups) * max(1, len(series)) / 2, 4))
    _bars_on(ax, groups, series, rotate_over=60)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8)
    _save(fig, path, f"error bars: {bars}" if bars else None)


@dataclass(frozen=True)
class BarPanel:
    """One panel of :func:`save_bar_panels`: its own groups, series, unit and range."""

    title: str
    groups: Sequence[str]
    series: Mapping[str, Band]
    ylabel: str
    ylim: tuple[float, float] | None = None


def _bars_on(ax: Any, groups: Sequence[str], series: Mapping[str, Band], *,
             rotate_over: int = 40) -> None:
    """Grouped bars with error bars on ``ax``; labels slant once their total length passes
    ``rotate_over`` characters (a wide single figure holds more than a panel)."""
    width = 0.8 / max(1, len(series))
    for k, (label, (mean, low, high)) in enumerate(series.items()):
        xs = [g + (k - (len(series) - 1) / 2) * width for g in range(len(groups))]
        err = [[0 if math.isnan(lo) else max(0.0, m - lo) for m, lo in zip(mean, low,
                                                                             strict=True)],
               [0 if math.isnan(hi) else max(0.0, hi - m) for m, hi in zip(mean, high,
                                                                            strict=True)]]
        ax.bar(xs, mean, width, yerr=err, capsize=3, label=label)
    rotate = max((len(g) for g in groups), default=0) * len(groups) > rotate_over
    ax.set_xticks(range(len(groups)), list(groups), rotation=30 if rotate else 0,
                  ha="right" if rotate else "center", fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)


def save_bar_panels(path: str | os.PathLike[str], panels: Sequence[BarPanel], *, title: str,
                    bars: str | None = "95 % interval") -> None:
    """Side-by-side bar panels, each with its own y unit (never two units on one axis).

    Example:
        >>> save_bar_panels("/tmp/p.png", [BarPanel("ID", ["a"], {"s": ([0.1], [0.0], [0.2])},
        ...                 "Δp", (-1, 1))], title="t")
    """
    if not panels:
        raise ValueError("no panels to draw")
    widths = [max(2, len(p.groups)) for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.5 + 1.1 * sum(widths), 4.2),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        _bars_on(ax, panel.groups, panel.series)
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.set_title(panel.title, fontsize=9)
        if len(panel.series) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path, f"error bars: {bars}" if bars else None)
