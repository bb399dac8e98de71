"""What a report page is made of: plain value objects the template renders.

A :class:`Page` has provenance, an optional verdict table, warnings and sections; a
:class:`Section` (one study of one run, one vector, or one insight view) has figures (inline
SVG with a caption that states n, the band, the model and the layer), tables, side-by-side
generations and per-token heatmaps.

Example:
    >>> fig = Figure("f1", "score vs strength", "<svg></svg>", n="20 items", band="95 % t",
    ...              model="m", layer="12")
    >>> fig.caption
    'n = 20 items · band: 95 % t · model m · layer 12'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


def slug(text: str) -> str:
    """An id-safe version of ``text`` (letters, digits and dashes).

    Example:
        >>> slug("sweep / layer 12 (val)")
        'sweep-layer-12-val'
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


@dataclass
class Figure:
    """One figure: inline SVG and what a reader needs to trust it."""

    id: str
    title: str
    svg: str
    n: str
    band: str
    model: str
    layer: str
    note: str = ""

    @property
    def caption(self) -> str:
        """n, band, model and layer in one line (every figure states all four)."""
        return f"n = {self.n} · band: {self.band} · model {self.model} · layer {self.layer}"


@dataclass
class Table:
    """A small table; ``marks[i]`` is a CSS class for row i (e.g. ``chosen``)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    marks: list[str] = field(default_factory=list)


@dataclass
class Answer:
    """One generation in a side-by-side row."""

    text: str
    score: str = ""


@dataclass
class GenerationRow:
    """A prompt and its answers, one per column."""

    label: str
    prompt: str
    answers: list[Answer]


@dataclass
class Generations:
    """Answers at −s / 0 / +s (or any values) side by side."""

    title: str
    columns: list[str]
    rows: list[GenerationRow]
    note: str = ""


@dataclass
class Token:
    """One token of a heatmap: its text, its own value, and the colours from that value."""

    text: str
    value: float
    colour: str
    ink: str
    title: str


@dataclass
class TokenLine:
    """One prompt as a row of tokens."""

    label: str
    tokens: list[Token]


@dataclass
class TokenBlock:
    """Per-token projections of several prompts on one shared diverging scale."""

    title: str
    layer: int
    limit: float
    lines: list[TokenLine]
    note: str = ""
    legend: list[tuple[str, str]] = field(default_factory=list)  # (colour, label) stops


@dataclass
class Section:
    """One study, vector or insight view."""

    id: str
    title: str
    kind: str
    summary: str = ""
    provenance: list[tuple[str, str]] = field(default_factory=list)
    settings: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    generations: list[Generations] = field(default_factory=list)
    tokens: list[TokenBlock] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    """One row of the verdict table (from ``verdicts.json``)."""

    finding: str
    verdict: str
    css: str
    rule: str
    numbers: list[str]
    warnings: list[str]
    extra: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class VerdictGroup:
    """The verdicts of one ``verdicts.json`` (``where``: its directory below the root)."""

    where: str
    rows: list[Verdict]
    problem: str = ""


@dataclass
class Page:
    """The whole report."""

    title: str
    subtitle: str
    provenance: list[tuple[str, str]]
    sections: list[Section]
    verdicts: list[VerdictGroup] = field(default_factory=list)
    generated: str = ""
    version: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[tuple[str, str, str]]:
        """(section id, section title, warning) for every section's warnings."""
        return [(s.id, s.title, w) for s in self.sections for w in s.warnings]

    def figures(self) -> list[Figure]:
        """Every figure of the page, in order."""
        return [f for s in self.sections for f in s.figures]


def text_of(value: Any) -> str:
    """A value as short display text (floats to 4 significant digits).

    Example:
        >>> text_of(0.123456), text_of(None), text_of([1, 2])
        ('0.1235', '–', '1, 2')
    """
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(text_of(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {text_of(v)}" for k, v in value.items())
    return str(value)
