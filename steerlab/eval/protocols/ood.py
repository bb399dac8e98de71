"""In distribution vs out of distribution (``eval ood``; CAE finding 4: effects shrink OOD).

Out of distribution (DESIGN §7): the AEP prompts (``<data>/ood/{choice-qa,open-ended}/
{practical,safety}/<trait>-{short,medium,long}.json``, 10 prompts each, some with a
``criteria`` rubric) are answered by the model with the vector applied at each coefficient (or
strength); greedy generation, batched. A judge (:mod:`steerlab.eval.judges`) rates every answer
1..10 for the trait. The OOD effect of a value c is the paired mean of judge(c) − judge(0) over
the same prompts, per format × length and pooled per format.

In distribution: the same vector, layer and values on the trait's A/B data (default
``mwe:<trait>`` — the Anthropic persona file — or ``caa:<trait>``; test split), scored by the
sweep engine (CAA behaviour score p(matching)/(p(A)+p(B))). The ID effect is the paired mean of
score(c) − score(0) per item.

Every cell (trait × format × length × layer × value, or ID × layer × value) is one
:class:`~steerlab.eval.store.ResultStore` cell, generated and judged on its own, so a killed run
loses one cell and a rerun skips what is done. Answers go to ``generations.jsonl`` (rewritten
atomically per cell). The effects (95 % paired Student-t intervals, clipped to the range a
difference can take) are printed as one table, stored as ``metric="effect"`` records and drawn
in ``ood_effects.png`` as two panels, each in its own unit: ID in behaviour-score points (Δp)
and OOD in judge points (Δscore on the 1..10 scale). ``--limit`` caps the prompts per cell and
the ID test items alike (a seeded subset of each); ``OODConfig.id_limit`` sets the ID items
apart (the audit passes its ``--limit``: an ID item costs one forward, an OOD prompt a whole
generation and a judge call, so the ID side can afford more).

Example:
    $ steerlab eval ood --model smollm2-135m --vector agree.safetensors --layers 12 \\
          --trait agreeableness --judge local:qwen2.5-coder-0.5b --strengths=-0.5,0,0.5 \\
          --limit 5 --out runs/agree-ood
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.data.benchmarks import (
    OODPrompt,
    OODSet,
    default_id_data,
    load_ood,
    seeded_subset,
)
from steerlab.data.loaders import load_dataset
from steerlab.errors import SteerlabError
from steerlab.eval.configs.ood import OODConfig
from steerlab.eval.figures import Band, Bars, save_png
from steerlab.eval.judges import Judge, JudgeItem, parse_judge, split_judge_spec
from steerlab.eval.run import EvalRun, file_sha256, stopwatch
from steerlab.eval.store import cell_id, make_record, replace_cell_rows
from steerlab.eval.tables import console, fmt, fmt_ci, print_table
from steerlab.model.load import LoadedModel, load_model
from steerlab.scoring.generate import generate
from steerlab.steering.spec import SteeringSpec
from steerlab.util import stats
from steerlab.util.parse import resolve_layers
from steerlab.util.progress import bar
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector

JUDGE_SPAN = 9.0  # the judge's scale 1..10


@dataclass(frozen=True)
class Effect:
    """Paired mean difference score(value) − score(0) of one group, with its 95 % interval.

    ``scale`` converts it to the plot's common axis (1 for Δp, 1/9 for judge points).
    """

    group: str
    kind: str  # "id" or "ood"
    layer: int
    value: float
    mean: float
    low: float
    high: float
    n: int
    baseline: float
    scale: float = 1.0


@dataclass
class OODRun:
    """Everything one ``eval ood`` run measures with (what the cell ids are made of)."""

    lm: LoadedModel
    vector: SteeringVector
    vector_id: str
    trait: str
    judge: Judge
    layers: list[int]
    values: list[float]
    unit: Unit = "coefficient"
    limit: int = 0
    seed: int = 0
    max_new_tokens: int = 64
    batch_size: int = 16
    id_format: str = "ab"
    id_limit: int | None = None  # ID test items; None: ``limit``
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id_items(self) -> int:
        """How many ID test items (0 = all)."""
        return self.limit if self.id_limit is None else self.id_limit

    def spec(self, layer: int, value: float) -> SteeringSpec | None:
        """The steering of one cell (``None`` at value 0: the plain model)."""
        if value == 0.0:
            return None
        return SteeringSpec.at(self.vector, [layer], value, unit=self.unit)

    def ood_cell(self, ood: OODSet, layer: int, value: float) -> str:
        return cell_id("ood", trait=self.trait, format=ood.format, length=ood.length,
                              layer=layer, **{self.unit: value}, judge=self.judge.name,
                              limit=self.limit, tokens=self.max_new_tokens,
                              model=self.lm.model_id, vector=self.vector_id)

    def id_cell(self, data: str, layer: int, value: float) -> str:
        extra = {} if self.id_format == "ab" else {"format": self.id_format}
        return cell_id("ood", part="id", data=data, layer=layer, **{self.unit: value},
                       limit=self.id_items, seed=self.seed, model=self.lm.model_id,
                       vector=self.vector_id, **extra)

    def effect_cell(self, effect: Effect) -> str:
        return cell_id("ood", part="effect", group=effect.group, layer=effect.layer,
                              **{self.unit: effect.value}, judge=self.judge.name,
                              limit=self.limit, seed=self.seed,
                              tokens=self.max_new_tokens, model=self.lm.model_id,
                              vector=self.vector_id)

    def fields(self, layer: int, value: float) -> dict[str, Any]:
        """Record fields shared by every record of a (layer, value) cell."""
        return {"command": "ood", "model": self.lm.model_id, "method": self.vector.method,
                "layer": layer, "site": self.vector.site, "seed": self.seed,
                self.unit: value, "vector": self.vector_id, "trait": self.trait}


# ---------------------------------------------------------------------------------------------
# Measuring


def paired_ci(a: Sequence[float], b: Sequence[float],
              bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean of a − b item by item, with the 95 % Student-t interval of that mean (clipped to
    ``bounds``, the range a difference can take).

    Example:
        >>> paired_ci([2.0, 3.0, 4.0], [1.0, 1.0, 1.0])[0]
        2.0
    """
    if len(a) != len(b):
        raise SteerlabError(f"paired difference needs equal lengths, got {len(a)} and {len(b)}")
    return stats.mean_ci([x - y for x, y in zip(a, b, strict=True)], bounds=bounds)


