"""``steerlab eval models``: the same protocol over several models, into one table (CAE 5).

Per model: a mean-difference vector from the train split at the relative depths ``--depths``
(fractions of the layer stack, so models of different depth are compared at the same place),
a depth × strength sweep on val by the sweep engine, the layer chosen there, then the test
split at that layer. Strengths are multiples of the residual-stream norm at the layer, which
makes one number mean the same push in every model. One row per model: size, the chosen layer
and its relative depth, the val effect, the test scores and paired test effect with 95 %
intervals, steerability and the anti-steerable fraction.

Example:
    $ steerlab eval models --models smollm2-135m,qwen2.5-coder-0.5b --data caa:sycophancy \\
          --out runs/size
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import typer

from steerlab.errors import SteerlabError
from steerlab.eval.common import BATCH, LIMIT, OUT, SEED, check_limit, done_line, fmt, fmt_ci
from steerlab.eval.store import ResultStore


def depth_layers(depths: str, n_layers: int) -> list[int]:
    """Relative depths (``"0.3,0.5"`` or ``"0.2-0.8:0.2"``) → distinct layer indices.

    Example:
        >>> depth_layers("0.25,0.5,0.75", 30)
        [7, 14, 22]
        >>> depth_layers("0.2-0.6:0.2", 10)
        [2, 4, 5]
    """
    from steerlab.util.parse import parse_values

    text = depths.replace("-", ":", 1) if depths.count("-") == 1 and ":" in depths else depths
    fractions = parse_values(text)
    bad = [f for f in fractions if not 0.0 <= f <= 1.0]
    if bad or not fractions:
        raise SteerlabError(f"--depths: expected fractions in [0, 1], got {depths!r}")
    layers: list[int] = []
    for fraction in fractions:
        layer = round(fraction * (n_layers - 1))
        if layer not in layers:
            layers.append(layer)
    return layers


def command(
    models: str = typer.Option(..., "--models", help="Comma-separated aliases / ids."),
    data: str = typer.Option(..., "--data", help="caa:NAME, mwe:NAME, builtin:NAME or a file."),
    depths: str = typer.Option("0.3,0.4,0.5,0.6,0.7", "--depths",
                               help="Relative depths to sweep, e.g. 0.3,0.5 or 0.2-0.8:0.1."),
    strengths: str = typer.Option("-0.5,0,0.5", "--strengths",
                                  help="Multiples of the residual norm at the layer."),
    train_limit: int = typer.Option(0, "--train-limit",
                                    help="Extract from at most N train pairs (0 = all)."),
    form: str = typer.Option("ab", "--format", help="ab (letter score) or open (whole "
                             "answers; see eval sweep)."),
    out: Path = OUT, limit: int = LIMIT, seed: int = SEED, batch_size: int = BATCH,
) -> None:
    """Compare steerability across model sizes with one protocol (layer chosen per model on val)."""
    import steerlab
    from steerlab.eval.plots import save_bars
    from steerlab.eval.sweep import (
        cached_vector,
        data_label,
        effect,
        load_splits,
        run_grid,
        to_sequences,
    )
    from steerlab.util.parse import parse_values

    check_limit(limit)
    check_limit(train_limit)
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise SteerlabError("--models: give at least one model")
    values = parse_values(strengths)
    if len(values) < 2:
        raise SteerlabError("--strengths: need at least two values to measure an effect")
    splits = load_splits(data, seed, train_limit, form)
    data = data_label(data, form)
    store = ResultStore(out)
    rows = []
    for name in names:
        lm = steerlab.load_model(name)
        layers = depth_layers(depths, lm.n_layers)
        vec_path = out / f"vector_{name.replace('/', '_')}.safetensors"
        vec = cached_vector(lm, vec_path, splits["train"], "mean_diff", layers, batch_size)
        fields = {"command": "models", "model": name, "data": data, "method": vec.method,
                  "site": vec.site, "seed": seed,
              "n_pairs": vec.manifest.get("dataset", {}).get("n_pairs")}
        seqs = {s: to_sequences(lm, splits[s], limit, seed, form) for s in ("val", "test")}
        run_grid(lm, store, seqs["val"], vec, layers, values, unit="strength", split="val",
                 positions="all", batch_size=batch_size, fields=fields)
        match = {"model": name, "data": data, "seed": seed, "command": "models"}
        effects = {k: effect(store, "val", k, **match) for k in layers}
        best = max(layers, key=lambda k: -math.inf if math.isnan(effects[k]) else effects[k])
        run_grid(lm, store, seqs["test"], vec, [best], values, unit="strength", split="test",
                 positions="all", batch_size=batch_size, fields=fields)
        rows.append(_row(store, name, lm, best, effects[best], values, match))
        del lm, vec
        gc.collect()
    from steerlab.eval.common import print_table

    print_table(f"{data}: one protocol across models (strengths {strengths}; layer chosen on "
                "val, reported on test)",
                ["model", "params", "layers", "chosen (depth)", "val effect",
                 *(f"test @{v:g}" for v in (min(values), max(values))),
                 "test effect [95% CI]", "steerability", "anti-steer"],
                [r["cells"] for r in rows])
    plot = out / "models_effect.png"
    save_bars(plot, [r["model"] for r in rows],
              {"test effect": ([r["effect"][0] for r in rows], [r["effect"][1] for r in rows],
                               [r["effect"][2] for r in rows])},
              ylabel=f"score({max(values):g}) − score({min(values):g})",
              title=f"{data}: steering effect by model")
    done_line(out, [plot])


def _row(store: ResultStore, name: str, lm: Any, best: int, val_effect: float,
         values: list[float], match: dict[str, Any]) -> dict[str, Any]:
    def last(metric: str, **extra: Any) -> dict[str, Any]:
        return store.records(metric=metric, split="test", layer=best, **match, **extra)[-1]

    params = sum(p.numel() for p in lm.model.parameters()) / 1e6
    low, high = last("score", strength=min(values)), last("score", strength=max(values))
    eff = last("effect")
    depth = best / max(1, lm.n_layers - 1)
    return {"model": name, "effect": (eff["value"], eff["ci_low"] if eff["ci_low"] is not None
                                      else math.nan,
                                      eff["ci_high"] if eff["ci_high"] is not None else math.nan),
            "cells": [name, f"{params:.0f}M", str(lm.n_layers), f"{best} ({depth:.2f})",
                      fmt(val_effect), fmt(low["value"]), fmt(high["value"]),
                      fmt_ci(eff["value"], eff["ci_low"], eff["ci_high"]),
                      fmt(last("steerability")["value"]),
                      fmt(last("anti_steerable")["value"], 2)]}
