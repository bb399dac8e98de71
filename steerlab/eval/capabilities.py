"""``steerlab eval capabilities``: MMLU and TruthfulQA A/B accuracy under steering (DESIGN §7).

The items are CAA's capability sets (``<data>/caa/capabilities/{mmlu,truthfulqa}_ab.json``,
loaded as ``capabilities:mmlu`` / ``capabilities:truthfulqa``): a question with two lettered
options, ``correct`` = the right letter (read as the item's *matching* answer). Each item is
chat-formatted and the assistant turn prefilled up to the answer letter, exactly as the CAA
behaviour score (:func:`steerlab.scoring.sweep.sweep_ab`, one batched prefix-reusing pass per
layer). Per cell (benchmark × layer × coefficient) it records

* ``accuracy``: share of items with p(correct letter) > p(other letter), Wilson 95 % interval;
* ``p_correct``: mean of p(correct) / (p(correct) + p(other)), normal 95 % interval;
* ``letter_mass``: mean p(A) + p(B) — how much of the next-token distribution lands on the two
  letters at all (a small model that ignores the format has low mass, and its accuracy
  says little).

``--limit N`` takes a seeded random subset of N items per benchmark (the same items in every
cell). Correct letters are about balanced (MMLU 299 A / 271 B, TruthfulQA 419 A / 398 B), so a
model with a letter bias scores near 0.5.

Example:
    $ steerlab eval capabilities --model smollm2-135m --vector v.safetensors --layer 12 \\
          --coefficients=-2,0,2 --limit 100 --out runs/cap
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from steerlab.data.loaders import Dataset
from steerlab.errors import SteerlabError
from steerlab.eval import common
from steerlab.eval.plots import save_curves
from steerlab.eval.store import ResultStore, make_record
from steerlab.model.load import LoadedModel
from steerlab.scoring.ab import ABResult
from steerlab.util import stats
from steerlab.vector import SteeringVector

BENCHMARKS = ("mmlu", "truthfulqa")


def accuracy(result: ABResult) -> tuple[float, float, float]:
    """Share of items whose correct letter beats the other (score > 0.5), Wilson 95 % CI.

    Example:
        >>> res = ABResult((0.9, 0.2, 0.6, 0.5), (0.0,) * 4, (0.0,) * 4, (0.0,) * 4)
        >>> [round(x, 3) for x in accuracy(res)]        # 2 of 4 (a tie is not correct)
        [0.5, 0.15, 0.85]
    """
    return stats.wilson(sum(score > 0.5 for score in result.scores), result.n)


def letter_mass(result: ABResult) -> tuple[float, float, float]:
    """Mean p(correct) + p(other) over items, normal 95 % CI.

    Example:
        >>> letter_mass(ABResult((0.5,), (0.0,), (0.25,), (0.25,)))[0]
        0.5
    """
    return stats.mean_ci([m + o for m, o in zip(result.p_matching, result.p_not_matching,
                                                    strict=True)])


def cell_records(result: ABResult, **fields: Any) -> list[dict[str, Any]]:
    """The three records (accuracy, p_correct, letter_mass) of one cell.

    Example:
        >>> recs = cell_records(ABResult((0.9, 0.3), (2.0, -1.0), (0.6, 0.2), (0.1, 0.4)))
        >>> [(r["metric"], round(r["value"], 2)) for r in recs]
        [('accuracy', 0.5), ('p_correct', 0.6), ('letter_mass', 0.65)]
    """
    acc, p_correct, mass = accuracy(result), stats.mean_ci(list(result.scores)), \
        letter_mass(result)
    fields = {"n": result.n, **fields}
    return [make_record("accuracy", acc[0], ci=acc[1:], **fields),
            make_record("p_correct", p_correct[0], ci=p_correct[1:], **fields,
                        mean_propensity=result.mean_propensity),
            make_record("letter_mass", mass[0], ci=mass[1:], **fields)]


def load_benchmark(name: str, limit: int, seed: int) -> Dataset:
    """``capabilities:<name>``, a seeded subset of ``limit`` items (0 = all)."""
    import steerlab

    if name not in BENCHMARKS:
        raise SteerlabError(f"unknown benchmark {name!r}; expected one of "
                            f"{', '.join(BENCHMARKS)}")
    data = steerlab.load_dataset(f"capabilities:{name}")
    return data.subset(limit, seed) if limit else data


def _benchmarks(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SteerlabError("--benchmarks: empty list; expected e.g. mmlu,truthfulqa")
    for name in names:
        if name not in BENCHMARKS:
            raise SteerlabError(f"--benchmarks: unknown {name!r}; expected some of "
                                f"{', '.join(BENCHMARKS)}")
    return names


def _cell(bench: str, layer: int, unit: str, value: float, n: int, positions: str) -> str:
    return common.cell_id("capabilities", benchmark=bench, layer=layer, n=n,
                          positions=positions, **{unit: value})


def _measure(lm: LoadedModel, store: ResultStore, vec: SteeringVector, bench: str,
             data: Dataset, todo: dict[int, list[float]], unit: str, positions: str,
             seed: int, batch_size: int) -> None:
    """Score the cells still to do: one sweep engine for the benchmark (tokenized once), the
    layers in resumable chunks of one engine pass each (as ``eval sweep`` does)."""
    from steerlab.eval.sweep import layer_chunks
    from steerlab.model.prompts import ab_sequences
    from steerlab.scoring.ab import ab_items
    from steerlab.scoring.sweep import SweepEngine

    seqs = [ab_sequences(lm.tokenizer, item) for item in ab_items(data)]
    engine = SweepEngine(lm, batch_size=batch_size, progress=True)
    for chunk in layer_chunks(list(todo)):
        values = sorted({v for layer in chunk for v in todo[layer]})
        with common.stopwatch() as t:
            results = engine.score(seqs, vec, [[k] for k in chunk], values, unit=unit,
                                   positions=positions)
        for layer in chunk:
            for value in todo[layer]:
                fields = {"command": "capabilities", "model": lm.model_id, "data": data.name,
                          "split": "all", "seed": seed, "layer": layer, "method": vec.method,
                          "site": vec.site, unit: value,
                          "seconds": t[0] / (len(chunk) * len(values)), "positions": positions}
                store.add(_cell(bench, layer, unit, value, len(data), positions),
                          cell_records(results[(layer, float(value))], **fields))


def _report(store: ResultStore, benches: dict[str, Dataset], layers: list[int], unit: str,
            values: list[float], positions: str, title: str, out: Path) -> Path:
    rows: list[list[Any]] = []
    series: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for bench, data in benches.items():
        for layer in layers:
            band: tuple[list[float], list[float], list[float]] = ([], [], [])
            for value in values:
                cell = _cell(bench, layer, unit, value, len(data), positions)
                got = {r["metric"]: r for r in store.records(cell=cell)}
                acc = got["accuracy"]
                for seq, key in zip(band, ("value", "ci_low", "ci_high"), strict=True):
                    seq.append(math.nan if acc[key] is None else acc[key])
                rows.append([bench, layer, f"{value:+g}",
                             common.fmt_ci(acc["value"], acc["ci_low"], acc["ci_high"]),
                             common.fmt(got["p_correct"]["value"]),
                             common.fmt(got["letter_mass"]["value"]), acc["n"]])
            series[bench if len(layers) == 1 else f"{bench} L{layer}"] = band
    common.print_table(title, ["benchmark", "layer", unit, "accuracy [95% CI]", "p(correct)",
                               "p(A)+p(B)", "n"], rows)
    plot = out / "capabilities_accuracy.png"
    save_curves(plot, values, series, xlabel=unit, ylabel="accuracy (p(correct) > p(other))",
                title=title, hline=0.5)
    return plot


def command(
    vector: Path = typer.Option(..., "--vector", help="Steering vector (.safetensors)."),
    layers: str = typer.Option(..., "--layer", "--layers", help="Layer(s), each on its own."),
    coefficients: str = typer.Option(None, "--coefficients", help="e.g. -2,0,2 or -4:4:2"),
    strengths: str = typer.Option(None, "--strengths", help="Like --coefficients, in units of "
                                  "the mean residual norm."),
    benchmarks: str = typer.Option("mmlu,truthfulqa", "--benchmarks", help="Comma list."),
    positions: str = typer.Option("all", "--positions", help="Where to steer (steerlab "
                                  "positions)."),
    model: str = common.MODEL,
    out: Path = common.OUT,
    limit: int = common.LIMIT,
    seed: int = common.SEED,
    batch_size: int = common.BATCH,
) -> None:
    """MMLU / TruthfulQA A/B accuracy vs coefficient (Wilson CIs), plus mean p(correct)."""
    import steerlab
    from steerlab.steering.spec import parse_positions
    from steerlab.util.parse import resolve_layers, unit_values

    common.check_limit(limit)
    unit, values = unit_values(coefficients, strengths)
    parse_positions(positions)
    names = _benchmarks(benchmarks)
    benches = {name: load_benchmark(name, limit, seed) for name in names}  # fail before loading
    store = ResultStore(out)
    lm = steerlab.load_model(model)
    vec = steerlab.SteeringVector.load(vector, model=lm)
    layer_list = resolve_layers(layers, lm.n_layers)
    for name, data in benches.items():
        todo = {layer: [v for v in values
                        if not store.done(_cell(name, layer, unit, v, len(data), positions))]
                for layer in layer_list}
        todo = {layer: left for layer, left in todo.items() if left}
        if todo:
            _measure(lm, store, vec, name, data, todo, unit, positions, seed, batch_size)
    title = f"{lm.model_id}: capabilities under steering ({vec.method}, positions={positions})"
    plot = _report(store, benches, layer_list, unit, values, positions, title, out)
    common.done_line(out, [plot])