def measure_ood_cell(run: OODRun, ood: OODSet, layer: int, value: float,
                     store: EvalRun) -> None:
    """Generate the answers of one cell, judge them, store the records and the answers."""
    prompts: list[OODPrompt] = seeded_subset(list(ood.prompts), run.limit, run.seed)
    spec = run.spec(layer, value)
    cell = run.ood_cell(ood, layer, value)
    with stopwatch() as took:
        answers = generate(run.lm, [p.prompt for p in prompts], spec,
                           max_new_tokens=run.max_new_tokens, batch_size=run.batch_size)
        ratings = run.judge.rate_many([JudgeItem(run.trait, p.criteria, p.prompt, a)
                                       for p, a in zip(prompts, answers, strict=True)])
    scores = [r.score for r in ratings]
    coverage = [r.coverage for r in ratings]
    mean, low, high = stats.mean_ci(scores)
    base = {**run.fields(layer, value), "data": f"ood:{ood.trait}/{ood.group}",
            "split": "ood", "n": len(scores), "seconds": took[0], "format": ood.format,
            "length": ood.length, "judge": run.judge.name, "max_new_tokens": run.max_new_tokens}
    replace_cell_rows(store.path("generations.jsonl"), cell, [
        {"trait": ood.trait, "format": ood.format, "length": ood.length, "layer": layer,
         run.unit: value, "id": p.id, "prompt": p.prompt, "answer": a, "score": r.score,
         "coverage": r.coverage} for p, a, r in zip(prompts, answers, ratings, strict=True)],
        what="generations")
    store.add(cell, [
        make_record("judge_score", mean, ci=(low, high), scores=scores, **base),
        make_record("judge_coverage", sum(coverage) / len(coverage), **base)])


def measure_id_cells(run: OODRun, data: str, store: EvalRun) -> None:
    """Behaviour scores on ``data`` (test split) for every (layer, value) not yet stored: CAA's
    letter score (``id_format="ab"``) or the open-answer score over whole replies (``"open"``)."""
    from steerlab.scoring.sweep import sweep_ab, sweep_answers

    todo = [(layer, v) for layer in run.layers for v in run.values
            if not store.store.done(run.id_cell(data, layer, v))]
    if not todo:
        return
    test = load_dataset(data, split="test", seed=run.seed)
    if run.id_format == "open":
        test = test.open_answers()
    if run.id_items:
        test = test.subset(run.id_items, run.seed)
    layers = sorted({layer for layer, _ in todo})
    console.print(f"in distribution: {data} ({run.id_format} format), {len(test)} test items "
                  f"(limit {run.id_items or 'all'})")
    sweep = sweep_answers if run.id_format == "open" else sweep_ab
    with stopwatch() as took:
        results = sweep(run.lm, test, run.vector, layers, run.values, unit=run.unit,
                        batch_size=run.batch_size, progress=True)
    for layer, value in todo:
        res = results[(layer, value)]
        low, high = res.ci95
        prop = stats.mean_ci(list(res.propensities))
        base = {**run.fields(layer, value), "data": data, "split": "test", "n": res.n,
                "seconds": took[0] / len(todo)}
        store.add(run.id_cell(data, layer, value), [
            make_record("behaviour_score", res.mean, ci=(low, high), scores=list(res.scores),
                        **base),
            make_record("propensity", prop[0], ci=(prop[1], prop[2]), **base)])


