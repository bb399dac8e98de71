"""Report sections of the studies that score answers: ``sweep`` (layer × strength heatmap,
behaviour vs strength, effect / steerability / anti-steerable by layer), ``models`` (effect by
model), ``samples`` (effect and cosine vs pair count), ``perplexity`` (ratio on a log axis) and
``capabilities`` (accuracy and letter mass). Shared helpers and :class:`Context`:
:mod:`steerlab.report.sections`.
"""

from __future__ import annotations

import math
from typing import Any

from steerlab.eval import figures as fg
from steerlab.eval.tables import fmt_ci
from steerlab.report.page import (
    Figure,
    Section,
    Table,
    text_of,
)
from steerlab.report.runs import field_of
from steerlab.report.sections import (
    MIN_LETTER_MASS,
    Context,
    band_of,
    last_record,
    layer_choice,
    layers_text,
    n_text,
    rec_ci,
    signed,
    sorted_unique,
    unit_value,
    warn_base_rate,
)
from steerlab.util import stats


def sweep_section(ctx: Context) -> Section:
    """Layer × strength sweep: heatmap, behaviour vs strength, effect/steerability by layer."""
    run, unit = ctx.run, ctx.unit
    val = run.select("score", split="val")
    test = run.select("score", split="test")
    layers = sorted_unique(r.get("layer") for r in val)
    values = sorted_unique(unit_value(r, unit) for r in [*val, *test])
    chosen, reason = layer_choice(run, layers)
    tested = sorted_unique(r.get("layer") for r in test)
    section = Section(ctx.prefix, "", run.command, summary=reason)
    data = text_of(run.settings.get("data") or sorted_unique(r.get("data") for r in val))
    if layers and values:
        grid = [[(last_record([r for r in val
                               if r.get("layer") == k and unit_value(r, unit) == v]) or {}
                  ).get("value") for v in values] for k in layers]
        section.figures.append(ctx.figure(
            f"validation behaviour score, layer × {unit}",
            [fg.Heat(f"{data}: val behaviour score", grid, [str(k) for k in layers],
                     [f"{v:g}" for v in values], xlabel=unit, ylabel="layer",
                     cbar="p(matching) / (p(A)+p(B))", center=0.5)],
            n=n_text(val, "val items per cell"), band="none: each cell is a mean over the "
            "items (intervals per layer in the table below)", layer=layers_text(layers)))
    panels: list[fg.Panel] = []
    if val:
        shown = layers if len(layers) <= 6 else [k for k in layers if k in (chosen, *tested)]
        lines = []
        for k in shown:
            recs = [last_record([r for r in val
                                 if r.get("layer") == k and unit_value(r, unit) == v])
                    for v in values]
            mean, low, high = band_of(recs)
            banded = len(shown) <= 4
            lines.append(fg.Line(f"val, layer {k}", values, mean, low if banded else None,
                                 high if banded else None, dashed=True))
        panels.append(fg.Curves("validation", unit, "behaviour score", lines, hline=0.5,
                                ylim=(0.0, 1.0)))
    if test:
        for k in tested:
            recs = [last_record([r for r in test
                                 if r.get("layer") == k and unit_value(r, unit) == v])
                    for v in values]
            label = f"test, layer {k}" + ("" if k == chosen else " (not significant on val)")
            panels.append(fg.Curves("test (layer chosen on val)", unit, "behaviour score",
                                    [fg.Line(label, values, *band_of(recs))], hline=0.5,
                                    ylim=(0.0, 1.0)))
    if panels:
        section.figures.append(ctx.figure(
            f"behaviour score vs {unit}", panels,
            n=n_text([*val, *test], "items per point"),
            band="95 % Student-t interval over items (clipped to [0, 1])",
            layer=layers_text([*tested, *(layers if len(layers) <= 6 else [])])))
    section.figures += _per_layer_figures(ctx, "val", layers, chosen)
    section.tables.append(_per_layer_table(ctx, layers, chosen, tested))
    ctx.check_items([*val, *test])
    ctx.check_layers(layers)
    ctx.check_values(values)
    ctx.check_pairs(r.get("n_pairs") for r in val)
    warn_base_rate(ctx, val, "validation")
    if chosen is None and layers:
        ctx.warn(f"no layer was chosen: {reason}")
    return section


