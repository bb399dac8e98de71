"""``steerlab reproduce``'s table: the verdicts by model, printed (with every warning and CAA's
deviations from its paper) and as ``docs/RESULTS.md``.

Example:
    >>> _flagged(rules.Verdict("ood", rules.HOLDS, "up", warnings=["w"]))
    'holds ⚠ 1'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from steerlab.eval import verdicts as rules
from steerlab.eval.protocols.reproduce_caa import CAA_PAPER
from steerlab.eval.tables import console, print_table


@dataclass
class ModelResult:
    """One model's verdicts and what they cost."""

    model: str
    params: int | None
    layer: int | None
    strength: float
    verdicts: dict[str, rules.Verdict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    measured: str = ""  # when and where: "2026-12-03, 2 CPUs x86_64 AVX2, steerlab 0.1.0"


ORDER = (*rules.FINDINGS, *rules.REPLICATIONS)


def print_verdicts(results: Sequence[ModelResult]) -> None:
    """The verdict table (a ``⚠ n`` beside a verdict with n warnings), then every warning and
    CAA's deviations from its paper, by model and finding."""
    rows = [[rules.Verdict(k, "", "").title,
             *(_flagged(r.verdicts[k]) if k in r.verdicts else "–" for r in results)]
            for k in ORDER]
    print_table("reproduce: verdicts by model", ["finding", *(r.model for r in results)], rows,
                caption="⚠ n: the verdict carries n validity warnings (listed below)")
    from rich.markup import escape  # "[INST]" and "[model · finding]" are text, not markup

    for r in results:
        for key in ORDER:
            v = r.verdicts.get(key)
            for warning in v.warnings if v else ():
                console.print(f"[yellow]warning[/yellow] {escape(f'[{r.model} · {key}]')}: "
                              f"{escape(warning)}")
        caa = r.verdicts.get("caa")
        if caa is not None:
            console.print(escape(f"CAA on {r.model}: {caa.verdict}: {caa.reason}"))
            beside = _open_beside(caa)
            if beside:
                console.print(escape(f"  beside it, not the CAA verdict: {beside}"))
            for deviation in caa.deviations:
                console.print(escape(f"  differs from {CAA_PAPER}: {deviation}"))


def _flagged(verdict: rules.Verdict) -> str:
    return verdict.verdict + (f" ⚠ {len(verdict.warnings)}" if verdict.warnings else "")


def _open_beside(verdict: rules.Verdict) -> str:
    """The open-answer effect a CAA verdict carries (its numbers), as one phrase."""
    effect = verdict.numbers.get("open_effect")
    if not effect or any(x is None for x in effect):
        return ""
    return (f"{verdict.numbers.get('open_measure') or 'open-answer effect'}: "
            f"{effect[0]:+.3f} [{effect[1]:+.3f}, {effect[2]:+.3f}]")


def _cell(verdict: rules.Verdict) -> str:
    """One verdict as a Markdown table cell: verdict, reason, and (one per line) the open-answer
    effect beside a CAA verdict, every warning, and where the protocol differs from the
    paper's."""
    parts = [f"**{verdict.verdict}**: {verdict.reason}"]
    beside = _open_beside(verdict)
    if beside:
        parts.append(f"beside it, not the CAA verdict: {beside}")
    parts += [f"⚠ {w}" for w in verdict.warnings]
    if verdict.deviations:
        parts.append(f"differs from {CAA_PAPER}: " + "; ".join(verdict.deviations))
    return "<br>".join(_escape(part) for part in parts)


def markdown(results: Sequence[ModelResult], data: str, sizes: Sequence[str]) -> str:
    """``docs/RESULTS.md``: the finding × model verdicts on behaviour ``data``, the numbers,
    the ``sizes`` every model ran at (one Markdown bullet each) and the wall times.

    Example:
        >>> r = ModelResult("m", 135_000_000, 12, 0.4, {"perplexity": rules.judge_perplexity(
        ...     (1.05, 1.01, 1.1), 0.4)}, {"sweep": 60.0})
        >>> "| Steering costs perplexity | **holds**" in markdown([r], "caa:refusal", [])
        True
    """
    lines = ["# Results: the seeds' findings on small models", "",
             f"Written by `steerlab reproduce` (behaviour `{data}`; rerun it to refresh). "
             "Each verdict comes from a rule written in `steerlab/eval/verdicts.py` (docs: "
             "evaluation/verdicts.md): *holds*, *does not hold*, *inconclusive* when the 95 % "
             "intervals do "
             "not decide, or *not measurable* when the measurement cannot say (CAA: the model "
             "does not answer in the A/B format, answer-letter mass p(A)+p(B) below 0.8). "
             "Numbers: value [95 % interval]; ⚠ marks a validity warning the verdict carries.",
             "",
             "| finding | " + " | ".join(r.model for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for key in ORDER:
        cells = []
        for r in results:
            v = r.verdicts.get(key)
            cells.append("–" if v is None else _cell(v))
        lines.append(f"| {rules.Verdict(key, '', '').title} | " + " | ".join(cells) + " |")
    lines += ["", "## Per model", "",
              "| model | parameters | layer | strength | wall time | per study (s) | measured |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        params = f"{r.params / 1e6:.0f} M" if r.params else "?"
        total = sum(r.seconds.values())
        per = ", ".join(f"{k} {v:.0f}" for k, v in r.seconds.items())
        lines.append(f"| {r.model} | {params} | {r.layer} | {r.strength:g} | "
                     f"{total / 60:.1f} min | {per} | {r.measured or '?'} |")
    if sizes:
        lines += ["", "## Sizes (the same for every model)", "", *sizes]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
