"""Report sections of the studies that read generations: ``ood`` (ID vs OOD in two panels,
each in its own unit, and the answers side by side), ``sentiment`` (shift, masked shift, rate,
fluency, the verdict, example completions) and ``prompting`` (steering vs prompting: score and
fluency cost per condition, the answers side by side). Shared helpers and :class:`Context`:
:mod:`steerlab.report.sections`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from steerlab.eval import figures as fg
from steerlab.eval.tables import fmt_ci
from steerlab.report.page import (
    Answer,
    GenerationRow,
    Generations,
    Section,
    Table,
    text_of,
)
from steerlab.report.runs import Run, field_of
from steerlab.report.sections import (
    JUDGE_SPAN,
    MAX_SHOWN_GENERATIONS,
    Context,
    band_of,
    generations_tables,
    last_record,
    layers_text,
    n_text,
    rec_ci,
    rows_of_generations,
    signed,
    sorted_unique,
    unit_value,
    value_label,
)
from steerlab.util import stats


def _paired(at: Sequence[float], zero: Sequence[float], span: float
            ) -> tuple[float, float, float]:
    diffs = [a - b for a, b in zip(at, zero, strict=False)
             if a is not None and b is not None and not (math.isnan(a) or math.isnan(b))]
    return stats.mean_ci(diffs, bounds=(-span, span)) if diffs else (math.nan,) * 3


def ood_effects(run: Run, unit: str) -> list[dict[str, Any]]:
    """The ID and OOD effects of an ``ood`` run: its ``effect`` records, or — where the run
    stored none — paired differences vs value 0 from the per-item scores it did store.

    Each effect: ``group``, ``kind`` (id/ood), ``layer``, ``value``, ``mean``, ``low``,
    ``high``, ``n``, ``baseline``.
    """
    out = []
    for rec in run.select("effect"):
        kind = field_of(rec, "kind") or ("id" if rec.get("split") == "test" else "ood")
        out.append({"group": str(field_of(rec, "group") or rec.get("data")), "kind": kind,
                    "layer": rec.get("layer"), "value": unit_value(rec, unit),
                    "mean": rec.get("value"), "low": rec.get("ci_low"),
                    "high": rec.get("ci_high"), "n": rec.get("n"),
                    "baseline": field_of(rec, "baseline")})
    if out:
        return out
    for metric, kind, span in (("behaviour_score", "id", 1.0),
                               ("judge_score", "ood", JUDGE_SPAN)):
        recs = run.select(metric)
        keys = sorted({(str(r.get("data")), r.get("layer")) for r in recs},
                      key=lambda k: (str(k[0]), k[1] if k[1] is not None else -1))
        pooled: dict[tuple[str, Any, float], tuple[list[float], list[float]]] = {}
        for data, layer in keys:
            group = [r for r in recs if str(r.get("data")) == data and r.get("layer") == layer]
            zero = last_record([r for r in group if unit_value(r, unit) == 0.0])
            if zero is None or not field_of(zero, "scores"):
                continue
            base = [float(x) for x in field_of(zero, "scores")]
            for rec in group:
                value = unit_value(rec, unit)
                at = field_of(rec, "scores")
                if value in (None, 0.0) or not at or len(at) != len(base):
                    continue
                mean, low, high = _paired([float(x) for x in at], base, span)
                label = (f"ID {data}" if kind == "id" else
                         f"OOD {data.split('/', 1)[-1]}")
                out.append({"group": label, "kind": kind, "layer": layer, "value": value,
                            "mean": mean, "low": low, "high": high, "n": len(base),
                            "baseline": sum(base) / len(base)})
                if kind == "ood":
                    form = data.split("/", 1)[-1].split("/")[0]
                    acc = pooled.setdefault((form, layer, float(value)), ([], []))
                    acc[0].extend(float(x) for x in at)
                    acc[1].extend(base)
        lengths: dict[tuple[str, Any], int] = {}
        for data, layer in keys:
            form = data.split("/", 1)[-1].split("/")[0]
            lengths[(form, layer)] = lengths.get((form, layer), 0) + 1
        for (form, layer, value), (at, base) in pooled.items():
            if lengths.get((form, layer), 0) > 1:
                mean, low, high = _paired(at, base, span)
                out.append({"group": f"OOD {form}/all", "kind": "ood", "layer": layer,
                            "value": value, "mean": mean, "low": low, "high": high,
                            "n": len(base), "baseline": sum(base) / len(base)})
    return out


def ood_section(ctx: Context) -> Section:
    """ID vs OOD effect (two panels, own units), judge coverage, answers side by side."""
    run, unit = ctx.run, ctx.unit
    effects = ood_effects(run, unit)
    layers = sorted_unique(e["layer"] for e in effects) or sorted_unique(
        r.get("layer") for r in run.records)
    values = sorted_unique(e["value"] for e in effects)
    trait = run.settings.get("trait") or sorted_unique(
        field_of(r, "trait") for r in run.records)
    section = Section(ctx.prefix, "", run.command,
                      summary=f"trait {text_of(trait)}: effect of each value vs the unsteered "
                              "model, in distribution (A/B behaviour score) and out of "
                              "distribution (judge score 1..10)")
    panels: list[fg.Panel] = []
    for kind, ylabel, ylim in (("id", "Δ behaviour score (ID, A/B test items)", (-1.0, 1.0)),
                               ("ood", "Δ judge score (OOD, 1..10 scale)", (-9.0, 9.0))):
        chosen = [e for e in effects if e["kind"] == kind]
        if not chosen:
            continue

        def label(e: dict[str, Any]) -> str:
            name = str(e["group"]).removeprefix("ID ").removeprefix("OOD ")
            return name if len(layers) <= 1 else f"L{e['layer']} {name}"

        groups = list(dict.fromkeys(label(e) for e in chosen))
        series = {}
        for value in values:
            by = {label(e): e for e in chosen if e["value"] == value}
            picked = [by.get(g) for g in groups]
            series[value_label(unit, value)] = (
                [None if e is None else e["mean"] for e in picked],
                [None if e is None else e["low"] for e in picked],
                [None if e is None else e["high"] for e in picked])
        panels.append(fg.Bars(f"{'in' if kind == 'id' else 'out of'} distribution", ylabel,
                              groups, series, ylim=ylim))
    if panels:
        section.figures.append(ctx.figure(
            "in distribution vs out of distribution", panels,
            n=n_text([{"n": e["n"]} for e in effects], "items (prompts) per bar"),
            band="error bars: 95 % Student-t interval over items, paired with the unsteered "
                 "model (each panel in its own unit)", layer=layers_text(layers)))
    rows = []
    for e in effects:
        rows.append([str(e["group"]), str(e["layer"]), value_label(unit, float(e["value"])),
                     "Δp" if e["kind"] == "id" else "Δjudge", fmt_ci(e["baseline"]),
                     fmt_ci(e["mean"], e["low"], e["high"]), text_of(e["n"])])
    if rows:
        section.tables.append(Table("effects vs the unsteered model",
                                    ["group", "layer", "value", "unit", "at 0", "effect [95 % CI]",
                                     "n"], rows))
    else:
        ctx.warn("no effect could be computed (no value-0 baseline or no per-item scores)")
    coverage = [float(r["value"]) for r in run.select("judge_coverage")
                if r.get("value") is not None]
    if coverage and sum(coverage) / len(coverage) < 0.5:
        ctx.warn(f"the judge puts only {sum(coverage) / len(coverage):.2f} of its next-token "
                 "mass on the digits 1..10 on average: its scores are mostly noise (use a "
                 "larger judge)")
    section.generations += generations_tables(run, unit)
    ctx.check_items([*run.select("judge_score"), *run.select("behaviour_score")])
    ctx.check_layers(layers)
    ctx.check_values(values)
    return section


SCORERS = {"classifier": "the MiniLM + logistic-regression classifier (p(positive))",
           "vader": "VADER (compound −1..1)", "toxicity": "alt-profanity-check"}
SENTIMENT_METRICS = {"classifier": ("p_positive", "success_rate"),
                     "vader": ("compound", "success_rate"),
                     "toxicity": ("toxicity", "toxic_rate")}


def _sentiment_scorer(run: Run) -> str:
    """``classifier`` / ``vader`` / ``toxicity``: what scored the run's completions (runs made
    before the classifier have no ``scorer`` setting and were scored by VADER)."""
    if str(run.settings.get("task") or "") == "toxicity" or run.select("toxicity"):
        return "toxicity"
    scorer = run.settings.get("scorer")
    if scorer in SENTIMENT_METRICS:
        return str(scorer)
    return "classifier" if run.select("p_positive") else "vader"


def sentiment_section(ctx: Context) -> Section:
    """Sentiment / toxicity shift, rate and fluency vs value; example completions."""
    from steerlab.eval.protocols.sentiment_scores import judge_cell

    run, unit = ctx.run, ctx.unit
    scorer = _sentiment_scorer(run)
    task = "toxicity" if scorer == "toxicity" else "sentiment"
    sign = -1 if task == "toxicity" or run.settings.get("target") == "negative" else 1
    mean_name, rate_name = SENTIMENT_METRICS[scorer]
    scored = [r for r in run.select(mean_name) if not field_of(r, "baseline")]
    sets = list(dict.fromkeys(str(r.get("data")) for r in scored))
    layers = sorted_unique(r.get("layer") for r in scored)
    values = sorted_unique(unit_value(r, unit) for r in scored)
    section = Section(ctx.prefix, "", run.command,
                      summary=f"{task}: completions scored by {SCORERS[scorer]}; shift = "
                              "paired change vs the unsteered model per prompt, also with the "
                              "steering words masked; ppl ratio = the steered completions' "
                              "perplexity over the unsteered ones' (the verdict needs ≤ 1.5)")
    lines: dict[str, list[fg.Line]] = {"shift": [], rate_name: [], "fluency_ppl": []}
    for name in sets:
        for k in layers:
            label = name.split(":", 1)[-1] + ("" if len(layers) == 1 else f" L{k}")
            for metric in lines:
                recs = [last_record([r for r in run.select(metric, data=name, layer=k)
                                     if unit_value(r, unit) == v]) for v in values]
                lines[metric].append(fg.Line(label, values, *band_of(recs)))
    if scored:
        section.figures.append(ctx.figure(
            f"{task} under steering",
            [fg.Curves(f"{mean_name} shift vs unsteered", unit, f"Δ {mean_name}",
                       lines["shift"], hline=0.0),
             fg.Curves(rate_name.replace("_", " "), unit, rate_name.replace("_", " "),
                       lines[rate_name], ylim=(0.0, 1.0)),
             fg.Curves("fluency (unsteered model's perplexity)", unit, "perplexity (log)",
                       lines["fluency_ppl"], logy=True)],
            n=n_text(scored, "completions per point"),
            band="shift: 95 % t interval paired per prompt; rate: Wilson 95 %; fluency: exp "
                 "of the 95 % t interval of the mean NLL", layer=layers_text(layers)))
        rows = []
        for name in sets:
            for k in layers:
                for v in values:
                    cell = [r for r in run.records if r.get("data") == name
                            and r.get("layer") == k and unit_value(r, unit) == v
                            and not field_of(r, "baseline")]
                    got = {m: last_record([r for r in cell if r.get("metric") == m])
                           for m in (mean_name, rate_name, "shift", "shift_masked",
                                     "ppl_ratio", "fluency_ppl")}
                    verdict = "–" if not v or got["shift"] is None else judge_cell(
                        cell, sign=sign).verdict
                    rows.append([name, str(k), signed(v), rec_ci(got[mean_name]),
                                 rec_ci(got[rate_name]), rec_ci(got["shift"]),
                                 rec_ci(got["shift_masked"]), rec_ci(got["ppl_ratio"], 2),
                                 rec_ci(got["fluency_ppl"], 1), verdict,
                                 text_of((got[mean_name] or {}).get("n"))])
        section.tables.append(Table(task, ["prompts", "layer", unit, mean_name, rate_name,
                                           "shift [95 % CI]", "shift, words masked",
                                           "ppl ratio", "fluency ppl", "verdict", "n"], rows))
        section.generations += _sentiment_examples(run, unit, mean_name, sets, layers, values)
    ctx.check_items(scored, "completions")
    ctx.check_layers(layers)
    ctx.check_values(values)
    return section


def _sentiment_examples(run: Run, unit: str, metric: str, sets: list[str], layers: list[int],
                        values: list[float]) -> list[Generations]:
    out = []
    for name in sets:
        for k in layers:
            columns: list[list[str]] = []
            for v in values:
                rec = last_record([r for r in run.select(metric, data=name, layer=k)
                                   if unit_value(r, unit) == v])
                examples = field_of(rec, "examples") if rec else None
                columns.append([str(x) for x in examples] if isinstance(examples, list) else [])
            depth = max((len(c) for c in columns), default=0)
            if not depth:
                continue
            rows = [GenerationRow(f"completion {i + 1}", "",
                                  [Answer(c[i] if i < len(c) else "") for c in columns])
                    for i in range(depth)]
            out.append(Generations(f"{name} at layer {k}: first completions",
                                   [value_label(unit, v) for v in values], rows,
                                   note="the first few completions each cell stored (prompts "
                                        "are the same, in the same order, in every column)"))
    return out


# ---------------------------------------------------------------------------------------------
# steering vs prompting

PROMPTING_CONDITIONS = ("baseline", "vector", "prompt", "prompt+vector")


def prompting_section(ctx: Context) -> Section:
    """Steering vs prompting: each condition's behaviour score and fluency cost, the head-to-head
    difference, and the answers side by side."""
    run = ctx.run

    def of(metric: str, condition: str) -> dict[str, Any] | None:
        return last_record(run.select(metric, condition=condition))

    conditions = [c for c in PROMPTING_CONDITIONS if of("score", c) is not None]
    diff = last_record(run.select("difference"))
    layer = layers_text(r.get("layer") for r in run.select("score"))
    section = Section(ctx.prefix, "", run.command,
                      summary="the same test items under each condition, scored as eval sweep "
                              "scores them; vector − prompt = "
                              f"{rec_ci(diff)} (paired over items)")
    if conditions:
        ratios = [of("fluency_ratio", c) for c in conditions]
        section.figures.append(ctx.figure(
            "steering vs prompting", [
                fg.Bars("behaviour score", "score", conditions,
                        {"score": band_of([of("score", c) for c in conditions])},
                        ylim=(0.0, 1.0), hline=None),
                fg.Bars("fluency cost of the answers", "perplexity ratio vs baseline",
                        conditions, {"ratio": (
                            [1.0 if c == "baseline" else (r or {}).get("value")
                             for c, r in zip(conditions, ratios, strict=True)],
                            [None if r is None else r.get("ci_low") for r in ratios],
                            [None if r is None else r.get("ci_high") for r in ratios])},
                        hline=1.0)],
            n=n_text(run.select("score"), "test items per condition"),
            band="score: 95 % Student-t interval over items; fluency ratio: 95 % paired "
                 "bootstrap over items (the plain model's perplexity of each condition's "
                 "greedy answers over the baseline's)", layer=layer))
        section.tables.append(Table(
            "conditions", ["condition", "score [95 % CI]", "effect vs baseline [95 % CI]",
                           "fluency ppl", "fluency ratio [95 % CI]", "refusal rate (phrases)",
                           "judge", "n"],
            [[c, rec_ci(of("score", c)), rec_ci(of("effect", c)),
              rec_ci(of("fluency_ppl", c), 1), rec_ci(of("fluency_ratio", c)),
              rec_ci(of("refusal_rate", c), 2), rec_ci(of("judge_score", c), 2),
              text_of((of("score", c) or {}).get("n"))] for c in conditions]))
        agree = [(c, r) for c in conditions if (r := of("classifier_agreement", c))]
        if agree:
            section.notes.append("phrase classifier vs judge on the answers: " + "; ".join(
                f"{c} {float(r['value']):.2f} agree, kappa {field_of(r, 'kappa'):.2f}"
                for c, r in agree if isinstance(field_of(r, "kappa"), int | float)))
    answers = run.path / "answers.jsonl"
    if answers.is_file():
        rows, _ = rows_of_generations(answers)
        by_id: dict[str, dict[str, dict[str, Any]]] = {}
        for row in rows:
            by_id.setdefault(str(row.get("id")), {})[str(row.get("condition"))] = row
        shown = list(by_id.items())[:MAX_SHOWN_GENERATIONS]
        if shown:
            section.generations.append(Generations(
                "answers by condition", list(PROMPTING_CONDITIONS),
                [GenerationRow(f"#{ident}", str(next(iter(got.values())).get("prompt", "")),
                               [Answer(str((got.get(c) or {}).get("answer", "")))
                                for c in PROMPTING_CONDITIONS]) for ident, got in shown],
                note=f"showing {len(shown)} of {len(by_id)} test questions; greedy answers "
                     "(the prompted conditions also saw the instruction)"))
    ctx.check_items(run.select("score"))
    ctx.check_layers(r.get("layer") for r in run.select("score"))
    ctx.check_pairs(r.get("n_pairs") for r in run.select("score"))
    ctx.check_values(unit_value(r, ctx.unit) or 0.0 for r in run.select("score"))
    return section


# ---------------------------------------------------------------------------------------------
# anything else
