"""Layer × strength sweep: choose on validation, report on test (CAE finding 1: the layer).

The vector is extracted from the train split (or given). Every layer × value is scored on the
val split by the sweep engine, a chunk of layers per resumable cell. The layer with the
largest val effect is the choice — reported as such only when its interval lies above zero
— and only that layer is then scored on the test split. Nothing is chosen on test.

Example:
    >>> run(SweepConfig(out="runs/r", data="caa:refusal", unit="strength",
    ...                 values=[-0.4, 0.0, 0.4], layers="6-22:4"))           # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval import behaviour as bh
from steerlab.eval.configs.sweep import SweepConfig
from steerlab.eval.figures import Curves, Heat, Line, save_png
from steerlab.eval.run import (
    Choice,
    EvalRun,
    choose_best,
    file_sha256,
)
from steerlab.eval.tables import console, fmt, fmt_ci, print_table
from steerlab.model.load import LoadedModel, load_model
from steerlab.steering.spec import parse_positions
from steerlab.util.parse import resolve_layers
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector


@dataclass
class SweepResult:
    """The val grid (layer → value → score), the choice, and the test scores at that layer."""

    layers: list[int]
    values: list[float]
    val: dict[int, dict[float, float]]
    effects: dict[int, tuple[float, float, float]]
    choice: Choice
    tested_layer: int | None
    test: dict[float, tuple[float, float, float, int]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"sweep over layers {self.layers} × values {self.values}: {self.choice.reason}"]
        for value, (mean, low, high, n) in self.test.items():
            lines.append(f"  test, layer {self.tested_layer}, {value:+g}: "
                         f"{fmt_ci(mean, low, high, n=n)} (n={n})")
        return "\n".join(lines)


def vector_for(run: EvalRun, lm: LoadedModel, path: Path | None, train: Any, method: str,
               layers: list[int], batch_size: int, name: str = "vector.safetensors"
               ) -> SteeringVector:
    """The given vector (its sha256 joins the run settings) or one extracted into the run."""
    if path is not None:
        run.update({"vector_sha256": file_sha256(path)})
        return bh.given_vector(lm, path, layers)
    return bh.cached_vector(lm, run.path(name), train, method, layers, batch_size)


def run(cfg: SweepConfig) -> SweepResult:
    """Measure every missing cell of ``cfg`` into ``cfg.out``, print the tables, draw plots."""
    parse_positions(cfg.positions)
    if len(cfg.values) < 2:
        raise SteerlabError(f"--{cfg.unit}s: a sweep needs at least two values to measure an "
                            "effect")
    splits = bh.load_splits(cfg.data, cfg.seed, cfg.train_limit, cfg.form)
    data = bh.data_label(cfg.data, cfg.form)
    sweep_run = EvalRun(cfg.out, "sweep", cfg.settings())
    sweep_run.update({"data_sha256": splits["test"].sha256[:16]})
    lm = load_model(cfg.model)
    sweep_run.update({"model_revision": lm.revision})
    layers = resolve_layers(cfg.layers, lm.n_layers)
    vec = vector_for(sweep_run, lm, cfg.vector, splits["train"], cfg.method, layers,
                     cfg.batch_size)
    bh.explain_values(vec, layers, cfg.unit, cfg.values)
    fields = {"model": cfg.model, "data": data, "method": vec.method, "site": vec.site,
              "seed": cfg.seed, "n_pairs": vec.manifest.get("dataset", {}).get("n_pairs")}
    seqs = {s: bh.sequences(lm, splits[s], cfg.limit, cfg.seed, cfg.form) for s in ("val", "test")}
    console.print(f"{data}: {len(splits['train'])} train pairs, "
                  f"{_items(seqs['val'], cfg.form)} val and {_items(seqs['test'], cfg.form)} test "
                  f"items{' (--limit ' + str(cfg.limit) + ')' if cfg.limit else ''}")
    bh.score_grid(sweep_run, lm, seqs["val"], vec, layers, cfg.values, unit=cfg.unit,
                  split="val", positions=cfg.positions, batch_size=cfg.batch_size, fields=fields)
    match = {"model": cfg.model, "data": data, "seed": cfg.seed}
    effects = {k: bh.effect_triple(bh.stored(sweep_run, "effect", split="val", layer=k, **match))
               for k in layers}
    choice = choose_best(effects)
    tested = choice.layer if choice.chosen else _largest(effects)
    if tested is not None:
        bh.score_grid(sweep_run, lm, seqs["test"], vec, [tested], cfg.values, unit=cfg.unit,
                      split="test", positions=cfg.positions, batch_size=cfg.batch_size,
                      fields=fields)
    result = _result(sweep_run, layers, cfg, effects, choice, tested, match)
    if choice.chosen and cfg.vector is None:  # the run's own vector learns its best layer
        vec.manifest["recommended"] = {
            "layer": choice.layer, cfg.unit: max(cfg.values), "val_effect": choice.effect,
            "chosen_by": f"eval sweep on {data} val ({cfg.form} format)"}
        vec.save(sweep_run.path("vector.safetensors"))
    _report(result, cfg, lm.n_layers)
    plots = _plots(sweep_run, result, cfg, data)
    sweep_run.finish(plots)
    return result


def _items(seqs: list[Any], form: str) -> int:
    return len(seqs) // 2 if form == "open" else len(seqs)


def _largest(effects: dict[int, tuple[float, float, float]]) -> int | None:
    finite = [k for k, v in effects.items() if not math.isnan(v[0])]
    return max(finite, key=lambda k: effects[k][0]) if finite else None


def _score(run: EvalRun, split: str, layer: int, value: float, unit: Unit,
           match: dict[str, Any]) -> dict[str, Any] | None:
    return bh.stored(run, "score", split=split, layer=layer, **{unit: value}, **match)


def _result(run: EvalRun, layers: list[int], cfg: SweepConfig,
            effects: dict[int, tuple[float, float, float]], choice: Choice, tested: int | None,
            match: dict[str, Any]) -> SweepResult:
    val = {k: {v: bh.effect_triple(_score(run, "val", k, v, cfg.unit, match))[0]
               for v in cfg.values} for k in layers}
    test: dict[float, tuple[float, float, float, int]] = {}
    if tested is not None:
        for v in cfg.values:
            rec = _score(run, "test", tested, v, cfg.unit, match)
            if rec is not None:
                test[v] = (*bh.effect_triple(rec), int(rec["n"]))
    return SweepResult(layers, list(cfg.values), val, effects, choice, tested, test)


def _report(result: SweepResult, cfg: SweepConfig, n_layers: int) -> None:
    rows = []
    for k in result.layers:
        eff = result.effects[k]
        rows.append([("*" if k == result.choice.layer else "") + str(k),
                     *(fmt(result.val[k][v]) for v in result.values),
                     fmt_ci(*eff)])
    print_table(f"val behaviour score by layer × {cfg.unit} (* = chosen; model has "
                f"{n_layers} layers)",
                ["layer", *(f"{v:g}" for v in result.values), "effect [95% CI]"], rows,
                caption=bh.INTERVALS)
    console.print(result.choice.reason)
    if result.tested_layer is None:
        return
    label = "chosen" if result.choice.chosen else "largest val effect (not significant)"
    test_rows = [[f"{v:g}", fmt_ci(m, lo, hi, n=n), str(n)]
                 for v, (m, lo, hi, n) in result.test.items()]
    print_table(f"test split at layer {result.tested_layer} ({label})",
                [cfg.unit, "score [95% CI]", "n"], test_rows, caption=bh.INTERVALS)


def _plots(run: EvalRun, result: SweepResult, cfg: SweepConfig, data: str) -> list[Path]:
    heat = run.path("sweep_heatmap.png")
    grid = [[result.val[k][v] for v in result.values] for k in result.layers]
    n_val = next((r["n"] for r in run.records(metric="score", split="val")), None)
    save_png(heat, [Heat(f"{data} on {cfg.model}: val behaviour score (n={n_val} items per "
                         "cell)", grid, [str(k) for k in result.layers],
                         [f"{v:g}" for v in result.values], xlabel=cfg.unit, ylabel="layer",
                         cbar="behaviour score", center=0.5, annotate=True)])
    plots = [heat]
    if result.test:
        curve = run.path("sweep_test.png")
        values = list(result.test)
        label = (f"test, layer {result.tested_layer}" +
                 ("" if result.choice.chosen else " (val effect not significant)"))
        n_test = next(iter(result.test.values()))[3]
        line = Line(label, values, [result.test[v][0] for v in values],
                    [result.test[v][1] for v in values], [result.test[v][2] for v in values])
        save_png(curve, [Curves(f"{data} on {cfg.model}: chosen on val, scored on test "
                                f"(n={n_test})", cfg.unit, "behaviour score", [line],
                                hline=0.5)], note="shaded: 95 % t interval over items")
        plots.append(curve)
    return plots
