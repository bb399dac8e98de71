"""Tables and one-line summaries that read well on a terminal, in a pipe and in CI logs.

On a terminal, tables are rich tables that fold long cells instead of cutting them. When
stdout is not a terminal (piped, CI), they are printed wide (no wrapping at 80 columns) so
numbers and headers are never shortened to ``0.4…``. Intervals are printed as
``0.512 [0.401, 0.623]``; a value without an interval (one item) prints as ``0.512 (n=1)``.

Example:
    >>> fmt_ci(0.5, 0.4, 0.6)
    '0.500 [0.400, 0.600]'
    >>> fmt(None), fmt(float("nan")), fmt(0.12345)
    ('–', '–', '0.123')
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _console() -> Console:
    if sys.stdout.isatty():
        return Console()
    width = int(os.environ.get("COLUMNS", "0") or 0)
    return Console(width=max(width, 200), soft_wrap=True)


console = _console()


def fmt(value: float | None, digits: int = 3) -> str:
    """Number for a table cell (``–`` for missing).

    Example:
        >>> fmt(2.0, 1)
        '2.0'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_ci(value: float | None, low: float | None = None, high: float | None = None,
           digits: int = 3, n: int | None = None) -> str:
    """``0.512 [0.401, 0.623]``; without an interval ``0.512`` (or ``0.512 (n=1)``).

    The one interval formatter: the terminal tables and the HTML report both use it. A
    missing value (None or NaN) is ``–``; with an interval beside it, just ``–``.

    Example:
        >>> fmt_ci(0.5, None, None, n=1)
        '0.500 (n=1: no interval)'
        >>> fmt_ci(0.5), fmt_ci(None, 0.4, 0.6), fmt_ci(1, 0, 2, digits=1)
        ('0.500', '–', '1.0 [0.0, 2.0]')
    """
    main = "–" if _missing(value) else fmt(float(value), digits)  # type: ignore[arg-type]
    if _missing(low) or _missing(high):
        suffix = f" (n={n}: no interval)" if n is not None and n < 2 else ""
        return main + suffix
    if _missing(value):
        return main
    return f"{main} [{fmt(float(low), digits)}, {fmt(float(high), digits)}]"  # type: ignore[arg-type]


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                caption: str | None = None) -> None:
    """A compact table on stdout (cells escaped, never read as markup; long cells fold).

    ``caption`` says what the intervals are and their n (printed under the table).
    """
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, caption=escape(caption or ""),
                  caption_justify="left", title_justify="left")
    for col in columns:
        table.add_column(escape(str(col)), overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    console.print(table)


def done_line(run_dir: str | os.PathLike[str], plots: Sequence[str | os.PathLike[str]]) -> None:
    """Say where the results and plots went."""
    names = ", ".join(Path(p).name for p in plots) or "none"
    console.print(f"results: {escape(str(Path(run_dir) / 'results.jsonl'))}; plots: "
                  f"{escape(names)}")
