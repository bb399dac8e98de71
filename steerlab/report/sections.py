"""One report section per study, drawn from the run's ``results.jsonl`` (never from its PNGs).

:func:`~steerlab.report.builders.section_for` picks the builder by command: ``sweep`` (layer ×
strength heatmap, behaviour vs strength, effect / steerability / anti-steerable by layer),
``samples``
(effect and cosine vs pair count), ``ood`` (ID vs OOD in two panels, each in its own unit, and
the answers side by side), ``perplexity`` (ratio on a log axis), ``capabilities`` (accuracy and
letter mass), ``sentiment`` (shift, rate, fluency, example completions), ``models`` (effect by
model), ``prompting`` (steering vs prompting: score and fluency cost per condition, the answers
side by side); adversarial, defence and CAA's check are in :mod:`steerlab.report.robustness`;
anything else gets a table of its records. Each section carries its provenance and
the warnings a reader should see before trusting a number (n < 10, letter mass < 0.8, fewer
than ~80 pairs, layer 0, a push larger than the residual stream, ...).

Example:
    >>> from steerlab.report.runs import find_runs
    >>> [section_for(run).title for run in find_runs("runs/r")]         # doctest: +SKIP
    ['sweep · runs/r']
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from steerlab.eval.tables import fmt_ci
from steerlab.report import figures as fg
from steerlab.report.page import (
    Answer,
    Figure,
    GenerationRow,
    Generations,
    Section,
    Table,
    text_of,
)
from steerlab.report.runs import GENERATIONS, Run, field_of, read_json
from steerlab.util import stats

MIN_ITEMS = 10  # fewer items than this: intervals are wide and the warning says so
MIN_PAIRS = 80  # CAE finding 2: effects plateau near ~80 contrast pairs
MIN_LETTER_MASS = 0.8  # below it the A/B readout says little
MAX_SHOWN_GENERATIONS = 12  # prompts per side-by-side table
JUDGE_SPAN = 9.0  # a judge's 1..10 scale

Band = tuple[list[float | None], list[float | None], list[float | None]]


# ---------------------------------------------------------------------------------------------
# small helpers


def rec_ci(record: dict[str, Any] | None, digits: int = 3) -> str:
    """:func:`~steerlab.eval.tables.fmt_ci` of a record (``–`` for None)."""
    if record is None:
        return "–"
    return fmt_ci(record.get("value"), record.get("ci_low"), record.get("ci_high"), digits)


def unit_of(run: Run) -> str:
    """``strength`` or ``coefficient``: the run's unit (from settings, else its records).

    Example:
        >>> unit_of(Run(Path("."), ".", "x", {"unit": "coefficient"}, []))
        'coefficient'
    """
    unit = run.settings.get("unit")
    if unit in ("strength", "coefficient"):
        return str(unit)
    if any(r.get("coefficient") is not None for r in run.records) and not any(
            r.get("strength") is not None for r in run.records):
        return "coefficient"
    return "strength"


def value_label(unit: str, value: float) -> str:
    """``s = +0.5`` / ``c = 0`` (the column heads of side-by-side tables).

    Example:
        >>> value_label("strength", 0.5), value_label("coefficient", 0.0)
        ('s = +0.5', 'c = 0')
    """
    short = "s" if unit == "strength" else "c"
    return f"{short} = 0" if value == 0 else f"{short} = {value:+g}"


def signed(value: float | None) -> str:
    """``+0.5`` / ``-0.5`` / ``0``.

    Example:
        >>> signed(0.5), signed(0.0), signed(None)
        ('+0.5', '0', '–')
    """
    if value is None:
        return "–"
    return "0" if value == 0 else f"{value:+g}"


def _x(record: dict[str, Any], unit: str) -> float | None:
    value = record.get(unit)
    return None if value is None else float(value)


def _sorted_unique(values: Iterable[Any]) -> list[Any]:
    return sorted({v for v in values if v is not None})


def _band(records: Sequence[dict[str, Any] | None] | Sequence[dict[str, Any]]) -> Band:
    return ([None if r is None else r.get("value") for r in records],
            [None if r is None else r.get("ci_low") for r in records],
            [None if r is None else r.get("ci_high") for r in records])


def _one(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return records[-1] if records else None


def _ns(records: Iterable[dict[str, Any] | None]) -> list[int]:
    return sorted({int(r["n"]) for r in records
                   if r is not None and isinstance(r.get("n"), int | float)})


def n_text(records: Iterable[dict[str, Any] | None], what: str) -> str:
    """``20 items`` or ``8–20 items`` from the records' ``n``.

    Example:
        >>> n_text([{"n": 8}, {"n": 20}], "items"), n_text([], "items")
        ('8–20 items', '? items')
    """
    ns = _ns(records)
    if not ns:
        return f"? {what}"
    return f"{ns[0]} {what}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]} {what}"


def _layers_text(layers: Iterable[Any]) -> str:
    got = _sorted_unique(layers)
    return ", ".join(str(k) for k in got) if got else "–"


def model_of(run: Run) -> str:
    """The model the run measured (settings, else its records)."""
    model = run.settings.get("model")
    if model:
        return str(model)
    models = _sorted_unique(str(r.get("model")) for r in run.records if r.get("model"))
    return ", ".join(models) if models else "?"


class Context:
    """What a section builder needs: the run, unique figure ids, and the warnings it raises."""

    def __init__(self, run: Run, prefix: str):
        self.run = run
        self.prefix = prefix
        self.unit = unit_of(run)
        self.model = model_of(run)
        self.warnings: list[str] = []
        self._count = 0

    def figure(self, title: str, panels: Sequence[fg.Panel], *, n: str, band: str,
               layer: str, model: str | None = None, note: str = "",
               suptitle: str = "") -> Figure:
        """Draw the panels and wrap them with their caption facts."""
        self._count += 1
        fid = f"{self.prefix}-f{self._count}"
        return Figure(fid, title, fg.draw(panels, title=suptitle, salt=fid), n=n, band=band,
                      model=model or self.model, layer=layer, note=note)

    def warn(self, text: str) -> None:
        """Add a warning once."""
        if text not in self.warnings:
            self.warnings.append(text)

    def check_items(self, records: Iterable[dict[str, Any]], what: str = "items") -> None:
        """Warn when a measured cell has fewer than :data:`MIN_ITEMS` items."""
        ns = _ns(records)
        if ns and ns[0] < MIN_ITEMS:
            self.warn(f"only n = {ns[0]} {what} in some cells (< {MIN_ITEMS}): the intervals "
                      "are wide and a 'finding' is easily noise")

    def check_layers(self, layers: Iterable[Any]) -> None:
        """Warn when layer 0 is steered."""
        if 0 in set(layers):
            self.warn("layer 0 is steered: the first block's output is mostly the token "
                      "embedding, effects there rarely mean what they seem, and llama.cpp "
                      "cannot apply a direction at layer 0")

    def check_pairs(self, n_pairs: Iterable[Any], source: str = "the vector") -> None:
        """Warn when the vector came from fewer than ~80 pairs."""
        counts = _sorted_unique(int(n) for n in n_pairs if isinstance(n, int | float))
        if counts and counts[-1] < MIN_PAIRS:
            self.warn(f"{source} comes from {counts[-1]} contrast pairs, fewer than the ~"
                      f"{MIN_PAIRS} where effects plateau (CAE finding 2)")

    def check_values(self, values: Iterable[float]) -> None:
        """Warn when a strength pushes harder than the residual stream itself."""
        if self.unit != "strength":
            return
        big = [v for v in values if abs(v) > 1.0]
        if big:
            self.warn(f"strength {max(big, key=abs):+g} adds a vector longer than the mean "
                      "residual-stream norm at its layer (norm blow-up): outputs there are "
                      "off-distribution")

    def check_missing(self, records: Iterable[dict[str, Any]]) -> None:
        """Warn about records whose value was not finite (stored as null)."""
        bad = [r for r in records if r.get("value") is None]
        if bad:
            self.warn(f"{len(bad)} record(s) have no finite value (NaN/inf stored as null)")


def provenance(run: Run) -> list[tuple[str, str]]:
    """Model + revision, data + sha, vector + sha, method, site, pairs, steerlab version."""
    s = run.settings
    out: list[tuple[str, str]] = [("directory", run.rel), ("command", run.command)]
    models = s.get("models")
    if isinstance(models, list):
        for name in models:
            out.append((f"model {name}", f"revision {text_of(s.get(f'revision:{name}'))}"))
    else:
        out.append(("model", model_of(run)))
        out.append(("model revision", text_of(s.get("model_revision"))))
    data = s.get("data") or s.get("trait") or s.get("task") or _sorted_unique(
        str(r.get("data")) for r in run.records if r.get("data"))
    out.append(("data", text_of(data)))
    if s.get("data_sha256"):
        out.append(("data sha256", str(s["data_sha256"])))
    if s.get("vector") or s.get("vector_sha256"):
        out.append(("vector", f"{text_of(s.get('vector'))} (sha256 "
                              f"{text_of(s.get('vector_sha256'))})"))
    elif s.get("pair"):
        out.append(("vector", f"ActAdd pair {text_of(s.get('pair'))}"))
    for key in ("method", "site"):
        got = _sorted_unique(str(r.get(key)) for r in run.records if r.get(key))
        if got or s.get(key):
            out.append((key, text_of(s.get(key)) if s.get(key) else ", ".join(got)))
    pairs = _sorted_unique(r.get("n_pairs") for r in run.records
                           if isinstance(r.get("n_pairs"), int) and r.get("command") != "samples")
    if pairs:
        out.append(("contrast pairs", ", ".join(map(str, pairs))))
    versions = _sorted_unique(str(r.get("steerlab_version")) for r in run.records
                              if r.get("steerlab_version"))
    out.append(("steerlab version", ", ".join(versions) if versions else "–"))
    seconds = sum(float(r["seconds"]) for r in _first_per_cell(run.records)
                  if isinstance(r.get("seconds"), int | float))
    out.append(("measured", f"{len(run.records)} records, {seconds:.1f} s of compute"))
    return out


def _first_per_cell(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for r in records:
        if r.get("cell") not in seen:
            seen.add(r.get("cell"))
            out.append(r)
    return out


def settings_rows(run: Run) -> list[tuple[str, str]]:
    """Every setting of ``run.json`` for this command, as text."""
    return [(str(k), text_of(v)) for k, v in sorted(run.settings.items())]


# ---------------------------------------------------------------------------------------------
# behaviour cells: sweep and models


def _choice(run: Run, layers: list[int], split: str = "val", **match: Any
            ) -> tuple[int | None, str]:
    from steerlab.eval.run import choose_best

    effects = {}
    for k in layers:
        rec = _one(run.select("effect", split=split, layer=k, **match))
        if rec is None:
            continue
        effects[k] = tuple(math.nan if rec.get(f) is None else float(rec[f])
                           for f in ("value", "ci_low", "ci_high"))
    if not effects:
        return None, "no layer has a measured effect"
    choice = choose_best(effects)  # type: ignore[arg-type]
    return choice.layer, choice.reason


def _base_rate(ctx: Context, scores: Sequence[dict[str, Any]], where: str) -> None:
    at_zero = [r for r in scores if _x(r, ctx.unit) == 0.0 and r.get("value") is not None]
    if not at_zero:
        return
    rate = sum(float(r["value"]) for r in at_zero) / len(at_zero)
    if rate < 0.05 or rate > 0.95:
        ctx.warn(f"{where}: the unsteered behaviour score is {rate:.2f}, near "
                 f"{'0' if rate < 0.5 else '1'}: there is little room to move, so the effect "
                 "is bounded by the base rate")


def sweep_section(ctx: Context) -> Section:
    """Layer × strength sweep: heatmap, behaviour vs strength, effect/steerability by layer."""
    run, unit = ctx.run, ctx.unit
    val = run.select("score", split="val")
    test = run.select("score", split="test")
    layers = _sorted_unique(r.get("layer") for r in val)
    values = _sorted_unique(_x(r, unit) for r in [*val, *test])
    chosen, reason = _choice(run, layers)
    tested = _sorted_unique(r.get("layer") for r in test)
    section = Section(ctx.prefix, "", run.command, summary=reason)
    data = text_of(run.settings.get("data") or _sorted_unique(r.get("data") for r in val))
    if layers and values:
        grid = [[(_one([r for r in val if r.get("layer") == k and _x(r, unit) == v]) or {}
                  ).get("value") for v in values] for k in layers]
        section.figures.append(ctx.figure(
            f"validation behaviour score, layer × {unit}",
            [fg.Heat(f"{data}: val behaviour score", grid, [str(k) for k in layers],
                     [f"{v:g}" for v in values], xlabel=unit, ylabel="layer",
                     cbar="p(matching) / (p(A)+p(B))", center=0.5)],
            n=n_text(val, "val items per cell"), band="none: each cell is a mean over the "
            "items (intervals per layer in the table below)", layer=_layers_text(layers)))
    panels: list[fg.Panel] = []
    if val:
        shown = layers if len(layers) <= 6 else [k for k in layers if k in (chosen, *tested)]
        lines = []
        for k in shown:
            recs = [_one([r for r in val if r.get("layer") == k and _x(r, unit) == v])
                    for v in values]
            mean, low, high = _band(recs)
            banded = len(shown) <= 4
            lines.append(fg.Line(f"val, layer {k}", values, mean, low if banded else None,
                                 high if banded else None, dashed=True))
        panels.append(fg.Curves("validation", unit, "behaviour score", lines, hline=0.5,
                                ylim=(0.0, 1.0)))
    if test:
        for k in tested:
            recs = [_one([r for r in test if r.get("layer") == k and _x(r, unit) == v])
                    for v in values]
            label = f"test, layer {k}" + ("" if k == chosen else " (not significant on val)")
            panels.append(fg.Curves("test (layer chosen on val)", unit, "behaviour score",
                                    [fg.Line(label, values, *_band(recs))], hline=0.5,
                                    ylim=(0.0, 1.0)))
    if panels:
        section.figures.append(ctx.figure(
            f"behaviour score vs {unit}", panels,
            n=n_text([*val, *test], "items per point"),
            band="95 % Student-t interval over items (clipped to [0, 1])",
            layer=_layers_text([*tested, *(layers if len(layers) <= 6 else [])])))
    section.figures += _per_layer_figures(ctx, "val", layers, chosen)
    section.tables.append(_per_layer_table(ctx, layers, chosen, tested))
    ctx.check_items([*val, *test])
    ctx.check_layers(layers)
    ctx.check_values(values)
    ctx.check_pairs(r.get("n_pairs") for r in val)
    _base_rate(ctx, val, "validation")
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
        recs = [_one(run.select(metric, split=split, layer=k, **match)) for k in layers]
        if all(r is None for r in recs):
            continue
        panels.append(fg.Curves(metric.replace("_", "-"), "layer", ylabel,
                                [fg.Line(f"{split}", [float(k) for k in layers], *_band(recs))],
                                hline=hline, ylim=ylim, integer_x=True,
                                vline=None if chosen is None else float(chosen)))
    if not panels:
        return []
    effects = run.select("effect", split=split, **match)
    return [ctx.figure(
        f"effect, steerability and anti-steerable fraction by layer ({split})", panels,
        n=n_text(effects, "items per layer"),
        band="95 % Student-t interval over items; anti-steerable: Wilson 95 % interval "
             "(dotted line: the chosen layer)", layer=_layers_text(layers))]


def _per_layer_table(ctx: Context, layers: list[int], chosen: int | None,
                     tested: list[int], **match: Any) -> Table:
    run = ctx.run
    rows, marks = [], []
    for split, which in (("val", layers), ("test", tested)):
        for k in which:
            got = {m: _one(run.select(m, split=split, layer=k, **match))
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
        layers = _sorted_unique(r.get("layer") for r in run.select("effect", split="val",
                                                                   model=name))
        chosen, _ = _choice(run, layers, model=name)
        tested = _sorted_unique(r.get("layer") for r in run.select("effect", split="test",
                                                                   model=name))
        layer = tested[0] if tested else chosen
        val = _one(run.select("effect", split="val", model=name, layer=layer))
        test = _one(run.select("effect", split="test", model=name, layer=layer))
        val_band.append(val)
        test_band.append(test)
        rows.append([name, _layers_text(layers), "–" if layer is None else str(layer),
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
                {"val": _band(val_band), "test": _band(test_band)}, ylim=(-1.0, 1.0))],
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
    sizes = _sorted_unique(r.get("n_pairs") for r in effects)
    layer = _layers_text(r.get("layer") for r in effects)
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
                    "layer": rec.get("layer"), "value": _x(rec, unit), "mean": rec.get("value"),
                    "low": rec.get("ci_low"), "high": rec.get("ci_high"), "n": rec.get("n"),
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
            zero = _one([r for r in group if _x(r, unit) == 0.0])
            if zero is None or not field_of(zero, "scores"):
                continue
            base = [float(x) for x in field_of(zero, "scores")]
            for rec in group:
                value = _x(rec, unit)
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
    layers = _sorted_unique(e["layer"] for e in effects) or _sorted_unique(
        r.get("layer") for r in run.records)
    values = _sorted_unique(e["value"] for e in effects)
    trait = run.settings.get("trait") or _sorted_unique(
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
                 "model (each panel in its own unit)", layer=_layers_text(layers)))
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


def _rows_of_generations(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    if path.suffix == ".jsonl":
        rows = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows, None
    loaded, why = read_json(path)
    if isinstance(loaded, dict):
        loaded = loaded.get("rows", loaded.get("generations"))
    if not isinstance(loaded, list):
        return [], why or f"{path.name}: expected a list of generation rows"
    return [r for r in loaded if isinstance(r, dict)], None


def generations_tables(run: Run, unit: str) -> list[Generations]:
    """Answers side by side per prompt, one column per value (−s, 0, +s, ...), from
    ``generations.jsonl`` / ``generations.json`` rows: ``prompt``, ``answer`` (or ``text``),
    the value under ``strength`` or ``coefficient`` (or ``value``), and optional ``score``,
    ``layer``, ``id``, ``format``/``length``/``group``.
    """
    out = []
    for name in GENERATIONS:
        path = run.path / name
        if not path.is_file():
            continue
        rows, why = _rows_of_generations(path)
        if why:
            out.append(Generations(f"generations ({name})", [], [], note=why))
            continue
        keyed: dict[tuple[Any, ...], dict[float, dict[str, Any]]] = {}
        values: set[float] = set()
        for row in rows:
            raw = row.get(unit, row.get("value", row.get("strength", row.get("coefficient"))))
            if not isinstance(raw, int | float):
                continue
            value = float(raw)
            group = row.get("group") or "/".join(str(row[k]) for k in ("format", "length")
                                                 if row.get(k))
            key = (str(group), row.get("layer"), str(row.get("id", row.get("prompt", ""))),
                   str(row.get("prompt", "")))
            keyed.setdefault(key, {})[value] = row
            values.add(value)
        columns = sorted(values)
        table_rows = []
        for (group, layer, ident, prompt), by_value in list(keyed.items())[
                :MAX_SHOWN_GENERATIONS]:
            answers = []
            for value in columns:
                got = by_value.get(value)
                text = "" if got is None else str(got.get("answer", got.get("text", "")))
                score = got.get("score") if got else None
                answers.append(Answer(text, "" if not isinstance(score, int | float)
                                      else f"score {score:.2f}"))
            where = " · ".join(x for x in (group, f"layer {layer}" if layer is not None else "",
                                           f"#{ident}" if ident != prompt else "") if x)
            table_rows.append(GenerationRow(where, prompt, answers))
        shown = min(len(keyed), MAX_SHOWN_GENERATIONS)
        out.append(Generations(
            f"generations at {', '.join(value_label(unit, v) for v in columns)}",
            [value_label(unit, v) for v in columns], table_rows,
            note=f"showing {shown} of {len(keyed)} prompts from {name}; greedy answers, "
                 "scores from the judge where it rated them"))
    return out


# ---------------------------------------------------------------------------------------------
# perplexity, capabilities, sentiment


def perplexity_section(ctx: Context) -> Section:
    """Steered / unsteered perplexity ratio vs value, per layer, on a log axis."""
    run, unit = ctx.run, ctx.unit
    ratios = run.select("ppl_ratio")
    layers = _sorted_unique(r.get("layer") for r in ratios)
    values = _sorted_unique(_x(r, unit) for r in ratios)
    base = _one([r for r in run.select("ppl") if field_of(r, "baseline")])
    window = field_of(ratios[0], "tokens_per_window") if ratios else None
    data = text_of(_sorted_unique(r.get("data") for r in ratios))
    section = Section(ctx.prefix, "", run.command,
                      summary=f"{data}: unsteered perplexity {rec_ci(base, 2)}; the ratio is "
                              "exp of the mean paired per-window NLL difference")
    if ratios:
        lines = [fg.Line(f"layer {k}", values, *_band(
            [_one([r for r in ratios if r.get("layer") == k and _x(r, unit) == v])
             for v in values])) for k in layers]
        ppl_lines = [fg.Line(f"layer {k}", values, *_band(
            [_one([r for r in run.select("ppl", layer=k) if _x(r, unit) == v])
             for v in values])) for k in layers]
        section.figures.append(ctx.figure(
            "perplexity cost of steering",
            [fg.Curves("steered / unsteered perplexity", unit, "ratio (log scale)", lines,
                       logy=True, hline=1.0),
             fg.Curves("perplexity", unit, "perplexity (log scale)", ppl_lines, logy=True,
                       hline=None if base is None else base.get("value"))],
            n=n_text(ratios, "windows") + (f" × {window} scored tokens" if window else ""),
            band="95 % paired percentile bootstrap over windows", layer=_layers_text(layers)))
        section.tables.append(Table(
            "perplexity", ["layer", unit, "perplexity [95 % CI]", "ratio [95 % CI]", "windows"],
            [[str(r.get("layer")), signed(_x(r, unit)),
              rec_ci(_one([p for p in run.select("ppl", layer=r.get("layer"))
                           if _x(p, unit) == _x(r, unit)]), 2), rec_ci(r), text_of(r.get("n"))]
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
    benches = _sorted_unique(str(r.get("data")) for r in acc)
    layers = _sorted_unique(r.get("layer") for r in acc)
    values = _sorted_unique(_x(r, unit) for r in acc)
    section = Section(ctx.prefix, "", run.command,
                      summary="accuracy = share of items whose correct letter is likelier; "
                              "letter mass = p(A) + p(B), how much the model answers in the "
                              "format at all")
    acc_lines, mass_lines, rows = [], [], []
    for bench in benches:
        for k in layers:
            name = bench.removeprefix("capabilities:") + ("" if len(layers) == 1 else f" L{k}")
            a = [_one([r for r in acc if r.get("data") == bench and r.get("layer") == k
                       and _x(r, unit) == v]) for v in values]
            m = [_one([r for r in run.select("letter_mass", data=bench, layer=k)
                       if _x(r, unit) == v]) for v in values]
            acc_lines.append(fg.Line(name, values, *_band(a)))
            mass_lines.append(fg.Line(name, values, *_band(m)))
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
            layer=_layers_text(layers)))
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
    layers = _sorted_unique(r.get("layer") for r in scored)
    values = _sorted_unique(_x(r, unit) for r in scored)
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
                recs = [_one([r for r in run.select(metric, data=name, layer=k)
                              if _x(r, unit) == v]) for v in values]
                lines[metric].append(fg.Line(label, values, *_band(recs)))
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
                 "of the 95 % t interval of the mean NLL", layer=_layers_text(layers)))
        rows = []
        for name in sets:
            for k in layers:
                for v in values:
                    cell = [r for r in run.records if r.get("data") == name
                            and r.get("layer") == k and _x(r, unit) == v
                            and not field_of(r, "baseline")]
                    got = {m: _one([r for r in cell if r.get("metric") == m])
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
                rec = _one([r for r in run.select(metric, data=name, layer=k)
                            if _x(r, unit) == v])
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
        return _one(run.select(metric, condition=condition))

    conditions = [c for c in PROMPTING_CONDITIONS if of("score", c) is not None]
    diff = _one(run.select("difference"))
    layer = _layers_text(r.get("layer") for r in run.select("score"))
    section = Section(ctx.prefix, "", run.command,
                      summary="the same test items under each condition, scored as eval sweep "
                              "scores them; vector − prompt = "
                              f"{rec_ci(diff)} (paired over items)")
    if conditions:
        ratios = [of("fluency_ratio", c) for c in conditions]
        section.figures.append(ctx.figure(
            "steering vs prompting", [
                fg.Bars("behaviour score", "score", conditions,
                        {"score": _band([of("score", c) for c in conditions])},
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
        rows, _ = _rows_of_generations(answers)
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
    ctx.check_values(_x(r, ctx.unit) or 0.0 for r in run.select("score"))
    return section


# ---------------------------------------------------------------------------------------------
# anything else


def generic_section(ctx: Context) -> Section:
    """A run of a command this report does not know: its records as a table."""
    run = ctx.run
    section = Section(ctx.prefix, "", run.command,
                      summary=f"{len(run.records)} records of a command without a dedicated "
                              "view; shown as a table")
    rows = []
    for r in run.records[:300]:
        where = ", ".join(f"{k} {r[k]}" for k in ("split", "layer", "strength", "coefficient",
                                                  "n_pairs") if r.get(k) is not None)
        rows.append([str(r.get("metric")), where, rec_ci(r), text_of(r.get("n"))])
    if rows:
        section.tables.append(Table("records", ["metric", "where", "value [95 % CI]", "n"],
                                    rows, note="" if len(run.records) <= 300 else
                                    f"first 300 of {len(run.records)} records"))
    section.generations += generations_tables(run, ctx.unit)
    ctx.check_items(run.records)
    return section