def _per_layer_figures(ctx: Context, split: str, layers: list[int],
                       chosen: int | None, **match: Any) -> list[Figure]:
    run = ctx.run
    if not layers:
        return []
    panels: list[fg.Panel] = []
    for metric, ylabel, hline, ylim in (
            ("effect", "effect: score(max) − score(min)", 0.0, None),
            ("steerability", "steerability (slope of propensity)", 0.0, None),
            ("anti_steerable", "anti-steerable share of items", None, (0.0, 1.0))):
        recs = [last_record(run.select(metric, split=split, layer=k, **match)) for k in layers]
        if all(r is None for r in recs):
            continue
        panels.append(fg.Curves(metric.replace("_", "-"), "layer", ylabel,
                                [fg.Line(f"{split}", [float(k) for k in layers], *band_of(recs))],
                                hline=hline, ylim=ylim, integer_x=True,
                                vline=None if chosen is None else float(chosen)))
    if not panels:
        return []
    effects = run.select("effect", split=split, **match)
    return [ctx.figure(
        f"effect, steerability and anti-steerable fraction by layer ({split})", panels,
        n=n_text(effects, "items per layer"),
        band="95 % Student-t interval over items; anti-steerable: Wilson 95 % interval "
             "(dotted line: the chosen layer)", layer=layers_text(layers))]


def _per_layer_table(ctx: Context, layers: list[int], chosen: int | None,
                     tested: list[int], **match: Any) -> Table:
    run = ctx.run
    rows, marks = [], []
    for split, which in (("val", layers), ("test", tested)):
        for k in which:
            got = {m: last_record(run.select(m, split=split, layer=k, **match))
                   for m in ("effect", "steerability", "anti_steerable")}
            if all(v is None for v in got.values()):
                continue
            n = next((str(r["n"]) for r in got.values() if r and r.get("n") is not None), "–")
            rows.append([split, str(k), rec_ci(got["effect"]), rec_ci(got["steerability"]),
                         rec_ci(got["anti_steerable"], 2), n])
            marks.append("chosen" if k == chosen else "")
    return Table("effect by layer", ["split", "layer", "effect [95 % CI]",
                                     "steerability [95 % CI]", "anti-steerable [95 % CI]", "n"],
                 rows, note="effect = score at the largest value − at the smallest, paired "
                 "per item; steerability = mean per-item slope of the propensity (logit "
                 "matching − logit other) vs the value; highlighted: the layer chosen on val.",
                 marks=marks)


def models_section(ctx: Context) -> Section:
    """One protocol across models: effect by model (layer chosen on val, scored on test)."""
    run = ctx.run
    names = list(dict.fromkeys(str(r.get("model")) for r in run.records if r.get("model")))
    rows, marks = [], []
    val_band: list[dict[str, Any] | None] = []
    test_band: list[dict[str, Any] | None] = []
    for name in names:
        layers = sorted_unique(r.get("layer") for r in run.select("effect", split="val",
                                                                  model=name))
        chosen, _ = layer_choice(run, layers, model=name)
        tested = sorted_unique(r.get("layer") for r in run.select("effect", split="test",
                                                                  model=name))
        layer = tested[0] if tested else chosen
        val = last_record(run.select("effect", split="val", model=name, layer=layer))
        test = last_record(run.select("effect", split="test", model=name, layer=layer))
        val_band.append(val)
        test_band.append(test)
        rows.append([name, layers_text(layers), "–" if layer is None else str(layer),
                     "yes" if chosen is not None else "no (largest, n.s.)", rec_ci(val),
                     rec_ci(test), text_of(None if test is None else test.get("n"))])
        marks.append("" if chosen is not None else "muted")
        ctx.check_layers(layers)
    section = Section(ctx.prefix, "", run.command,
                      summary=f"{len(names)} model(s); the layer is chosen on val where its "
                              "effect is distinguishable from zero, then scored on test")
    if names:
        section.figures.append(ctx.figure(
            "steering effect by model", [fg.Bars(
                "effect at the chosen layer", "score(max) − score(min)",
                [n.rsplit("/", 1)[-1] for n in names],
                {"val": band_of(val_band), "test": band_of(test_band)}, ylim=(-1.0, 1.0))],
            n=n_text([r for r in test_band if r], "test items per model"),
            band="error bars: 95 % Student-t interval over items (paired)",
            layer="chosen per model (table)", model=", ".join(names)))
    section.tables.append(Table("models", ["model", "layers tried", "layer", "chosen on val",
                                           "val effect [95 % CI]", "test effect [95 % CI]",
                                           "n test"], rows, marks=marks))
    ctx.check_items(run.select("score"))
    ctx.check_pairs(r.get("n_pairs") for r in run.records)
    ctx.check_values(float(v) for v in run.settings.get("strengths") or []
                     if isinstance(v, int | float))
    return section


