"""Pieces every ``steerlab eval`` command shares: options, cell ids, timing, tables.

Example:
    >>> cell_id("sweep", layer=12, coefficient=-1.0, split="val")
    'sweep/coefficient=-1.0/layer=12/split=val'
    >>> parse_layer_list("8-10,14", 30)
    [8, 9, 10, 14]
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from steerlab.errors import SteerlabError
from steerlab.util.parse import resolve_layers

console = Console()

# Options every eval command takes (typer defaults, shared so help texts agree).
MODEL = typer.Option("smollm2-135m", "--model", help="Alias, HF id, local dir or .gguf.")
OUT = typer.Option(..., "--out", help="Run directory (results.jsonl, plots); reruns resume.")
LIMIT = typer.Option(0, "--limit", help="At most N items per cell (0 = all).")
SEED = typer.Option(0, "--seed", help="Seed for splits, subsets and sampling.")
BATCH = typer.Option(16, "--batch-size", help="Items per forward pass.")


def cell_id(command: str, **parts: Any) -> str:
    """A stable id for one measured cell: the command then sorted ``key=value`` parts.

    Example:
        >>> cell_id("ppl", coefficient=0.0, window=3)
        'ppl/coefficient=0.0/window=3'
    """
    return "/".join([command, *(f"{k}={parts[k]}" for k in sorted(parts))])


def parse_layer_list(text: str, n_layers: int) -> list[int]:
    """``"all"``, ``"10,16"``, ``"8-20"``, ``"8-20:4"``, ``"-1"``, ``"0.5"`` or mixes → layers.

    Example:
        >>> parse_layer_list("all", 4)
        [0, 1, 2, 3]
    """
    text = text.strip()
    if not text:
        raise SteerlabError("empty layer list; expected e.g. all, 10,16 or 8-20")
    parts: list[str] = [text] if text == "all" else [p.strip() for p in text.split(",")]
    layers: list[int] = []
    for part in parts:
        for layer in resolve_layers(part, n_layers):
            if layer not in layers:
                layers.append(layer)
    return layers


def check_limit(limit: int) -> None:
    """Reject a negative ``--limit``."""
    if limit < 0:
        raise SteerlabError(f"--limit must be 0 (all) or positive, got {limit}")


def limited(items: Sequence[Any], limit: int) -> list[Any]:
    """The first ``limit`` items (all when 0)."""
    return list(items[:limit] if limit else items)


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed seconds.

    Example:
        >>> with stopwatch() as t:
        ...     pass
        >>> t[0] >= 0
        True
    """
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    tmp.replace(target)


def fmt(value: float | None, digits: int = 3) -> str:
    """Number for a table cell (``–`` for missing).

    Example:
        >>> fmt(0.12345), fmt(None), fmt(float("nan"))
        ('0.123', '–', '–')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_ci(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """``0.512 [0.401, 0.623]``.

    Example:
        >>> fmt_ci(0.5, 0.4, 0.6)
        '0.500 [0.400, 0.600]'
    """
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A compact rich table on stdout (cells escaped, never read as markup)."""
    table = Table(title=escape(title))
    for col in columns:
        table.add_column(escape(str(col)))
    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    console.print(table)


def done_line(run_dir: str | os.PathLike[str], plots: Sequence[str | os.PathLike[str]]) -> None:
    """Say where the results and plots went."""
    names = ", ".join(Path(p).name for p in plots)
    console.print(f"results: {escape(str(Path(run_dir) / 'results.jsonl'))}; plots: "
                  f"{escape(names)}")
