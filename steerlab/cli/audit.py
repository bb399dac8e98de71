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

# a copy of steerlab.eval.studies.AUDIT_STEPS, so --help imports no eval module; tests/unit/
# test_audit.py holds the two equal
STUDIES = ("sweep", "samples", "ood", "adversarial", "perplexity", "prompting", "size")


class SIZES:
    """The audit's default sizes, as ``AuditConfig`` has them (a test keeps the two equal;
    importing ``AuditConfig`` here would load the evaluation stack for ``--help``)."""

    strengths = (-0.4, 0.0, 0.4)
    limit = 40
    train_limit = 160
    pair_counts = (1, 5, 20, 80, 160)
    draws = 3
    ood_limit = 8
    max_new_tokens = 48
    adversarial_limit = 8
    iterations = 4
    windows = 16
    fluency_limit = 16
    shots = 2


def _csv(values: Any) -> str:
    return ",".join(f"{v:g}" for v in values)


def _count(default: int, flag: str, help: str) -> Any:
    return typer.Option(default, flag, callback=opt.at_least(1, "a count"), help=help)


def _ood_limit() -> Any:
    return _count(SIZES.ood_limit, "--ood-limit", "OOD prompts per AEP set (and ID items).")


def _adversarial_limit() -> Any:
    return _count(SIZES.adversarial_limit, "--adversarial-limit",
                  "Held-out items the suffix search attacks.")


def _iterations() -> Any:
    return _count(SIZES.iterations, "--iterations", "Suffix-search iterations per item.")


def _perplexity_limit() -> Any:
    return _count(SIZES.windows, "--perplexity-limit",
                  "WikiText-2 windows for the perplexity cost.")


def audit(
    data: str = opt.data(),
    model: str = opt.model(),
    vector: Path = opt.vector(),
    layers: str = opt.layers(help=opt.LAYERS_HELP + " Default: the vector's layers, or depths "
                                                     "0.3,0.4,0.5,0.6,0.7 of the model."),
    strengths: str = opt.strengths(help=f"The sweep's grid (default {_csv(SIZES.strengths)}); "
                                        "the largest positive one steers every later study. "),
    models: str = typer.Option("", "--models",
                               help="More models for the size finding (comma-separated); "
                                    "without it that finding is inconclusive."),
    only: str = typer.Option(",".join(STUDIES), "--only", help="The studies to run."),
    form: str = opt.answer_format(),
    limit: int = opt.limit(SIZES.limit),
    train_limit: int = opt.train_limit(SIZES.train_limit),
    n: str = typer.Option(_csv(SIZES.pair_counts), "--n", help="Pair counts of the samples study."),
    seeds: int = _count(SIZES.draws, "--seeds", "Random draws per pair count."),
    judge: str = opt.judge(),
    ood_limit: int = _ood_limit(),
    max_new_tokens: int = opt.max_new_tokens(SIZES.max_new_tokens),
    adversarial_limit: int = _adversarial_limit(),
    iterations: int = _iterations(),
    perplexity_limit: int = _perplexity_limit(),
    fluency_limit: int = typer.Option(SIZES.fluency_limit, "--fluency-limit",
                                      callback=opt.at_least(0, "an item count (0 = all)"),
                                      help="Test items answered per condition for the "
                                           "prompting study's fluency cost (0 = all)."),
    shots: int = typer.Option(SIZES.shots, "--shots", callback=opt.at_least(0, "a count"),
                              help="Few-shot train examples in the prompting study's prompt."),
    instruction: str = typer.Option(None, "--instruction",
                                    help="The behaviour asked for in words, for the prompting "
                                         "study (default: made from the behaviour's "
                                         "description; without either it is not measurable)."),
    out: Path = opt.out_dir(),
    seed: int = opt.seed(),
    batch_size: int = opt.batch_size(),
) -> None:
    """Run the sweep, sample-count, OOD, adversarial, perplexity, steering-vs-prompting (and
    with --models, size) studies at sizes that fit ~15 min on SmolLM2, then judge the five
    findings and which of steering and prompting wins, by written rules, into verdicts.json.
    Rerun to resume."""
    from steerlab.eval.protocols.audit import AuditConfig, run
    from steerlab.util.parse import parse_counts, parse_values

    run(AuditConfig(
        out=out, data=data, model=model, vector=vector, layers=layers,
        strengths=parse_values(strengths or _csv(SIZES.strengths), "--strengths"),
        models=[m.strip() for m in models.split(",") if m.strip()],
        studies=[s.strip() for s in only.split(",") if s.strip()], form=form, limit=limit,
        train_limit=train_limit, pair_counts=parse_counts(n, "--n"), draws=seeds, judge=judge,
        ood_limit=ood_limit, max_new_tokens=max_new_tokens,
        adversarial_limit=adversarial_limit, iterations=iterations, windows=perplexity_limit,
        fluency_limit=fluency_limit, shots=shots, instruction=instruction, seed=seed,
        batch_size=batch_size))


def reproduce(
    models: str = typer.Option("smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b",
                               "--models", help="Comma-separated aliases / ids."),
    data: str = opt.data(required=False, default="caa:refusal"),
    limit: int = opt.limit(SIZES.limit),
    judge: str = opt.judge(),
    ood_limit: int = _ood_limit(),
    adversarial_limit: int = _adversarial_limit(),
    iterations: int = _iterations(),
    perplexity_limit: int = _perplexity_limit(),
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
    from steerlab.eval.protocols.audit import AuditConfig
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