# ---------------------------------------------------------------------------------------------
# samples


def samples_section(ctx: Context) -> Section:
    """Effect and cosine to the full-data vector vs the number of pairs, with the plateau."""
    run = ctx.run
    effects = run.select("effect")
    sizes = sorted_unique(r.get("n_pairs") for r in effects)
    layer = layers_text(r.get("layer") for r in effects)
    summary: dict[str, list[tuple[float, float, float, int]]] = {"effect": [], "cosine": []}
    for metric, bounds in (("effect", (-1.0, 1.0)), ("cosine", (-1.0, 1.0))):
        for n in sizes:
            vals = [float(r["value"]) for r in run.select(metric, n_pairs=n)
                    if r.get("value") is not None]
            mean, low, high = stats.mean_ci(vals, bounds=bounds) if vals else (math.nan,) * 3
            summary[metric].append((mean, low, high, len(vals)))
    full = summary["effect"][-1] if sizes else (math.nan, math.nan, math.nan, 0)
    plateau = None
    if sizes and not math.isnan(full[1]) and full[1] > 0:
        half = [(e[2] - e[0]) if not math.isnan(e[2]) else math.inf for e in summary["effect"]]
        plateau = stats.plateau(sizes, [e[0] for e in summary["effect"]], half)
    verdict = (f"plateau at {plateau} pairs" if plateau is not None else
               "no plateau: the effect with the most pairs is not distinguishable from zero"
               if sizes and (math.isnan(full[1]) or full[1] <= 0) else
               "no plateau within the counts tried")
    section = Section(ctx.prefix, "", run.command, summary=verdict)
    if sizes:
        xs = [float(n) for n in sizes]
        draws = max(e[3] for e in summary["effect"])

        def line(metric: str) -> fg.Line:
            rows = summary[metric]
            return fg.Line(metric, xs, [r[0] for r in rows], [r[1] for r in rows],
                           [r[2] for r in rows])

        section.figures.append(ctx.figure(
            "effect and agreement vs number of contrast pairs",
            [fg.Curves(f"effect ({verdict})", "contrast pairs (log scale)",
                       "score(max) − score(min)", [line("effect")], logx=True, hline=0.0,
                       vline=None if plateau is None else float(plateau)),
             fg.Curves("cosine to the vector from all pairs", "contrast pairs (log scale)",
                       "cosine", [line("cosine")], logx=True, ylim=(-1.0, 1.05))],
            n=f"{n_text(effects, 'items')} per draw, up to {draws} draws per count",
            band="95 % Student-t interval over random draws of the pairs", layer=layer))
        section.tables.append(Table(
            "by pair count", ["pairs", "effect [95 % CI]", "cosine [95 % CI]", "draws"],
            [[str(n), fmt_ci(*summary["effect"][i][:3]), fmt_ci(*summary["cosine"][i][:3]),
              str(summary["effect"][i][3])] for i, n in enumerate(sizes)],
            marks=["chosen" if n == plateau else "" for n in sizes]))
        if draws < 3:
            ctx.warn(f"only {draws} draw(s) per pair count: the intervals over draws are "
                     "wide or missing")
    ctx.check_items(effects)
    ctx.check_pairs(sizes, source="the largest pool")
    ctx.check_layers(r.get("layer") for r in effects)
    return section


# ---------------------------------------------------------------------------------------------
# out of distribution


