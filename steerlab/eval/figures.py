"""One figure model: panels drawn by matplotlib, as a PNG file or as an inline SVG string.

Every figure is a list of panels drawn side by side. A panel is a small value object
(:class:`Curves`, :class:`Bars`, :class:`Heat`, :class:`Scatter`); the studies build panels once
and :func:`save_png` writes them beside a run (atomically), while the HTML report places the
same panels inline with :func:`draw`: the SVG's XML prolog, DOCTYPE, metadata and namespace
declarations are stripped (an HTML parser puts ``<svg>`` in the SVG namespace by itself), text
stays text (``svg.fonttype = none``) and the ids matplotlib writes are salted with the figure's
own id, so several figures in one page never share an id. The terminal view of a study is its
table (:mod:`steerlab.eval.tables`).

The Figure API is used directly (no pyplot, no global figure state).

Example:
    >>> panel = Curves("demo", "x", "y", [Line("a", [0, 1], [0.2, 0.4], [0.1, 0.3], [0.3, 0.5])])
    >>> svg = draw([panel], salt="demo")
    >>> svg.startswith("<svg") and "http" not in svg
    True
    >>> import pathlib, tempfile
    >>> png = pathlib.Path(tempfile.mkdtemp()) / "demo.png"
    >>> save_png(png, [panel], title="demo", note="shaded: 95 % interval")
    >>> png.read_bytes()[:4] == b"\\x89PNG"
    True
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from steerlab.util.io import atomic_path

#: one palette for every figure (matplotlib's tab10, colour-blind tolerable)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
#: the diverging colour map of every signed quantity (token projections, cosines, heatmaps)
DIVERGING = "RdBu_r"


#: a series as (means, lows, highs), one entry per x or group
Band = tuple[Sequence[float | None], Sequence[float | None], Sequence[float | None]]


@dataclass
class Line:
    """One series of a :class:`Curves` panel: means with an optional band (low, high)."""

    label: str
    xs: Sequence[float]
    mean: Sequence[float | None]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None
    dashed: bool = False


@dataclass
class Curves:
    """Lines with shaded bands (e.g. behaviour score vs strength with 95 % intervals)."""

    title: str
    xlabel: str
    ylabel: str
    lines: Sequence[Line]
    logx: bool = False
    logy: bool = False
    hline: float | None = None
    ylim: tuple[float, float] | None = None
    vline: float | None = None
    integer_x: bool = False


@dataclass
class Bars:
    """Grouped bars with error bars: ``series[label] = (means, lows, highs)`` per group."""

    title: str
    ylabel: str
    groups: Sequence[str]
    series: Mapping[str, Band]
    ylim: tuple[float, float] | None = None
    hline: float | None = 0.0
    logy: bool = False


@dataclass
class Heat:
    """A matrix ``values[r][c]`` with row/column labels, annotated; ``center`` makes the
    colour scale symmetric around it (diverging), else it spans the data."""

    title: str
    values: Sequence[Sequence[float | None]]
    rows: Sequence[str]
    cols: Sequence[str]
    xlabel: str = ""
    ylabel: str = ""
    cbar: str = ""
    center: float | None = None
    vmin: float | None = None
    vmax: float | None = None
    digits: int = 2
    annotate: bool | None = None  # write each cell's value (None: when there are ≤ 400 cells)


@dataclass
class Points:
    """One group of a :class:`Scatter` panel."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str = PALETTE[0]
    marker: str = "o"


@dataclass
class Scatter:
    """Points in groups, each with its own colour and marker (e.g. PCA by behaviour × letter)."""

    title: str
    xlabel: str
    ylabel: str
    groups: Sequence[Points] = field(default_factory=list)
    yticks: Sequence[tuple[float, str]] = ()


Panel = Curves | Bars | Heat | Scatter