# ---------------------------------------------------------------------------------------------
# Effects, table, plot


def _scores(store: EvalRun, cell: str, metric: str) -> list[float] | None:
    found = store.records(cell=cell, metric=metric)
    return list(found[0]["extra"]["scores"]) if found else None


def _effect(group: str, kind: str, layer: int, value: float, at: list[float],
            zero: list[float]) -> Effect:
    span = 1.0 if kind == "id" else JUDGE_SPAN
    mean, low, high = paired_ci(at, zero, bounds=(-span, span))
    clean = [z for z in zero if not math.isnan(z)]
    baseline = sum(clean) / len(clean) if clean else math.nan
    return Effect(group, kind, layer, value, mean, low, high, len(at), baseline,
                  1.0 if kind == "id" else 1.0 / JUDGE_SPAN)


def compute_effects(run: OODRun, sets: Sequence[OODSet], id_data: str | None,
                    store: EvalRun) -> list[Effect]:
    """ID and OOD effects (value vs 0) of every layer and non-zero value, from the store.

    OOD effects per format × length and pooled per format (``"open-ended/all"``).
    """
    out: list[Effect] = []
    for layer in run.layers:
        for value in [v for v in run.values if v != 0.0]:
            if id_data is not None:
                at = _scores(store, run.id_cell(id_data, layer, value), "behaviour_score")
                zero = _scores(store, run.id_cell(id_data, layer, 0.0), "behaviour_score")
                if at is not None and zero is not None:
                    out.append(_effect(f"ID {id_data}", "id", layer, value, at, zero))
            pooled: dict[str, tuple[list[float], list[float]]] = {}
            for ood in sets:
                at = _scores(store, run.ood_cell(ood, layer, value), "judge_score")
                zero = _scores(store, run.ood_cell(ood, layer, 0.0), "judge_score")
                if at is None or zero is None:
                    continue
                out.append(_effect(f"OOD {ood.group}", "ood", layer, value, at, zero))
                acc = pooled.setdefault(ood.format, ([], []))
                acc[0].extend(at)
                acc[1].extend(zero)
            for form, (at, zero) in pooled.items():
                if len({s.length for s in sets if s.format == form}) > 1:
                    out.append(_effect(f"OOD {form}/all", "ood", layer, value, at, zero))
    return out


def store_effects(run: OODRun, effects: Sequence[Effect], store: EvalRun) -> None:
    """One ``metric="effect"`` record per effect (skipped when already stored)."""
    for e in effects:
        if store.store.done(run.effect_cell(e)):
            continue
        record = make_record("effect", e.mean, ci=(e.low, e.high), n=e.n,
                             split="test" if e.kind == "id" else "ood",
                             **run.fields(e.layer, e.value), group=e.group, kind=e.kind,
                             baseline=e.baseline, scale=e.scale, judge=run.judge.name)
        store.add(run.effect_cell(e), [record])


def _label(run: OODRun, effect: Effect) -> str:
    return effect.group if len(run.layers) == 1 else f"L{effect.layer} {effect.group}"


def print_effects(run: OODRun, effects: Sequence[Effect]) -> None:
    """One table: a row per group, the baseline at 0 and the effect at each value."""
    values = [v for v in run.values if v != 0.0]
    rows: dict[str, list[Any]] = {}
    for e in effects:
        row = rows.setdefault(_label(run, e), [_label(run, e),
                                               "Δp" if e.kind == "id" else "Δjudge (1..10)",
                                               e.n, fmt(e.baseline, 3 if e.kind == "id" else 2),
                                               *["–"] * len(values)])
        digits = 3 if e.kind == "id" else 2
        row[4 + values.index(e.value)] = fmt_ci(e.mean, e.low, e.high, digits, n=e.n)
    short = "c" if run.unit == "coefficient" else "s"
    print_table(
        f"{run.trait}: effect vs {short}=0, vector layer {','.join(map(str, run.layers))}, "
        f"judge {run.judge.name}",
        ["group", "unit", "n", f"at {short}=0", *[f"{short}={v:+g}" for v in values]],
        list(rows.values()),
        caption="paired differences vs the unsteered model, 95 % Student-t intervals over "
                "items (clipped to the possible range); n = items")


