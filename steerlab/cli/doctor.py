"""``steerlab doctor``: check that steering works on your model, layer by layer, with a verdict.

Example:
    $ steerlab doctor --model smollm2-135m --layers 14
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from steerlab.cli import options as opt
from steerlab.cli.common import console

EXAMPLE = "steerlab doctor --model smollm2-135m --layers 14"


def _num(value: object) -> str:
    return f"{value:.2g}" if isinstance(value, float) else "—"


def command(
    model: str = opt.model(),
    vector: Path = opt.vector(),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Default: the vector's layers, else a "
                             "quarter, half and three quarters down."),
    generate: bool = typer.Option(True, "--generate/--no-generate",
                                  help="Also check positions under generate with the KV cache."),
) -> None:
    """Check steering on your model: blocks found, width, final norm; MoE routers, sliding
    windows and hybrid blocks named; at each layer the steering moves the logits, is exactly
    h + v at the block output (against output_hidden_states) and right under generate with the
    KV cache. Without --vector a random direction scaled to the residual norm is used. Exits 1
    unless exact."""
    import time

    import steerlab
    from steerlab.testing.doctor import doctor

    start = time.perf_counter()
    lm = steerlab.load_model(model)
    loaded = time.perf_counter() - start
    vec = steerlab.SteeringVector.load(vector) if vector is not None else None
    result = doctor(lm, layers=layers, vector=vec, generation=generate)
    report = result.report
    console.print(f"[bold]{escape(result.model_id)}[/] ({escape(report.model_type)}): "
                  f"{report.n_blocks} blocks at {escape(report.blocks_path or '?')}, width "
                  f"{report.width}, final norm {escape(report.final_norm or 'none found')}",
                  highlight=False)
    for name, ks in report.kinds.items():
        console.print(f"  blocks {escape(name)}: {len(ks)}", highlight=False)
    for feature in report.features:
        console.print(f"  {escape(feature)}", highlight=False)
    console.print(f"vector: {escape(result.vector_source)}", highlight=False)
    table = Table(title="steering at each layer (max |Δ| of the logits; errors vs the reference)")
    for col in ("layer", "Δ vs unsteered", "vs hand hook", "h+v at block output",
                "hidden_states[k+1]", "generate prompt", "generate generation"):
        table.add_column(col, justify="right")
    for k, row in result.per_layer.items():
        table.add_row(str(k), _num(row.get("delta")), _num(row.get("error")),
                      _num(row.get("h+v")), _num(row.get("hidden_states")),
                      _num(row.get("generate prompt")), _num(row.get("generate generation")))
    console.print(table)
    for f in report.findings:
        if not f.ok:
            mark = "[yellow]refused[/]" if f.refused else "[bold red]failed[/]"
            console.print(f"{mark} {escape(f.name)}: {escape(f.detail)}", highlight=False)
    console.print(f"checks: {sum(f.ok for f in report.findings)}/{len(report.findings)} hold "
                  f"(load {loaded:.1f} s, checks {result.seconds:.1f} s)", highlight=False)
    style = "bold green" if result.exact else "bold red"
    console.print(f"[{style}]verdict:[/] {escape(result.verdict)}", highlight=False)
    if not result.exact:
        raise SystemExit(1)


COMMANDS = [("doctor", command, EXAMPLE)]