def band_lines(xs: Sequence[float], series: Mapping[str, Band]) -> list[Line]:
    """One :class:`Line` per named band over the same ``xs``.

    Example:
        >>> [line.label for line in band_lines([0, 1], {"a": ([1, 2], [0, 1], [2, 3])})]
        ['a']
    """
    return [Line(label, xs, mean, low, high) for label, (mean, low, high) in series.items()]


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _curves(ax: Any, panel: Curves) -> None:
    for k, line in enumerate(panel.lines):
        color = PALETTE[k % len(PALETTE)]
        mean = [_num(v) for v in line.mean]
        ax.plot(list(line.xs), mean, marker="o", ms=4, color=color,
                ls="--" if line.dashed else "-", label=line.label)
        if line.low is not None and line.high is not None:
            low, high = [_num(v) for v in line.low], [_num(v) for v in line.high]
            ax.fill_between(list(line.xs), low, high, color=color,
                            alpha=0.18, lw=0)
    if panel.hline is not None:
        ax.axhline(panel.hline, color="grey", lw=0.8, ls="--")
    if panel.vline is not None:
        ax.axvline(panel.vline, color="grey", lw=0.8, ls=":")
    if panel.logx:
        ax.set_xscale("log")
    if panel.logy:
        ax.set_yscale("log")
    if panel.integer_x:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    if len(panel.lines) > 1:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _bars(ax: Any, panel: Bars) -> None:
    n = max(1, len(panel.series))
    width = 0.8 / n
    for k, (label, (mean, low, high)) in enumerate(panel.series.items()):
        xs = [g + (k - (n - 1) / 2) * width for g in range(len(panel.groups))]
        ms = [_num(v) for v in mean]
        err = [[0.0 if math.isnan(_num(lo)) or math.isnan(m) else max(0.0, m - _num(lo))
                for m, lo in zip(ms, low, strict=True)],
               [0.0 if math.isnan(_num(hi)) or math.isnan(m) else max(0.0, _num(hi) - m)
                for m, hi in zip(ms, high, strict=True)]]
        ax.bar(xs, ms, width, yerr=err, capsize=3, label=label,
               color=PALETTE[k % len(PALETTE)])
    long = max((len(g) for g in panel.groups), default=0) * len(panel.groups) > 40
    ax.set_xticks(range(len(panel.groups)), list(panel.groups),
                  rotation=25 if long else 0, ha="right" if long else "center", fontsize=7)
    if panel.hline is not None:
        ax.axhline(panel.hline, color="grey", lw=0.8)
    if panel.logy:
        ax.set_yscale("log")
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    if len(panel.series) > 1:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")


def _heat(fig: Figure, ax: Any, panel: Heat) -> None:
    grid = [[_num(v) for v in row] for row in panel.values]
    finite = _finite([v for row in grid for v in row])
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if panel.center is not None and finite:
        span = max(abs(vmax - panel.center), abs(panel.center - vmin)) or 1.0
        vmin, vmax = panel.center - span, panel.center + span
    vmin = panel.vmin if panel.vmin is not None else vmin
    vmax = panel.vmax if panel.vmax is not None else vmax
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    # pcolormesh (vector cells, no embedded raster), rows top to bottom like a table
    image = ax.pcolormesh(np.ma.masked_invalid(np.array(grid, dtype=float)), cmap=DIVERGING,
                          vmin=vmin, vmax=vmax, edgecolors="white", linewidth=0.5)
    ax.set_xlim(0, len(panel.cols))
    ax.set_ylim(len(panel.rows), 0)
    ax.set_xticks([c + 0.5 for c in range(len(panel.cols))], list(panel.cols), fontsize=7)
    ax.set_yticks([r + 0.5 for r in range(len(panel.rows))], list(panel.rows), fontsize=7)
    cells = len(panel.rows) * len(panel.cols)
    if panel.annotate or (panel.annotate is None and cells <= 400):
        for r, row in enumerate(grid):
            for c, value in enumerate(row):
                if not math.isnan(value):
                    strong = abs(2 * (value - vmin) / (vmax - vmin) - 1) > 0.6
                    ax.text(c + 0.5, r + 0.5, f"{value:.{panel.digits}f}",
                            ha="center", va="center", fontsize=6 if cells > 60 else 7,
                            color="white" if strong else "#111111")
    bar = fig.colorbar(image, ax=ax, label=panel.cbar)
    if bar.solids is not None:
        bar.solids.set_rasterized(False)  # keep the scale a vector drawing too
        bar.solids.set_edgecolor("face")  # no seams between its cells in a browser
    bar.ax.tick_params(labelsize=7)


def _scatter(ax: Any, panel: Scatter) -> None:
    for group in panel.groups:
        filled = group.marker not in ("x", "+")
        ax.scatter(list(group.xs), list(group.ys), s=22,
                   marker=group.marker, label=group.label, alpha=0.8,
                   facecolors=group.color if filled else None,
                   edgecolors="white" if filled else None,
                   c=None if filled else group.color, linewidths=0.5 if filled else 1.2)
    if panel.yticks:
        ax.set_yticks([p for p, _ in panel.yticks], [t for _, t in panel.yticks], fontsize=7)
    elif panel.groups:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _width(panel: Panel) -> float:
    if isinstance(panel, Heat):
        label = max((len(r) for r in panel.rows), default=0)
        return max(3.2, 1.2 + 0.55 * len(panel.cols) + 0.06 * label)
    if isinstance(panel, Bars):
        return max(3.2, 1.4 + 0.5 * len(panel.groups) * max(1, len(panel.series)) ** 0.5)
    return 4.6


def _height(panels: Sequence[Panel]) -> float:
    rows = max((len(p.rows) for p in panels if isinstance(p, Heat)), default=0)
    return max(3.3, min(14.0, 1.4 + 0.3 * rows))