def plot_effects(run: OODRun, effects: Sequence[Effect], path: Path) -> None:
    """Two panels, each in its own unit: ID Δp (behaviour score) and OOD Δjudge (1..10)."""
    short = "c" if run.unit == "coefficient" else "s"
    panels = []
    for kind, ylabel, ylim in (("id", "Δ behaviour score (ID, A/B test items)", (-1.0, 1.0)),
                               ("ood", "Δ judge score (OOD, 1..10 scale)", (-9.0, 9.0))):
        chosen = [e for e in effects if e.kind == kind]
        if not chosen:
            continue
        groups = list(dict.fromkeys(_label(run, e).removeprefix("ID ").removeprefix("OOD ")
                                    for e in chosen))
        series: dict[str, Band] = {}
        for value in [v for v in run.values if v != 0.0]:
            by_group = {_label(run, e).removeprefix("ID ").removeprefix("OOD "): e
                        for e in chosen if e.value == value}
            picked = [by_group.get(g) for g in groups]
            series[f"{short}={value:+g}"] = ([e.mean if e else math.nan for e in picked],
                                             [e.low if e else math.nan for e in picked],
                                             [e.high if e else math.nan for e in picked])
        n = max(e.n for e in chosen)
        panels.append(Bars(f"{'in' if kind == 'id' else 'out of'} distribution (n ≤ {n})",
                           ylabel, groups, series, ylim))
    save_png(path, panels, title=f"{run.lm.model_id}, {run.trait}: effect vs unsteered at "
                                 f"layer {','.join(map(str, run.layers))}",
             note="error bars: 95 % Student-t interval over items (paired)")


# ---------------------------------------------------------------------------------------------
# Putting it together


def run(cfg: OODConfig) -> list[Effect]:
    """Answer the AEP prompts steered, judge them, compare with the ID effect; resumable."""
    sets = load_ood(cfg.trait, cfg.formats, cfg.lengths)
    split_judge_spec(cfg.judge)
    id_data = default_id_data(cfg.trait) if cfg.id_data is None else (
        None if cfg.id_data.strip().lower() == "none" else cfg.id_data.strip())
    if cfg.id_data is None and id_data is None:
        console.print(f"no A/B data named {cfg.trait!r} (mwe: or caa:); skipping the ID "
                      "comparison (give --id-data)")
    if cfg.id_format not in ("ab", "open"):
        raise SteerlabError(f"--format: expected ab or open, got {cfg.id_format!r}")
    if id_data is not None:
        test = load_dataset(id_data, split="test", seed=cfg.seed)  # fail early on a bad spec
        if cfg.id_format == "open" and not test.open_answers().items:
            raise SteerlabError(f"{id_data}: no item has options that parse into open answers "
                                "(persona Yes/No data): use --format ab")
    study = EvalRun(cfg.out, "ood", cfg.settings())
    lm = load_model(cfg.model)
    vec = SteeringVector.load(cfg.vector, model=lm)
    vector_id = file_sha256(cfg.vector)
    study.update({"model_revision": lm.revision, "vector_sha256": vector_id})
    if cfg.layers is None and len(vec.layers) != 1:
        raise SteerlabError(f"{cfg.vector}: the vector has layers {vec.layers}; choose with "
                            "--layers")
    layers = vec.layers if cfg.layers is None else resolve_layers(cfg.layers, lm.n_layers)
    missing = [k for k in layers if k not in vec.layers]
    if missing:
        raise SteerlabError(f"{cfg.vector}: no direction for layer(s) {missing}; it has "
                            f"{vec.layers}")
    from steerlab.eval.behaviour import explain_values

    values = list(dict.fromkeys([0.0, *(float(v) for v in cfg.values)]))
    explain_values(vec, layers, cfg.unit, values)
    judge = parse_judge(cfg.judge, {cfg.model: lm})
    ood_run = OODRun(lm, vec, vector_id, cfg.trait, judge, layers, values, cfg.unit,
                     cfg.limit, cfg.seed, cfg.max_new_tokens, cfg.batch_size, cfg.id_format,
                     cfg.id_limit)
    if id_data is not None:
        measure_id_cells(ood_run, id_data, study)
    cells = {ood_run.ood_cell(*c): c for c in
             [(ood, layer, value) for ood in sets for layer in layers for value in values]}
    todo = study.todo(list(cells))
    with bar(len(todo), f"ood: {len(cells)} cells (prompt set × layer × value)",
             unit="cell") as progress:
        for cell in todo:
            ood, layer, value = cells[cell]
            progress.set_postfix_str(f"{ood.group} L{layer} {value:+g}")
            measure_ood_cell(ood_run, ood, layer, value, study)
            progress.update(1)
    effects = compute_effects(ood_run, sets, id_data, study)
    store_effects(ood_run, effects, study)
    print_effects(ood_run, effects)
    plot = study.path("ood_effects.png")
    if effects:
        plot_effects(ood_run, effects, plot)
    study.finish([plot] if effects else [])
    return effects
