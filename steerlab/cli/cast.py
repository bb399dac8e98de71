"""``steerlab cast fit``: fit a condition for conditional steering (CAST).

Example:
    $ steerlab cast fit --harmful advbench --harmless xstest:safe -o harm.safetensors
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import options as opt

HELP = "Conditional steering (CAST): fit a condition direction, layer and threshold."


def fit(
    harmful: str = typer.Option("advbench", "--harmful",
                                help="Prompts the condition should fire on: advbench, "
                                     "xstest:unsafe or a file (one prompt per line)."),
    harmless: str = typer.Option("xstest:safe", "--harmless",
                                 help="Prompts it should not fire on: xstest:safe or a file."),
    model: str = opt.model(),
    layers: str = opt.layers("all", help=opt.LAYERS_HELP + " The candidate condition layers."),
    mode: str = typer.Option("cast", "--mode",
                             help="cast: CAST's cos(h, tanh(P h)); cosine: cos(h, c), "
                                  "sign-aware."),
    aggregate: str = typer.Option("mean", "--aggregate",
                                  help="mean over the prompt's tokens, or last token."),
    limit: int = opt.limit(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
    out: Path = opt.out_file("the condition vector (.safetensors)"),
) -> None:
    """Fit a condition on one half of the prompts (layer, threshold, comparator by F1) and
    report F1 / accuracy / AUROC on the other half."""
    from steerlab.eval.protocols.cast import CastFitConfig, run

    run(CastFitConfig(out=out, harmful=harmful, harmless=harmless, model=model, layers=layers,
                      mode=mode, aggregate=aggregate, limit=limit, seed=seed,
                      batch_size=batch_size))


COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("fit", fit, "steerlab cast fit --model qwen2.5-coder-0.5b --harmful advbench --harmless "
                 "xstest:safe --layers all -o harm.safetensors"),
]