def perplexity_section(ctx: Context) -> Section:
    """Steered / unsteered perplexity ratio vs value, per layer, on a log axis."""
    run, unit = ctx.run, ctx.unit
    ratios = run.select("ppl_ratio")
    layers = sorted_unique(r.get("layer") for r in ratios)
    values = sorted_unique(unit_value(r, unit) for r in ratios)
    base = last_record([r for r in run.select("ppl") if field_of(r, "baseline")])
    window = field_of(ratios[0], "tokens_per_window") if ratios else None
    data = text_of(sorted_unique(r.get("data") for r in ratios))
    section = Section(ctx.prefix, "", run.command,
                      summary=f"{data}: unsteered perplexity {rec_ci(base, 2)}; the ratio is "
                              "exp of the mean paired per-window NLL difference")
    if ratios:
        lines = [fg.Line(f"layer {k}", values, *band_of(
            [last_record([r for r in ratios if r.get("layer") == k and unit_value(r, unit) == v])
             for v in values])) for k in layers]
        ppl_lines = [fg.Line(f"layer {k}", values, *band_of(
            [last_record([r for r in run.select("ppl", layer=k) if unit_value(r, unit) == v])
             for v in values])) for k in layers]
        section.figures.append(ctx.figure(
            "perplexity cost of steering",
            [fg.Curves("steered / unsteered perplexity", unit, "ratio (log scale)", lines,
                       logy=True, hline=1.0),
             fg.Curves("perplexity", unit, "perplexity (log scale)", ppl_lines, logy=True,
                       hline=None if base is None else base.get("value"))],
            n=n_text(ratios, "windows") + (f" × {window} scored tokens" if window else ""),
            band="95 % paired percentile bootstrap over windows", layer=layers_text(layers)))
        section.tables.append(Table(
            "perplexity", ["layer", unit, "perplexity [95 % CI]", "ratio [95 % CI]", "windows"],
            [[str(r.get("layer")), signed(unit_value(r, unit)),
              rec_ci(last_record([p for p in run.select("ppl", layer=r.get("layer"))
                                  if unit_value(p, unit) == unit_value(r, unit)]), 2),
              rec_ci(r), text_of(r.get("n"))]
             for r in ratios]))
        worst = max((float(r["value"]) for r in ratios if r.get("value") is not None),
                    default=1.0)
        if worst > 2.0:
            ctx.warn(f"perplexity rises up to ×{worst:.2f} under steering: at that push the "
                     "model's text is damaged (norm blow-up)")
    ctx.check_items(ratios, "windows")
    ctx.check_layers(layers)
    ctx.check_values(values)
    return section


def capabilities_section(ctx: Context) -> Section:
    """MMLU / TruthfulQA A/B accuracy and letter mass vs value."""
    run, unit = ctx.run, ctx.unit
    acc = run.select("accuracy")
    benches = sorted_unique(str(r.get("data")) for r in acc)
    layers = sorted_unique(r.get("layer") for r in acc)
    values = sorted_unique(unit_value(r, unit) for r in acc)
    section = Section(ctx.prefix, "", run.command,
                      summary="accuracy = share of items whose correct letter is likelier; "
                              "letter mass = p(A) + p(B), how much the model answers in the "
                              "format at all")
    acc_lines, mass_lines, rows = [], [], []
    for bench in benches:
        for k in layers:
            name = bench.removeprefix("capabilities:") + ("" if len(layers) == 1 else f" L{k}")
            a = [last_record([r for r in acc if r.get("data") == bench and r.get("layer") == k
                              and unit_value(r, unit) == v]) for v in values]
            m = [last_record([r for r in run.select("letter_mass", data=bench, layer=k)
                              if unit_value(r, unit) == v]) for v in values]
            acc_lines.append(fg.Line(name, values, *band_of(a)))
            mass_lines.append(fg.Line(name, values, *band_of(m)))
            for v, ra, rm in zip(values, a, m, strict=True):
                rows.append([name, signed(v), rec_ci(ra), rec_ci(rm),
                             text_of(None if ra is None else ra.get("n"))])
    if acc_lines:
        section.figures.append(ctx.figure(
            "capabilities under steering",
            [fg.Curves("accuracy", unit, "accuracy", acc_lines, hline=0.5, ylim=(0.0, 1.0)),
             fg.Curves("letter mass p(A)+p(B)", unit, "p(A) + p(B)", mass_lines,
                       hline=MIN_LETTER_MASS, ylim=(0.0, 1.0))],
            n=n_text(acc, "items per benchmark"),
            band="accuracy: Wilson 95 % interval; letter mass: 95 % Student-t interval "
                 f"(dashed: chance 0.5 and the {MIN_LETTER_MASS} mass threshold)",
            layer=layers_text(layers)))
        section.tables.append(Table("capabilities", ["benchmark", unit, "accuracy [95 % CI]",
                                                     "letter mass [95 % CI]", "n"], rows))
    low = [r for r in run.select("letter_mass") if r.get("value") is not None
           and float(r["value"]) < MIN_LETTER_MASS]
    if low:
        worst = min(float(r["value"]) for r in low)
        ctx.warn(f"letter mass p(A)+p(B) is below {MIN_LETTER_MASS} in {len(low)} cell(s) "
                 f"(lowest {worst:.3f}): the model mostly does not answer with a letter, so "
                 "its A/B accuracy says little")
    ctx.check_items(acc)
    ctx.check_layers(layers)
    ctx.check_values(values)
    return section
