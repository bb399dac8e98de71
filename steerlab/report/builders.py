"""Which section builder renders a run: one entry per study of the registry
(:data:`steerlab.eval.studies.STUDIES`; ``tests/unit/test_studies.py`` holds the two to each
other), the generic records table for anything else.

Example:
    >>> from pathlib import Path
    >>> from steerlab.report.runs import Run
    >>> section_for(Run(Path("."), ".", "mystery", {}, [])).kind
    'mystery'
    >>> sorted(BUILDERS)[:3]
    ['adversarial', 'caa', 'capabilities']
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from steerlab.report import robustness
from steerlab.report.generation_sections import (
    ood_section,
    prompting_section,
    sentiment_section,
)
from steerlab.report.page import Section, slug
from steerlab.report.runs import Run
from steerlab.report.score_sections import (
    capabilities_section,
    models_section,
    perplexity_section,
    samples_section,
    sweep_section,
)
from steerlab.report.sections import Context, generic_section, provenance, settings_rows

BUILDERS: dict[str, Callable[[Context], Section]] = {
    "sweep": sweep_section, "samples": samples_section, "ood": ood_section,
    "perplexity": perplexity_section, "capabilities": capabilities_section,
    "sentiment": sentiment_section, "models": models_section, "prompting": prompting_section,
    "adversarial": robustness.adversarial_section, "defence": robustness.defence_section,
    "caa": robustness.caa_section,
}


def section_for(run: Run, prefix: str | None = None) -> Section:
    """The section of one run (its builder by command, else the generic table), with its
    title, provenance, settings and warnings."""
    ctx = Context(run, prefix or slug(f"{run.rel}-{run.command}"))
    section = BUILDERS.get(run.command, generic_section)(ctx)
    if run.rel == ".":
        section.title = run.command
    elif Path(run.rel).name == run.command:
        section.title = run.rel  # an audit's study directory is named after its command
    else:
        section.title = f"{run.command} · {run.rel}"
    section.provenance = provenance(run)
    section.settings = settings_rows(run)
    if not run.records:
        ctx.warn("no results yet: the run has settings but no finished cell")
    ctx.check_missing(run.records)
    section.warnings = [*run.problems, *ctx.warnings]
    return section
