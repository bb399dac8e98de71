"""``steerlab report | inspect``: one HTML page a person would rather look at than read.

Both write one self-contained file (inline SVG figures, no script, no external URL) that opens
offline from ``file://``.

Example:
    $ steerlab report runs/audit -o audit.html
    $ steerlab inspect refusal.safetensors --model smollm2-135m --prompts prompts.txt \\
          -o inspect.html
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import options as opt


def report(
    run_dir: Path = typer.Argument(..., help="A run directory (any eval command's --out, or an "
                                             "audit directory of studies); every run found "
                                             "at or below it is rendered."),
    out: Path = opt.out_file("the HTML page"),
) -> None:
    """Render run directories as one self-contained HTML report (plots with intervals,
    provenance, verdicts, generations side by side, warnings)."""
    from rich.markup import escape

    from steerlab.cli.common import console
    from steerlab.report.render import report_page, write
    from steerlab.util.io import check_writable

    check_writable(out, what="report")
    page = report_page(run_dir)
    write(page, out)
    warnings = len(page.warnings) + len(page.problems)
    console.print(f"wrote {escape(str(out))}: {len(page.sections)} section(s), "
                  f"{len(page.figures())} figure(s), {warnings} warning(s)")


def inspect(
    vectors: list[Path] = typer.Argument(None, help="One or more steering vectors "
                                                    "(.safetensors); the first is inspected, "
                                                    "all are compared."),
    vector: list[Path] = typer.Option([], "--vector",
                                      help="Another vector to compare (repeatable)."),
    model: str = opt.model(),
    prompts_file: Path = opt.prompts_file(),
    data: str = opt.data(required=False),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Default: the vector's recommended (or "
                             "middle) layer. Each layer gets its own token heatmap; the PCA "
                             "uses the first."),
    split: str = opt.split("test"),
    limit: int = opt.limit(64),
    seed: int = opt.seed(),
    chat: bool = typer.Option(True, "--chat/--no-chat",
                              help="Chat-format the prompts (--no-chat: raw text)."),
    system: str = opt.system(),
    batch_size: int = opt.batch_size(),
    out: Path = opt.out_file("the HTML page"),
) -> None:
    """Insight views of a vector: per-token projections, norm vs residual norm per layer,
    cross-layer and cross-vector cosine, and (with --data) a PCA by answer letter."""
    from rich.markup import escape

    from steerlab.cli.common import console, read_prompts
    from steerlab.errors import SteerlabError
    from steerlab.util.io import check_writable

    paths = [*(vectors or []), *vector]
    if not paths:
        raise SteerlabError("give at least one vector (a path, or --vector PATH)")
    if prompts_file is None and data is None and len(paths) < 2:
        raise SteerlabError("nothing to inspect on the model: give --prompts FILE, --data "
                            "SPEC, or several vectors to compare")
    check_writable(out, what="report")
    prompts = read_prompts(prompts_file) if prompts_file is not None else []

    from steerlab.data.loaders import load_dataset
    from steerlab.model.load import load_model
    from steerlab.report.render import inspect_page, write
    from steerlab.util.parse import resolve_layers
    from steerlab.vector import SteeringVector

    items = None
    if data is not None:
        dataset = load_dataset(data, split=split, seed=seed)
        items = list(dataset.subset(limit, seed) if limit else dataset)
    lm = load_model(model)
    loaded = [SteeringVector.load(p, model=lm) for p in paths]
    main = loaded[0]
    if layers is not None:
        chosen = resolve_layers(layers, lm.n_layers)
        missing = [k for k in chosen if k not in main.layers]
        if missing:
            raise SteerlabError(f"{paths[0]}: no direction for layer(s) {missing}; it has "
                                f"{main.layers}")
    else:
        recommended = (main.manifest.get("recommended") or {}).get("layer")
        chosen = [recommended if isinstance(recommended, int) and recommended in main.layers
                  else main.layers[len(main.layers) // 2]]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    page = inspect_page(lm, loaded, names, paths=paths, prompts=prompts, layers=chosen,
                        items=items, data=f"{data} ({split})" if data else "", chat=chat,
                        system=system,
                        batch_size=batch_size)
    write(page, out)
    warnings = len(page.warnings)
    console.print(f"wrote {escape(str(out))}: layer(s) {', '.join(map(str, chosen))}, "
                  f"{len(prompts)} prompt(s), {len(page.figures())} figure(s), "
                  f"{warnings} warning(s)")


COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("report", report, "steerlab report runs/audit -o audit.html"),
    ("inspect", inspect, "steerlab inspect refusal.safetensors --model smollm2-135m "
                         "--prompts prompts.txt -o inspect.html"),
]
