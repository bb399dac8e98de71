"""One protocol across model sizes, into one table (CAE finding 5: does size help?).

Per model: a mean-difference vector from the train split at relative depths (fractions of the
layer stack, so models of different depth are compared at the same place), a depth × strength
sweep on val by the sweep engine (strengths are multiples of the residual norm, so one number
is the same push in every model), the layer chosen there (when its effect is distinguishable
from zero; else the largest, marked), then the test split at that layer. Models are loaded
one at a time and freed before the next.

Example:
    >>> run(ModelsConfig(out="runs/size", models=["smollm2-135m", "qwen2.5-coder-0.5b"],
    ...                  data="caa:sycophancy"))                              # doctest: +SKIP
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval import behaviour as bh
from steerlab.eval.configs.models import ModelsConfig
from steerlab.eval.figures import Bars, save_png
from steerlab.eval.run import EvalRun, choose_best
from steerlab.eval.tables import console, fmt_ci, print_table
from steerlab.model.load import load_model
from steerlab.util.parse import parse_values


def depth_layers(depths: str, n_layers: int) -> list[int]:
    """Relative depths (``"0.3,0.5"`` or ``"0.2:0.8:0.2"``) → distinct layer indices.

    Example:
        >>> depth_layers("0.25,0.5,0.75", 30)
        [7, 14, 22]
        >>> depth_layers("0.2:0.6:0.2", 10)
        [2, 4, 5]
    """
    fractions = parse_values(depths, "--depths")
    bad = [f for f in fractions if not 0.0 <= f <= 1.0]
    if bad:
        raise SteerlabError(f"--depths: expected fractions in [0, 1], got {depths!r}")
    layers: list[int] = []
    for fraction in fractions:
        layer = round(fraction * (n_layers - 1))
        if layer not in layers:
            layers.append(layer)
    return layers


@dataclass
class ModelRow:
    """One model's line of the table."""

    model: str
    params_m: float
    n_layers: int
    layer: int | None
    chosen: bool
    val_effect: tuple[float, float, float]
    test_effect: tuple[float, float, float, int]
    cells: list[str] = field(default_factory=list)


def run(cfg: ModelsConfig) -> list[ModelRow]:
    """Measure every model (resumable), print one table, draw one plot."""
    names = [m.strip() for m in cfg.models if m.strip()]
    if not names:
        raise SteerlabError("--models: give at least one model")
    values = [float(v) for v in cfg.values]
    if len(values) < 2:
        raise SteerlabError("--strengths: need at least two values to measure an effect")
    splits = bh.load_splits(cfg.data, cfg.seed, cfg.train_limit, cfg.form)
    data = bh.data_label(cfg.data, cfg.form)
    study = EvalRun(cfg.out, "models", cfg.settings())
    study.update({"data_sha256": splits["test"].sha256[:16]})
    rows = [_one_model(study, name, cfg, splits, values, data) for name in names]
    _report(study, rows, cfg, values, data)
    return rows


def _one_model(study: EvalRun, name: str, cfg: ModelsConfig, splits: dict[str, Any],
               values: list[float], data: str) -> ModelRow:
    console.print(f"[bold]{name}[/bold]")
    lm = load_model(name)
    study.update({f"revision:{name}": lm.revision})
    layers = depth_layers(cfg.depths, lm.n_layers)
    vec = bh.cached_vector(lm, study.path(f"vector_{name.replace('/', '_')}.safetensors"),
                           splits["train"], "mean_diff", layers, cfg.batch_size)
    fields = {"model": name, "data": data, "method": vec.method, "site": vec.site,
              "seed": cfg.seed, "n_pairs": vec.manifest.get("dataset", {}).get("n_pairs")}
    seqs = {s: bh.sequences(lm, splits[s], cfg.limit, cfg.seed, cfg.form) for s in ("val", "test")}
    bh.score_grid(study, lm, seqs["val"], vec, layers, values, unit="strength", split="val",
                  positions="all", batch_size=cfg.batch_size, fields=fields)
    match = {"model": name, "data": data, "seed": cfg.seed}
    effects = {k: bh.effect_triple(bh.stored(study, "effect", split="val", layer=k, **match))
               for k in layers}
    choice = choose_best(effects)
    finite = [k for k in layers if not math.isnan(effects[k][0])]
    best = choice.layer if choice.chosen else (max(finite, key=lambda k: effects[k][0])
                                               if finite else None)
    params = sum(p.numel() for p in lm.model.parameters()) / 1e6
    row = ModelRow(name, params, lm.n_layers, best, choice.chosen,
                   effects.get(best, (math.nan,) * 3) if best is not None else (math.nan,) * 3,
                   (math.nan, math.nan, math.nan, 0))
    if best is not None:
        bh.score_grid(study, lm, seqs["test"], vec, [best], values, unit="strength",
                      split="test", positions="all", batch_size=cfg.batch_size, fields=fields)
        eff = bh.stored(study, "effect", split="test", layer=best, **match)
        row.test_effect = (*bh.effect_triple(eff), int(eff["n"]) if eff else 0)
    del lm, vec
    gc.collect()
    return row


def _report(study: EvalRun, rows: list[ModelRow], cfg: ModelsConfig, values: list[float],
            data: str) -> None:
    table = []
    for r in rows:
        depth = "" if r.layer is None else f"{r.layer} ({r.layer / max(1, r.n_layers - 1):.2f})"
        mark = "" if r.chosen else " (n.s.)"
        table.append([r.model, f"{r.params_m:.0f}M", str(r.n_layers), depth + mark,
                      fmt_ci(*r.val_effect), fmt_ci(*r.test_effect[:3], n=r.test_effect[3]),
                      str(r.test_effect[3])])
    print_table(f"{data}: one protocol across models (strengths {','.join(map(str, values))}; "
                "layer chosen on val, reported on test)",
                ["model", "params", "layers", "layer (depth)", "val effect [95% CI]",
                 "test effect [95% CI]", "n test"], table,
                caption=f"effect = score({max(values):g}) − score({min(values):g}); "
                        f"{bh.INTERVALS}; n.s. = val effect not distinguishable from zero")
    plot = study.path("models_effect.png")
    save_png(plot, [Bars(f"{data}: steering effect by model (layer chosen on val)",
                         f"score({max(values):g}) − score({min(values):g}) on test",
                         [r.model for r in rows],
                         {"test effect": ([r.test_effect[0] for r in rows],
                                          [r.test_effect[1] for r in rows],
                                          [r.test_effect[2] for r in rows])}, (-1.0, 1.0))],
             note=f"error bars: {bh.INTERVALS.replace('items', 'test items')}")
    study.finish([plot])
