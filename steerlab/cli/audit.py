"""``steerlab audit``: the CAE paper's five findings for one behaviour, in one command.

Example:
    $ steerlab audit --model smollm2-135m --data caa:refusal -o runs/audit
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from steerlab.cli import options as opt
from steerlab.cli.study_command import field_option, study_command
from steerlab.eval.configs.audit import AuditConfig

#: ``steerlab audit``: derived from its config, like the studies' commands
audit = study_command(AuditConfig, "steerlab.eval.protocols.audit")


def reproduce(
    models: str = typer.Option("smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b",
                               "--models", help="Comma-separated aliases / ids."),
    data: str = opt.data(required=False, default="caa:refusal"),
    limit: int = field_option(AuditConfig, "limit"),
    judge: str = field_option(AuditConfig, "judge"),
    ood_limit: int = field_option(AuditConfig, "ood_limit"),
    adversarial_limit: int = field_option(AuditConfig, "adversarial_limit"),
    iterations: int = field_option(AuditConfig, "iterations"),
    perplexity_limit: int = field_option(AuditConfig, "windows"),
    results: Path = typer.Option(Path("docs/RESULTS.md"), "--results",
                                 help="Where the finding × model table goes (Markdown); each "
                                      "model's row is kept beside it in results/<model>.json."),
    remeasure: bool = typer.Option(False, "--remeasure",
                                   help="Measure every model again, even one whose row "
                                        "(results/<model>.json) is kept at these sizes."),
    out: Path = opt.out_dir(),
    seed: int = opt.seed(),
) -> None:
    """The audit's five findings plus ActAdd's sentiment shift and CAA's A/B shift on each
    model; the size finding across them. Writes --results and OUT/report.html; resumes, and
    keeps each finished model's row, so the table can be completed a model at a time."""
    from steerlab.eval.protocols.reproduce import ReproduceConfig, run

    sizes = AuditConfig(out=out, data=data, limit=limit, judge=judge, ood_limit=ood_limit,
                        adversarial_limit=adversarial_limit, iterations=iterations,
                        windows=perplexity_limit, seed=seed)
    run(ReproduceConfig(out=out, models=[m.strip() for m in models.split(",") if m.strip()],
                        data=data, audit=sizes, results=results, seed=seed,
                        remeasure=remeasure))
    from steerlab.eval.tables import console
    from steerlab.report import report_page, write

    console.print(f"report: {write(report_page(out), out / 'report.html')}")


COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("audit", audit, "steerlab audit --model smollm2-135m --data caa:refusal -o runs/audit"),
    ("reproduce", reproduce, "steerlab reproduce --models smollm2-135m,qwen2.5-coder-0.5b "
                             "-o runs/repro"),
]
