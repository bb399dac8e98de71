"""``steerlab eval sweep``: layer × coefficient grid on validation, the choice reported on test.

The vector is extracted from the train split (or given with ``--vector``); every layer's
coefficients are scored on the val split by the sweep engine (prefix reuse + per-row
coefficients); the layer with the largest val effect (score at the largest coefficient minus
score at the smallest) is chosen there and only then scored on the test split. Records per
(split, layer, coefficient): ``score`` (CAA behaviour score, 95 % interval), ``propensity``;
per (split, layer): ``effect`` (score at the largest value minus at the smallest, paired 95 %
interval over items), ``steerability`` (mean per-item slope of propensity vs coefficient, 95 %
interval over items) and ``anti_steerable`` (share of items with a negative slope, Wilson).

Example:
    $ steerlab eval sweep --data caa:refusal --layers 6-22:4 --coefficients=-2:2:1 --out runs/r
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from steerlab.errors import SteerlabError
from steerlab.eval.common import (
    BATCH,
    LIMIT,
    MODEL,
    OUT,
    SEED,
    cell_id,
    check_limit,
    done_line,
    fmt,
    fmt_ci,
    print_table,
    stopwatch,
)
from steerlab.eval.store import ResultStore, make_record
from steerlab.util.parse import resolve_layers

LAYERS_PER_PASS = 4  # layers scored per engine pass (one resumable cell)

FORMATS = ("ab", "open")
FORMAT = typer.Option("ab", "--format",
                      help="ab: CAA letter score; open: whole-answer score (option texts as "
                           "replies; what small models show), vector read at the answer's end.")


def layer_chunks(layers: Sequence[int], size: int = LAYERS_PER_PASS) -> list[list[int]]:
    """Deterministic chunks of the sorted layer list (the resumable cells of a sweep).

    Example:
        >>> layer_chunks([9, 1, 5, 3, 7], 2)
        [[1, 3], [5, 7], [9]]
    """
    ordered = sorted(layers)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def cell_records(results: dict[tuple[Any, float], Any], layer: int, values: Sequence[float],
                 unit: str, seconds: float, **fields: Any) -> list[dict[str, Any]]:
    """Tidy records of one layer's results: score/propensity per value, steerability.

    Example:
        >>> from steerlab.scoring.ab import ABResult
        >>> res = {(3, -1.0): ABResult((0.2, 0.4), (-1.0, 0.0), (0.2, 0.4), (0.8, 0.6)),
        ...        (3, 1.0): ABResult((0.6, 0.4), (1.0, -0.5), (0.6, 0.4), (0.4, 0.6))}
        >>> recs = cell_records(res, 3, [-1.0, 1.0], "coefficient", 1.0)
        >>> [(r["metric"], r["value"]) for r in recs if r["metric"] != "score"][-2:]
        [('steerability', 0.375), ('anti_steerable', 0.5)]
    """
    from steerlab.util.stats import mean_ci, steerability, wilson

    records = []
    for value in values:
        res = results[(layer, float(value))]
        where = {**fields, "layer": layer, unit: float(value), "n": res.n, "seconds": seconds}
        records.append(make_record("score", res.mean, ci=res.ci95, **where))
        mean, low, high = mean_ci(list(res.propensities))
        records.append(make_record("propensity", mean, ci=(low, high), **where))
    if len(values) >= 2:
        low_v, high_v = float(min(values)), float(max(values))
        diffs = [a - b for a, b in zip(results[(layer, high_v)].scores,
                                       results[(layer, low_v)].scores, strict=True)]
        mean, low, high = mean_ci(diffs)
        records.append(make_record("effect", mean, ci=(low, high), **{
            **fields, "layer": layer, "n": len(diffs), "seconds": seconds, "unit": unit,
            "low_value": low_v, "high_value": high_v}))
        props = [list(results[(layer, float(v))].propensities) for v in values]
        slopes, mean_slope, anti = steerability([float(v) for v in values], props)
        finite = [s for s in slopes if not math.isnan(s)]
        _, low, high = mean_ci(finite)
        where = {**fields, "layer": layer, "n": len(finite), "seconds": seconds,
                 "unit": unit}
        records.append(make_record("steerability", mean_slope, ci=(low, high), **where))
        n_anti = sum(s < 0 for s in finite)
        _, a_low, a_high = wilson(n_anti, len(finite))
        records.append(make_record("anti_steerable", anti, ci=(a_low, a_high), **where))
    return records


def effect(store: ResultStore, split: str, layer: int, **match: Any) -> float:
    """Stored effect (score at the largest value minus at the smallest) of one layer."""
    found = store.records(metric="effect", split=split, layer=layer, **match)
    return float(found[-1]["value"]) if found else math.nan


def run_grid(lm: Any, store: ResultStore, seqs: Sequence[Any], vector: Any, layers: Sequence[int],
             values: Sequence[float], *, unit: str, split: str, positions: str,
             batch_size: int, fields: dict[str, Any], progress: bool = True) -> None:
    """Score ``layers`` × ``values`` on ``seqs`` into ``store``, one cell per layer chunk."""
    from steerlab.scoring.sweep import SweepEngine

    engine = SweepEngine(lm, batch_size=batch_size, progress=progress)
    for chunk in layer_chunks(layers):
        cell = cell_id("sweep", model=fields["model"], data=fields["data"], split=split,
                       layers=",".join(map(str, chunk)), unit=unit,
                       values=",".join(f"{v:g}" for v in values), positions=positions,
                       seed=fields.get("seed"))
        if store.done(cell):
            continue
        with stopwatch() as took:
            results = engine.score(seqs, vector, [[k] for k in chunk], values, unit=unit,
                                   positions=positions)
        per_layer = took[0] / len(chunk)
        records = [rec for k in chunk for rec in cell_records(
            results, k, values, unit, per_layer, split=split, **fields)]
        store.add(cell, records)


def command(
    model: str = MODEL,
    data: str = typer.Option(..., "--data", help="caa:NAME, mwe:NAME, builtin:NAME or a file."),
    layers: str = typer.Option("all", "--layers", help="all, 8-20, 8-20:4, 10,16"),
    coefficients: str = typer.Option(None, "--coefficients",
                                     help="e.g. -2:2:0.5 or -2,0,2 (raw multipliers)."),
    strengths: str = typer.Option(None, "--strengths",
                                  help="e.g. -0.5,0,0.5 (multiples of the residual norm)."),
    vector: Path = typer.Option(None, "--vector", help="Use this vector instead of extracting."),
    method: str = typer.Option("mean_diff", "--method", help="mean_diff | pca | probe"),
    positions: str = typer.Option("all", "--positions",
                                  help="Where to steer: all, after_instruction (CAA), ..."),
    train_limit: int = typer.Option(0, "--train-limit",
                                    help="Extract from at most N train pairs (0 = all)."),
    form: str = FORMAT,
    out: Path = OUT, limit: int = LIMIT, seed: int = SEED, batch_size: int = BATCH,
) -> None:
    """Layer × coefficient sweep on val; the chosen layer reported on test (never chosen there)."""
    import steerlab
    from steerlab.eval.plots import save_curves, save_heatmap

    check_limit(limit)
    check_limit(train_limit)
    unit, values = _values(coefficients, strengths)
    splits = load_splits(data, seed, train_limit, form)
    store = ResultStore(out)
    lm = steerlab.load_model(model)
    data = data_label(data, form)
    chosen_layers = resolve_layers(layers, lm.n_layers)
    vec = _vector(lm, vector, splits["train"], method, chosen_layers, out, batch_size)
    fields = {"command": "sweep", "model": model, "data": data, "method": vec.method,
              "site": vec.site, "seed": seed,
              "n_pairs": vec.manifest.get("dataset", {}).get("n_pairs")}
    seqs = {s: to_sequences(lm, splits[s], limit, seed, form) for s in ("val", "test")}
    run_grid(lm, store, seqs["val"], vec, chosen_layers, values, unit=unit, split="val",
             positions=positions, batch_size=batch_size, fields=fields)
    match = {"model": model, "data": data, "seed": seed}
    effects = {k: effect(store, "val", k, **match) for k in chosen_layers}
    best = max(chosen_layers, key=lambda k: -math.inf if math.isnan(effects[k]) else effects[k])
    run_grid(lm, store, seqs["test"], vec, [best], values, unit=unit, split="test",
             positions=positions, batch_size=batch_size, fields=fields)
    _report(store, chosen_layers, values, unit, best, match, lm.n_layers)
    grid = [[_score(store, "val", k, v, unit, match) for v in values] for k in chosen_layers]
    heat = out / "sweep_heatmap.png"
    save_heatmap(heat, grid, chosen_layers, [f"{v:g}" for v in values], xlabel=unit,
                 ylabel="layer", title=f"{data} on {model}: val behaviour score",
                 cbar="score", center=0.5)
    test = [store.records(metric="score", split="test", layer=best, **{unit: v}, **match)[-1]
            for v in values]
    curve = out / "sweep_test.png"
    save_curves(curve, values, {f"test, layer {best}": ([r["value"] for r in test],
                                                         [r["ci_low"] for r in test],
                                                         [r["ci_high"] for r in test])},
                xlabel=unit, ylabel="behaviour score", title=f"{data}: chosen on val, test",
                hline=0.5)
    done_line(out, [heat, curve])


def load_splits(data: str, seed: int, train_limit: int, form: str) -> dict[str, Any]:
    """train (extraction input), val and test of ``data`` in the chosen ``--format``.

    ``open`` turns each A/B item into its question stem and the two options' texts; the train
    split then becomes (question + matching answer, question + other answer) pairs.
    """
    import steerlab

    if form not in FORMATS:
        raise SteerlabError(f"--format must be one of {', '.join(FORMATS)}, got {form!r}")
    splits = {s: steerlab.load_dataset(data, split=s, seed=seed) for s in ("train", "val", "test")}
    if form == "open":
        splits = {s: d.open_answers() for s, d in splits.items()}
        for name, split in splits.items():
            if not len(split):
                raise SteerlabError(f"{data}: no item of the {name} split has parseable "
                                    "'Choices: (A) ... (B) ...' options for --format open")
    if train_limit:
        splits["train"] = splits["train"].subset(train_limit, seed)
    if form == "open":
        splits["train"] = splits["train"].answer_pairs()
    return splits


def to_sequences(lm: Any, dataset: Any, limit: int, seed: int, form: str) -> list[Any]:
    """Token sequences the engine scores: A/B prefixes, or (matching, other) answer pairs."""
    from steerlab.model.prompts import ab_sequences, answer_sequences
    from steerlab.scoring.ab import ab_items

    items = ab_items(dataset.subset(limit, seed) if limit else dataset)
    if form == "open":
        return [seq for item in items for seq in answer_sequences(lm.tokenizer, item)]
    return [ab_sequences(lm.tokenizer, item) for item in items]


def data_label(data: str, form: str) -> str:
    """The ``data`` field of records: the spec, plus ``/open`` for the open-answer format."""
    return data if form == "ab" else f"{data}/open"


def _values(coefficients: str | None, strengths: str | None) -> tuple[str, list[float]]:
    from steerlab.util.parse import parse_values

    if (coefficients is None) == (strengths is None):
        raise SteerlabError("give --coefficients or --strengths (one of them)")
    unit = "coefficient" if coefficients is not None else "strength"
    values = parse_values(coefficients if coefficients is not None else str(strengths))
    if not values:
        raise SteerlabError(f"--{unit}s: no values given")
    return unit, values


def _vector(lm: Any, path: Path | None, train: Any, method: str, layers: Sequence[int],
            out: Path, batch_size: int) -> Any:
    """The given vector, or one extracted from train (saved in the run dir and reused)."""
    import steerlab

    if path is None:
        return cached_vector(lm, out / "vector.safetensors", train, method, layers, batch_size)
    vec = steerlab.SteeringVector.load(path, model=lm)
    missing = [k for k in layers if k not in vec.layers]
    if missing:
        raise SteerlabError(f"{path}: no direction for layer(s) {missing}; it has {vec.layers}")
    return vec


def cached_vector(lm: Any, saved: Path, train: Any, method: str, layers: Sequence[int],
                  batch_size: int) -> Any:
    """Extract from ``train`` unless ``saved`` already holds that extraction (same data, same
    pair count, method and layers) — so a resumed run scores the very same vector."""
    import steerlab

    if saved.exists():
        vec = steerlab.SteeringVector.load(saved, model=lm)
        info = vec.manifest.get("dataset", {})
        if (vec.method == method and set(layers) <= set(vec.layers)
                and info.get("name") == train.name and info.get("n_pairs") == len(train)
                and info.get("sha256") == train.sha256):
            return vec
    vec = steerlab.extract(lm, train, method=method, layers=list(layers), batch_size=batch_size)
    vec.save(saved)
    return vec


def _score(store: ResultStore, split: str, layer: int, value: float, unit: str,
           match: dict[str, Any]) -> float:
    found = store.records(metric="score", split=split, layer=layer, **{unit: value}, **match)
    return float(found[-1]["value"]) if found else math.nan


def _report(store: ResultStore, layers: Sequence[int], values: Sequence[float], unit: str,
            best: int, match: dict[str, Any], n_layers: int) -> None:
    rows = []
    for k in layers:
        steer_rec = store.records(metric="steerability", split="val", layer=k, **match)
        anti_rec = store.records(metric="anti_steerable", split="val", layer=k, **match)
        rows.append([("*" if k == best else "") + str(k),
                     *(fmt(_score(store, "val", k, v, unit, match)) for v in values),
                     fmt(steer_rec[-1]["value"]) if steer_rec else "–",
                     fmt(anti_rec[-1]["value"], 2) if anti_rec else "–"])
    print_table(f"val behaviour score by layer × {unit} (* = chosen, {n_layers} layers)",
                ["layer", *(f"{v:g}" for v in values), "steerability", "anti-steer"], rows)
    test_rows = []
    for v in values:
        rec = store.records(metric="score", split="test", layer=best, **{unit: v}, **match)[-1]
        test_rows.append([f"{v:g}", fmt_ci(rec["value"], rec["ci_low"], rec["ci_high"]),
                          str(rec["n"])])
    print_table(f"test split at the chosen layer {best}", [unit, "score [95% CI]", "n"],
                test_rows)
