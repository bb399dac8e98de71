"""``steerlab eval samples``: how many contrast pairs a vector needs (CAE finding 2).

For each n in ``--n`` and each of ``--seeds`` random draws, a vector is extracted from n train
pairs at one layer and scored on the evaluation split by the sweep engine. Per (n, seed) the
store gets the vector's ``cosine`` to the full-train vector, ``score`` per value and the paired
``effect`` (score at the largest value minus at the smallest). The table and plots show, per
n, the mean over seeds with a 95 % interval *over seeds*, and the plateau: the smallest n that
no larger n beats by more than the larger n's interval half-width
(:func:`steerlab.util.stats.plateau`).

Example:
    $ steerlab eval samples --data caa:refusal --layer 12 --n 1,5,20,80,320 --seeds 5 --out r
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from tqdm.auto import tqdm

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


def parse_sizes(text: str) -> list[int]:
    """``"1,2,5,10"`` → sorted unique positive ints.

    Example:
        >>> parse_sizes("10, 1,5,5")
        [1, 5, 10]
    """
    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SteerlabError(f"--n: expected comma-separated pair counts like 1,5,20, got "
                            f"{text!r}") from None
    if not sizes or sizes[0] < 1:
        raise SteerlabError(f"--n: pair counts must be positive, got {text!r}")
    return sizes


def summarize(store: ResultStore, sizes: Sequence[int], metric: str,
              **match: Any) -> dict[int, tuple[float, float, float, int]]:
    """Per n: mean over seeds of ``metric`` with a 95 % interval over seeds, and #seeds.

    Example:
        >>> import tempfile
        >>> st = ResultStore(tempfile.mkdtemp())
        >>> for s, v in enumerate([0.1, 0.3]):
        ...     st.add(f"c{s}", [make_record("effect", v, n_pairs=5, seed=s)])
        >>> m, lo, hi, k = summarize(st, [5], "effect")[5]
        >>> round(m, 3), k
        (0.2, 2)
    """
    from steerlab.util.stats import mean_ci

    out = {}
    for n in sizes:
        values = [r["value"] for r in store.records(metric=metric, n_pairs=n, **match)
                  if r["value"] is not None]
        mean, low, high = mean_ci(values)
        out[n] = (mean, low, high, len(values))
    return out


def command(
    model: str = MODEL,
    data: str = typer.Option(..., "--data", help="caa:NAME, mwe:NAME, builtin:NAME or a file."),
    layer: int = typer.Option(..., "--layer", help="The layer to extract and steer at."),
    n: str = typer.Option("1,2,5,10,20,40,80,160,320", "--n", help="Pair counts to try."),
    seeds: int = typer.Option(5, "--seeds", help="Random draws per pair count."),
    coefficients: str = typer.Option(None, "--coefficients", help="Default -1,1."),
    strengths: str = typer.Option(None, "--strengths", help="Instead of coefficients."),
    method: str = typer.Option("mean_diff", "--method", help="mean_diff | pca | probe"),
    split: str = typer.Option("test", "--split", help="Split to score on (val | test)."),
    train_limit: int = typer.Option(0, "--train-limit",
                                    help="Use at most N train pairs as the pool (0 = all)."),
    form: str = typer.Option("ab", "--format", help="ab (letter score) or open (whole "
                             "answers; see eval sweep)."),
    out: Path = OUT, limit: int = LIMIT, seed: int = SEED, batch_size: int = BATCH,
) -> None:
    """Behaviour effect and cosine to the full-data vector vs the number of contrast pairs."""
    import steerlab
    from steerlab.eval.plots import save_curves
    from steerlab.eval.sweep import _values, cell_records, data_label, load_splits, to_sequences
    from steerlab.scoring.sweep import SweepEngine
    from steerlab.util.stats import plateau
    from steerlab.vector import cosine

    check_limit(limit)
    check_limit(train_limit)
    if seeds < 1:
        raise SteerlabError(f"--seeds must be at least 1, got {seeds}")
    if split not in ("val", "test"):
        raise SteerlabError(f"--split must be val or test, got {split!r}")
    sizes = parse_sizes(n)
    unit, values = _values(coefficients if coefficients or strengths else "-1,1", strengths)
    if len(values) < 2:
        raise SteerlabError(f"--{unit}s: need at least two values to measure an effect")
    splits = load_splits(data, seed, train_limit, form)
    train, evaluation = splits["train"], splits[split]
    data = data_label(data, form)
    too_big = [k for k in sizes if k > len(train)]
    if too_big:
        raise SteerlabError(f"--n {too_big} exceed the {len(train)} train pairs of {data}")
    store = ResultStore(out)
    lm = steerlab.load_model(model)
    if not 0 <= layer < lm.n_layers:
        raise SteerlabError(f"--layer {layer} out of range: {model} has {lm.n_layers} layers")
    full = _full_vector(lm, train, method, layer, out, batch_size)
    seqs = to_sequences(lm, evaluation, limit, seed, form)
    n_items = len(seqs) // 2 if form == "open" else len(seqs)
    engine = SweepEngine(lm, batch_size=batch_size)
    fields = {"command": "samples", "model": model, "data": data, "method": method,
              "split": split, "site": full.site}
    cells = [(k, s) for k in sizes for s in range(seeds)] + [(len(train), 0)]
    for size, draw in tqdm(cells, desc="samples", leave=False):
        draw_seed = seed * 1000 + draw
        cell = cell_id("samples", model=model, data=data, layer=layer, n_pairs=size,
                       seed=draw_seed, split=split, method=method, unit=unit,
                       values=",".join(f"{v:g}" for v in values), limit=limit)
        if store.done(cell):
            continue
        with stopwatch() as took:
            subset = train.subset(size, draw_seed)
            vec = full if size == len(train) else steerlab.extract(
                lm, subset, method=method, layers=[layer], batch_size=batch_size,
                progress=False)
            results = engine.score(seqs, vec, [[layer]], values, unit=unit)
        where = {**fields, "n_pairs": size, "seed": draw_seed}
        records = cell_records(results, layer, values, unit, took[0], **where)
        records.append(make_record("cosine", cosine(vec.directions[layer],
                                                    full.directions[layer]),
                                   layer=layer, n=1, seconds=took[0], **where))
        store.add(cell, records)
    match = {"model": model, "data": data, "layer": layer, "split": split}
    effects = summarize(store, sizes, "effect", **match)
    cosines = summarize(store, sizes, "cosine", **match)
    full_effect = summarize(store, [len(train)], "effect", **match)[len(train)]
    half = [(e[2] - e[0]) if not math.isnan(e[2]) else math.inf for e in effects.values()]
    settled = plateau(sizes, [effects[k][0] for k in sizes], half)
    rows = [[str(k), fmt_ci(*cosines[k][:3]), fmt_ci(*effects[k][:3]), str(effects[k][3])]
            for k in sizes]
    rows.append([f"all {len(train)}", "1.000", fmt(full_effect[0]), "1"])
    print_table(f"{data} at layer {layer}: effect = score({max(values):g}) − "
                f"score({min(values):g}) on {split} (n={n_items}), mean over seeds",
                ["pairs", "cosine to full [95% CI]", "effect [95% CI]", "seeds"], rows)
    print(f"plateau: {settled if settled is not None else 'not reached'} pairs "
          "(no larger count beats it by more than that count's interval)")
    plots = [out / "samples_effect.png", out / "samples_cosine.png"]
    save_curves(plots[0], sizes, {"effect": _band(effects, sizes)}, xlabel="contrast pairs",
                ylabel=f"score({max(values):g}) − score({min(values):g})", logx=True,
                title=f"{data}, layer {layer}: effect vs pairs (plateau {settled})", hline=0)
    save_curves(plots[1], sizes, {"cosine": _band(cosines, sizes)}, xlabel="contrast pairs",
                ylabel="cosine to the full-train vector", logx=True,
                title=f"{data}, layer {layer}: agreement with the full vector")
    done_line(out, plots)


def _band(summary: dict[int, tuple[float, float, float, int]],
          sizes: Sequence[int]) -> tuple[list[float], list[float], list[float]]:
    return ([summary[k][0] for k in sizes], [summary[k][1] for k in sizes],
            [summary[k][2] for k in sizes])


def _full_vector(lm: Any, train: Any, method: str, layer: int, out: Path, batch_size: int) -> Any:
    from steerlab.eval.sweep import cached_vector

    saved = out / f"full_{method}_layer{layer}.safetensors"
    return cached_vector(lm, saved, train, method, [layer], batch_size)