def figure(panels: Sequence[Panel], *, title: str = "", note: str | None = None) -> Figure:
    """The panels side by side on one matplotlib :class:`~matplotlib.figure.Figure`; ``note``
    (what the bands or error bars are, n) is written under it.

    Example:
        >>> len(figure([Heat("h", [[0.1, 0.9]], ["10"], ["-1", "1"])]).axes)  # + colour bar
        2
    """
    if not panels:
        raise ValueError("a figure needs at least one panel")
    widths = [_width(p) for p in panels]
    fig = Figure(figsize=(sum(widths), _height(panels)), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False,
                        gridspec_kw={"width_ratios": widths})[0]
    for ax, panel in zip(axes, panels, strict=True):
        if isinstance(panel, Curves):
            _curves(ax, panel)
        elif isinstance(panel, Bars):
            _bars(ax, panel)
        elif isinstance(panel, Heat):
            _heat(fig, ax, panel)
        else:
            _scatter(ax, panel)
        xlabel = getattr(panel, "xlabel", "")
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(getattr(panel, "ylabel", ""), fontsize=8)
        ax.set_title(panel.title, fontsize=9)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    if note:
        fig.supxlabel(note, fontsize=7, color="dimgrey", x=0.01, ha="left")
    return fig


def draw(panels: Sequence[Panel], *, title: str = "", salt: str = "fig") -> str:
    """The panels side by side as one inline SVG string (see the module notes).

    ``salt`` (the figure's id in the page) makes the SVG's internal ids unique in the page and
    the output deterministic.

    Example:
        >>> "<svg" in draw([Heat("h", [[0.1, 0.9]], ["10"], ["-1", "1"])], salt="h")
        True
    """
    fig = figure(panels, title=title)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt,
                                "font.family": "DejaVu Sans"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return clean_svg(buffer.getvalue(), prefix=salt)


def save_png(path: str | os.PathLike[str], panels: Sequence[Panel], *, title: str = "",
             note: str | None = None) -> None:
    """The panels side by side as a PNG file at ``path``, written atomically.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "bars.png"
        >>> save_png(out, [Bars("t", "effect", ["ID", "OOD"], {"trait": ([0.3, 0.1],
        ...          [0.2, 0.0], [0.4, 0.2])})], note="error bars: 95 % interval")
        >>> out.stat().st_size > 0
        True
    """
    fig = figure(panels, title=title, note=note)
    with atomic_path(path, what="plot") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")  # long titles widen it


_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')
_SIZE = re.compile(r'(<svg\b[^>]*?)\s+width="[^"]*"\s+height="[^"]*"')


def clean_svg(text: str, prefix: str = "") -> str:
    """An SVG document as an element for an HTML page: no prolog, DOCTYPE, metadata or
    namespace URLs; the fixed size moved to a style so CSS can scale it; with ``prefix``, every
    id (and every reference to one) is prefixed so that figures never share an id in a page.

    Example:
        >>> clean_svg('<?xml version="1.0"?>\\n<svg xmlns="http://www.w3.org/2000/svg" '
        ...           'width="10pt" height="5pt" viewBox="0 0 10 5"><metadata>x</metadata>'
        ...           '</svg>')
        '<svg viewBox="0 0 10 5" style="width:10pt"></svg>'
    """
    text = _PROLOG.sub("", text, count=1)
    text = _METADATA.sub("", text)
    text = _XMLNS.sub("", text)
    match = re.search(r'<svg\b[^>]*?\swidth="([^"]*)"', text)
    width = match.group(1) if match else None
    text = _SIZE.sub(r"\1", text, count=1)
    if prefix:
        text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
        text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
        text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    if width:
        text = re.sub(r"(<svg\b[^>]*?)>", rf'\1 style="width:{width}">', text, count=1)
    return text.strip()


def diverging_colour(value: float, limit: float) -> str:
    """The page's one diverging scale: ``value`` in [−limit, limit] → ``#rrggbb`` (blue for
    negative, white at 0, red for positive; values beyond the limit take the end colour).

    Example:
        >>> diverging_colour(0.0, 1.0), diverging_colour(5.0, 1.0) == diverging_colour(1.0, 1.0)
        ('#f7f6f6', True)
    """
    if not math.isfinite(value):
        return "#cccccc"
    t = 0.5 if limit <= 0 else 0.5 + 0.5 * max(-1.0, min(1.0, value / limit))
    red, green, blue, _ = matplotlib.colormaps[DIVERGING](t)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"


def text_colour(value: float, limit: float) -> str:
    """Black or white text, whichever reads on :func:`diverging_colour` of ``value``.

    Example:
        >>> text_colour(0.0, 1.0), text_colour(1.0, 1.0)
        ('#111111', '#ffffff')
    """
    return "#ffffff" if limit > 0 and math.isfinite(value) and abs(value) / limit > 0.6 \
        else "#111111"
