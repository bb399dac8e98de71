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


def audit(
    data: str = opt.data(),
    model: str = opt.model(),
    vector: Path = opt.vector(),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Default: the vector's layers, or depths "
                                                     "0.3,0.4,0.5,0.6,0.7 of the model."),
    strengths: str = opt.strengths(help="The sweep's grid (default -0.4,-0.2,0,0.2,0.4); the "
                                        "largest positive one steers every later study. "),
    models: str = typer.Option("", "--models",
                               help="More models for the size finding (comma-separated); "
                                    "without it that finding is inconclusive."),
    only: str = typer.Option(",".join(("sweep", "samples", "ood", "adversarial", "perplexity",
                                       "size")), "--only", help="The studies to run."),
    form: str = opt.answer_format(),
    limit: int = opt.limit(40),
    train_limit: int = typer.Option(160, "--train-limit", callback=opt.at_least(0, "a count"),
                                    help="Train pairs to extract from (0 = all)."),
    n: str = typer.Option("1,5,20,80,160", "--n", help="Pair counts of the samples study."),
    seeds: int = typer.Option(3, "--seeds", callback=opt.at_least(1, "a count"),
                              help="Random draws per pair count."),
    judge: str = opt.judge(),
    ood_limit: int = typer.Option(8, "--ood-limit", callback=opt.at_least(1, "a count"),
                                  help="OOD prompts per AEP set (and ID items)."),
    max_new_tokens: int = opt.max_new_tokens(48),
    adversarial_limit: int = typer.Option(10, "--adversarial-limit",
                                          callback=opt.at_least(1, "a count"),
                                          help="Held-out items the suffix search attacks."),
    iterations: int = typer.Option(6, "--iterations", callback=opt.at_least(1, "a count"),
                                   help="Suffix-search iterations per item."),
    perplexity_limit: int = typer.Option(16, "--perplexity-limit",
                                         callback=opt.at_least(1, "a count"),
                                         help="WikiText-2 windows for the perplexity cost."),
    out: Path = opt.out_dir(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
) -> None:
    """Run the sweep, sample-count, OOD, adversarial, perplexity (and with --models, size)
    studies at sizes that fit ~15 min on SmolLM2, then judge the five findings by written rules
    into verdicts.json. Rerun to resume."""
    from steerlab.eval.protocols.audit import AuditConfig, run
    from steerlab.util.parse import parse_counts, parse_values

    run(AuditConfig(
        out=out, data=data, model=model, vector=vector, layers=layers,
        strengths=parse_values(strengths or "-0.4,-0.2,0,0.2,0.4", "--strengths"),
        models=[m.strip() for m in models.split(",") if m.strip()],
        studies=[s.strip() for s in only.split(",") if s.strip()], form=form, limit=limit,
        train_limit=train_limit, pair_counts=parse_counts(n, "--n"), draws=seeds, judge=judge,
        ood_limit=ood_limit, max_new_tokens=max_new_tokens,
        adversarial_limit=adversarial_limit, iterations=iterations, windows=perplexity_limit,
        seed=seed, batch_size=batch_size))


def reproduce(
    models: str = typer.Option("smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b",
                               "--models", help="Comma-separated aliases / ids."),
    data: str = opt.data(required=False, default="caa:refusal"),
    limit: int = opt.limit(40),
    judge: str = opt.judge(),
    ood_limit: int = typer.Option(8, "--ood-limit", callback=opt.at_least(1, "a count"),
                                  help="OOD prompts per AEP set (and ID items)."),
    adversarial_limit: int = typer.Option(10, "--adversarial-limit",
                                          callback=opt.at_least(1, "a count"),
                                          help="Held-out items the suffix search attacks."),
    iterations: int = typer.Option(6, "--iterations", callback=opt.at_least(1, "a count"),
                                   help="Suffix-search iterations per item."),
    perplexity_limit: int = typer.Option(16, "--perplexity-limit",
                                         callback=opt.at_least(1, "a count"),
                                         help="WikiText-2 windows for the perplexity cost."),
    results: Path = typer.Option(Path("docs/RESULTS.md"), "--results",
                                 help="Where the finding × model table goes (Markdown)."),
    out: Path = opt.out_dir(),
    seed: int = opt.seed(),
) -> None:
    """The audit's five findings plus ActAdd's sentiment shift and CAA's A/B shift on each
    model; the size finding across them. Writes --results and OUT/report.html; resumes."""
    from steerlab.eval.protocols.audit import AuditConfig
    from steerlab.eval.protocols.reproduce import ReproduceConfig, run

    sizes = AuditConfig(out=out, data=data, limit=limit, judge=judge, ood_limit=ood_limit,
                        adversarial_limit=adversarial_limit, iterations=iterations,
                        windows=perplexity_limit, seed=seed)
    run(ReproduceConfig(out=out, models=[m.strip() for m in models.split(",") if m.strip()],
                        data=data, audit=sizes, results=results, seed=seed))
    from steerlab.eval.tables import console
    from steerlab.report import report_page, write

    console.print(f"report: {write(report_page(out), out / 'report.html')}")


COMMANDS: list[tuple[str, Callable[..., Any], str]] = [
    ("audit", audit, "steerlab audit --model smollm2-135m --data caa:refusal -o runs/audit"),
    ("reproduce", reproduce, "steerlab reproduce --models smollm2-135m,qwen2.5-coder-0.5b "
                             "-o runs/repro"),
]
