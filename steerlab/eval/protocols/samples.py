"""How many contrast pairs a vector needs (CAE finding 2: returns diminish near ~80 pairs).

For each n and each of ``seeds`` random draws, a vector is extracted from n train pairs at one
layer and scored on the evaluation split by the sweep engine. Per (n, draw): the vector's
``cosine`` to the full-train vector, ``score`` per value and the paired ``effect``. Per n the
summary is the mean over draws with a 95 % Student-t interval over draws. The **plateau** (the
smallest n that no larger n beats by more than the larger n's interval half-width) is reported
only when the full-data effect is distinguishable from zero — a curve of nulls has nothing to
saturate.

Example:
    >>> run(SamplesConfig(out="runs/n", data="caa:refusal", layer=14, unit="strength",
    ...                   values=[-0.4, 0.4], sizes=[1, 10, 80]))             # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval import behaviour as bh
from steerlab.eval.configs.samples import SamplesConfig
from steerlab.eval.figures import Curves, band_lines, save_png
from steerlab.eval.run import EvalRun, stopwatch
from steerlab.eval.store import cell_id, make_record
from steerlab.eval.tables import console, fmt_ci, print_table
from steerlab.model.load import load_model
from steerlab.util import stats
from steerlab.util.progress import bar
from steerlab.vector import cosine

Summary = dict[int, tuple[float, float, float, int]]
SHARED = 8  # vectors scored per engine call: they share each batch's unsteered pass


@dataclass
class SamplesResult:
    """Per pair count: effect and cosine (mean, low, high, draws); the plateau or why none."""

    sizes: list[int]
    effects: Summary
    cosines: Summary
    full_effect: tuple[float, float, float]
    plateau: int | None
    verdict: str

    def __str__(self) -> str:
        rows = [f"  n={k}: effect {fmt_ci(*self.effects[k][:3])}, cosine "
                f"{fmt_ci(*self.cosines[k][:3])}" for k in self.sizes]
        return "\n".join([f"sample-count curve: {self.verdict}", *rows])


def summarize(run: EvalRun, sizes: Sequence[int], metric: str, **match: Any) -> Summary:
    """Per n: mean over draws of ``metric`` with a 95 % interval over draws, and #draws.

    Example:
        >>> import tempfile
        >>> r = EvalRun(tempfile.mkdtemp(), "samples", {})
        >>> for s, v in enumerate([0.1, 0.3]):
        ...     r.add(f"c{s}", [make_record("effect", v, n_pairs=5, seed=s)])
        >>> m, lo, hi, k = summarize(r, [5], "effect")[5]
        >>> round(m, 3), k
        (0.2, 2)
    """
    bounds = (-1.0, 1.0)
    out = {}
    for n in sizes:
        values = [r["value"] for r in run.records(metric=metric, n_pairs=n, **match)
                  if r["value"] is not None]
        mean, low, high = stats.mean_ci(values, bounds=bounds)
        out[n] = (mean, low, high, len(values))
    return out


def run(cfg: SamplesConfig) -> SamplesResult:
    """Measure every missing (n, draw) cell, print the curve and the plateau, draw plots."""
    if cfg.seeds < 1:
        raise SteerlabError(f"--seeds must be at least 1, got {cfg.seeds}")
    if cfg.split not in ("val", "test"):
        raise SteerlabError(f"--split must be val or test, got {cfg.split!r}")
    values = [float(v) for v in cfg.values]
    if len(values) < 2:
        raise SteerlabError(f"--{cfg.unit}s: need at least two values to measure an effect")
    splits = bh.load_splits(cfg.data, cfg.seed, cfg.train_limit, cfg.form)
    train, evaluation = splits["train"], splits[cfg.split]
    data = bh.data_label(cfg.data, cfg.form)
    sizes = sorted(set(cfg.sizes))
    too_big = [k for k in sizes if k > len(train)]
    if too_big:
        raise SteerlabError(f"--n {too_big} exceed the {len(train)} train pairs of {data}")
    samples = EvalRun(cfg.out, "samples", cfg.settings())
    samples.update({"data_sha256": train.sha256[:16]})
    lm = load_model(cfg.model)
    samples.update({"model_revision": lm.revision})
    if not 0 <= cfg.layer < lm.n_layers:
        raise SteerlabError(f"--layers {cfg.layer} out of range: {cfg.model} has "
                            f"{lm.n_layers} layers")
    full = bh.cached_vector(lm, samples.path(f"full_{cfg.method}_layer{cfg.layer}.safetensors"),
                            train, cfg.method, [cfg.layer], cfg.batch_size)
    bh.explain_values(full, [cfg.layer], cfg.unit, values)
    seqs = bh.sequences(lm, evaluation, cfg.limit, cfg.seed, cfg.form)
    n_items = len(seqs) // 2 if cfg.form == "open" else len(seqs)
    console.print(f"{data}: pools of 1..{len(train)} train pairs, {cfg.seeds} draws each, "
                  f"scored on {n_items} {cfg.split} items")
    _measure(samples, lm, cfg, sizes, values, train, full, seqs, data)
    result = _summarize(samples, cfg, sizes, len(train), data)
    _report(samples, result, cfg, values, n_items, len(train), data)
    return result


class _Share:
    """Moves a bar by ``width`` units over one scoring call, by the share of rows it scored
    (the engine's ``on_rows``), so a long chunk of vectors still shows progress."""

    def __init__(self, progress: Any, width: int):
        self.progress, self.width, self.moved = progress, width, 0.0

    def __call__(self, done: int, total: int) -> None:
        step = self.width * done / total
        self.moved += step
        self.progress.update(step)

    def finish(self) -> None:
        self.progress.update(self.width - self.moved)


def _measure(run: EvalRun, lm: Any, cfg: SamplesConfig, sizes: list[int], values: list[float],
             train: Any, full: Any, seqs: Any, data: str) -> None:
    from steerlab.extraction import extract
    from steerlab.scoring.sweep import SweepEngine

    engine = SweepEngine(lm, batch_size=cfg.batch_size)
    fields = {"model": cfg.model, "data": data, "method": cfg.method, "split": cfg.split,
              "site": full.site}
    cells = {}
    for size, draw in [(k, s) for k in sizes for s in range(cfg.seeds)] + [(len(train), 0)]:
        draw_seed = cfg.seed * 1000 + draw
        cell = cell_id("samples", model=cfg.model, data=data, layer=cfg.layer, n_pairs=size,
                       seed=draw_seed, split=cfg.split, method=cfg.method, unit=cfg.unit,
                       values=",".join(f"{v:g}" for v in values), limit=cfg.limit)
        cells[cell] = (size, draw_seed)
    todo = run.todo(list(cells))
    full_results: dict[Any, Any] = {}
    with bar(len(todo), f"samples: {len(cells)} vectors (pair count × draw)",
             unit="vector") as progress:
        for start in range(0, len(todo), SHARED):
            chunk = todo[start:start + SHARED]
            progress.set_postfix_str(f"n={','.join(str(cells[c][0]) for c in chunk)}")
            advance = _Share(progress, len(chunk))
            with stopwatch() as took:
                vectors = [full if cells[c][0] >= len(train) else
                           extract(lm, train.subset(cells[c][0], cells[c][1]), method=cfg.method,
                                   layers=[cfg.layer], batch_size=cfg.batch_size, progress=False)
                           for c in chunk]
                fresh = [v for v in vectors if v is not full]  # each extracted anew
                if not full_results and any(v is full for v in vectors):
                    fresh.append(full)  # every draw of n >= the pool is it: score it once
                scored = (engine.score_vectors(seqs, fresh, [[cfg.layer]], values,
                                               unit=cfg.unit, on_rows=advance)
                          if fresh else [])
                results_of = {id(v): r for v, r in zip(fresh, scored, strict=True)}
                full_results = full_results or results_of.get(id(full), {})
            seconds = took[0] / len(chunk)  # the chunk's cells share its forwards: its mean
            for cell, vec in zip(chunk, vectors, strict=True):
                size, draw_seed = cells[cell]
                where = {**fields, "n_pairs": size, "seed": draw_seed}
                results = full_results if vec is full else results_of[id(vec)]
                records = bh.cell_records(results, cfg.layer, values, cfg.unit, seconds, **where)
                records.append(make_record(
                    "cosine", cosine(vec.directions[cfg.layer], full.directions[cfg.layer]),
                    layer=cfg.layer, n=1, seconds=seconds, **where))
                run.add(cell, records)
            advance.finish()


def _summarize(run: EvalRun, cfg: SamplesConfig, sizes: list[int], n_train: int,
               data: str) -> SamplesResult:
    match = {"model": cfg.model, "data": data, "layer": cfg.layer, "split": cfg.split}
    effects = summarize(run, sizes, "effect", **match)
    cosines = summarize(run, sizes, "cosine", **match)
    full = bh.effect_triple(bh.stored(run, "effect", n_pairs=n_train, **match))
    if math.isnan(full[1]) or full[1] <= 0.0:
        verdict = (f"no plateau: the full-data effect {fmt_ci(*full)} is not distinguishable "
                   "from zero, so there is nothing to saturate")
        return SamplesResult(sizes, effects, cosines, full, None, verdict)
    half = [(e[2] - e[0]) if not math.isnan(e[2]) else math.inf for e in effects.values()]
    settled = stats.plateau(sizes, [effects[k][0] for k in sizes], half)
    verdict = (f"plateau at {settled} pairs (no larger count beats it by more than that "
               "count's interval)" if settled is not None else "no plateau within the counts "
               "tried (the largest count still gains)")
    return SamplesResult(sizes, effects, cosines, full, settled, verdict)


def _band(summary: Summary, sizes: Sequence[int]) -> tuple[list[float], list[float],
                                                           list[float]]:
    return ([summary[k][0] for k in sizes], [summary[k][1] for k in sizes],
            [summary[k][2] for k in sizes])


def _report(run: EvalRun, result: SamplesResult, cfg: SamplesConfig, values: list[float],
            n_items: int, n_train: int, data: str) -> None:
    rows = [[str(k), fmt_ci(*result.cosines[k][:3], n=result.cosines[k][3]),
             fmt_ci(*result.effects[k][:3], n=result.effects[k][3]), str(result.effects[k][3])]
            for k in result.sizes]
    rows.append([f"all {n_train}", "1.000", fmt_ci(*result.full_effect), "1"])
    effect_name = f"score({max(values):g}) − score({min(values):g})"
    print_table(f"{data} at layer {cfg.layer}: effect = {effect_name} on {cfg.split} "
                f"(n={n_items} items)", ["pairs", "cosine to full [95% CI]", "effect [95% CI]",
                                         "draws"], rows,
                caption="mean over draws; 95 % Student-t interval over draws; effect clipped "
                        "to [−1, 1]")
    console.print(result.verdict)
    plots = [run.path("samples_effect.png"), run.path("samples_cosine.png")]
    tag = f"plateau {result.plateau}" if result.plateau is not None else "no plateau"
    note = f"shaded: 95 % t interval over {cfg.seeds} draws"
    save_png(plots[0], [Curves(
        f"{data}, {cfg.model} layer {cfg.layer}: effect vs pairs ({tag}; {n_items} items)",
        "contrast pairs (log scale)", effect_name,
        band_lines(result.sizes, {"effect": _band(result.effects, result.sizes)}), logx=True,
        hline=0)], note=note)
    save_png(plots[1], [Curves(
        f"{data}, {cfg.model} layer {cfg.layer}: agreement with the vector from all "
        f"{n_train} pairs", "contrast pairs (log scale)", "cosine to the full-train vector",
        band_lines(result.sizes, {"cosine": _band(result.cosines, result.sizes)}),
        logx=True)], note=note)
    run.finish(plots)
