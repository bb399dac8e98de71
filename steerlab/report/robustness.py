"""Report sections of the robustness studies: ``adversarial`` (suffixes that undo steering),
``defence`` (refusal under steering, with jailbreak suffixes and over-refusal) and ``caa``
(CAA's own A/B check inside ``reproduce``).

Each builds its table from the same function the study's terminal table uses
(:func:`steerlab.eval.protocols.adversarial.summarize`,
:func:`steerlab.eval.protocols.defence.refusal_table`), so the two can never disagree.

Example:
    >>> from pathlib import Path
    >>> from steerlab.report.runs import Run
    >>> from steerlab.report.sections import Context
    >>> rec = {"metric": "refusal_rate", "value": 0.5, "ci_low": 0.3, "ci_high": 0.7, "n": 10,
    ...        "data": "advbench", "extra": {"config": "unsteered"}}
    >>> section = defence_section(Context(Run(Path("."), ".", "defence", {}, [rec]), "d"))
    >>> section.tables[0].columns
    ['configuration', 'advbench', 'xstest:safe', 'judge κ']
"""

from __future__ import annotations

from steerlab.eval.protocols.adversarial import SUMMARY_HEADERS, summarize, summary_rows
from steerlab.eval.protocols.defence import refusal_table
from steerlab.eval.tables import fmt_ci
from steerlab.eval.verdicts import MIN_LETTER_MASS
from steerlab.report.page import Section, Table, text_of
from steerlab.report.sections import Context, rec_ci, signed


def adversarial_section(ctx: Context) -> Section:
    """Success of the suffix search against random suffixes of the same budget, and the found
    suffixes' cross-entropy against natural text's."""
    run = ctx.run
    objective = str(run.settings.get("objective") or "ab_flip")
    method = str(run.settings.get("method") or "epo")
    section = Section(ctx.prefix, "", run.command,
                      summary="success: the steered model with the suffix scores at least what "
                              "the unsteered model did without one (the steering is undone); "
                              "the random baseline spends the same evaluations")
    summary = summarize(run.records, objective)
    found = run.select("adv_success", objective=objective)
    section.tables.append(Table(f"reversing steering (objective {objective})", SUMMARY_HEADERS,
                                summary_rows(summary, method),
                                note=f"n = {len(found)} items; mean objective gain over the "
                                     f"steered model {fmt_ci(*summary['objective_gain'])}"))
    if found and len(found) < 10:
        ctx.warn(f"only {len(found)} items searched: 'adversarial inputs do not reverse "
                 "steering' needs at least 10 (the verdict rule)")
    return section


def defence_section(ctx: Context) -> Section:
    """Refusal rates per configuration on harmful prompts (plain and with GCG suffixes) and on
    safe ones (over-refusal), with the phrase classifier's agreement with the judge."""
    run = ctx.run
    section = Section(ctx.prefix, "", run.command,
                      summary="refusal rate (phrase classifier, Wilson 95 % intervals): "
                              "harmful prompts should be refused, XSTest's safe prompts should "
                              "not; κ: the classifier's agreement with the judge")
    columns, rows, _ = refusal_table(run.records)
    section.tables.append(Table("refusal under steering", columns,
                                [[str(cell) for cell in row] for row in rows]))
    ctx.check_items(run.select("refusal_rate"), "prompts")
    return section


def caa_section(ctx: Context) -> Section:
    """CAA's A/B check: the matching-letter score and the letter mass at each multiplier."""
    run = ctx.run
    section = Section(ctx.prefix, "", run.command,
                      summary="CAA's protocol: the answer-letter vector added after the "
                              "instruction at raw multipliers; score = p(matching) / (p(A) + "
                              "p(B)); letter mass p(A) + p(B) below "
                              f"{MIN_LETTER_MASS} makes the score not measurable")
    rows: list[list[str]] = []
    low: list[float] = []
    for mass in sorted(run.select("letter_mass"), key=lambda r: float(r.get("coefficient")
                                                                     or 0.0)):
        value = mass.get("coefficient")
        score = next((r for r in run.select("score") if r.get("coefficient") == value), None)
        strength = (mass.get("extra") or {}).get("strength_equivalent")
        rows.append([signed(value),
                     signed(None if strength is None else round(float(strength), 4)),
                     rec_ci(score), rec_ci(mass), text_of(mass.get("n"))])
        if mass.get("value") is not None and float(mass["value"]) < MIN_LETTER_MASS:
            low.append(float(mass["value"]))
    section.tables.append(Table("CAA A/B check", ["multiplier", "strength", "score [95 % CI]",
                                                  "letter mass [95 % CI]", "n"], rows))
    if low:
        ctx.warn(f"letter mass below {MIN_LETTER_MASS} (lowest {min(low):.3f}): the model does "
                 "not answer in the A/B format, so CAA's score is not measurable here")
    return section

