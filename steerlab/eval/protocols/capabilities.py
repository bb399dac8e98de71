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

from steerlab.data.loaders import Dataset, load_dataset
from steerlab.data.sequences import ab_sequences
from steerlab.eval.behaviour import explain_values
from steerlab.eval.configs.capabilities import BENCHMARKS, CapabilitiesConfig
from steerlab.eval.figures import Curves, band_lines, save_png
from steerlab.eval.run import EvalRun, file_sha256, stopwatch
from steerlab.eval.store import cell_id, make_record
from steerlab.eval.tables import fmt, fmt_ci, print_table
from steerlab.model.load import LoadedModel, load_model
from steerlab.scoring.ab import ABResult, ab_items
from steerlab.steering.spec import parse_positions
from steerlab.util import stats
from steerlab.util.parse import parse_choices, resolve_layers
from steerlab.util.progress import bar
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector


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
    parse_choices(name, BENCHMARKS, "--benchmarks")
    data = load_dataset(f"capabilities:{name}", split="all")
    return data.subset(limit, seed) if limit else data


def _cell(bench: str, layer: int, unit: Unit, value: float, n: int, positions: str) -> str:
    return cell_id("capabilities", benchmark=bench, layer=layer, n=n,
                          positions=positions, **{unit: value})


def _measure(lm: LoadedModel, store: EvalRun, vec: SteeringVector, bench: str,
             data: Dataset, todo: dict[int, list[float]], unit: Unit, positions: str,
             seed: int, batch_size: int) -> None:
    """Score the cells still to do: one sweep engine for the benchmark (tokenized once), the
    layers in resumable chunks of one engine pass each (as ``eval sweep`` does)."""
    from steerlab.eval.behaviour import layer_chunks
    from steerlab.scoring.sweep import SweepEngine

    seqs = [ab_sequences(lm.tokenizer, item) for item in ab_items(data)]
    engine = SweepEngine(lm, batch_size=batch_size)
    for chunk in layer_chunks(list(todo)):
        values = sorted({v for layer in chunk for v in todo[layer]})
        with stopwatch() as t:
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


def _report(store: EvalRun, benches: dict[str, Dataset], layers: list[int], unit: Unit,
            values: list[float], positions: str, title: str, out: Path) -> Path:
    rows: list[list[Any]] = []
    series: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for bench, data in benches.items():
        for layer in layers:
            band: tuple[list[float], list[float], list[float]] = ([], [], [])
            mass: tuple[list[float], list[float], list[float]] = ([], [], [])
            for value in values:
                cell = _cell(bench, layer, unit, value, len(data), positions)
                got = {r["metric"]: r for r in store.records(cell=cell)}
                acc = got["accuracy"]
                for target, record in ((band, acc), (mass, got["letter_mass"])):
                    for seq, key in zip(target, ("value", "ci_low", "ci_high"), strict=True):
                        seq.append(math.nan if record[key] is None else record[key])
                rows.append([bench, layer, f"{value:+g}",
                             fmt_ci(acc["value"], acc["ci_low"], acc["ci_high"]),
                             fmt(got["p_correct"]["value"]),
                             fmt(got["letter_mass"]["value"]), acc["n"]])
            label = bench if len(layers) == 1 else f"{bench} L{layer}"
            series[f"{label}: accuracy"] = band
            series[f"{label}: letter mass p(A)+p(B)"] = mass
    n = next(iter(benches.values()))
    print_table(title, ["benchmark", "layer", unit, "accuracy [95% CI]", "p(correct)",
                        "p(A)+p(B)", "n"], rows,
                caption="accuracy: Wilson 95 % interval; p(A)+p(B): how much of the next-token "
                        "mass is on the two letters at all")
    plot = out / "capabilities_accuracy.png"
    save_png(plot, [Curves(f"{title}\n(n={len(n)} items per benchmark)", unit,
                           "accuracy (p(correct) > p(other)) and letter mass",
                           band_lines(values, series), hline=0.5)],
             note="shaded: 95 % interval (Wilson for accuracy, t for letter mass)")
    return plot


def run(cfg: CapabilitiesConfig) -> dict[tuple[str, int, float], tuple[float, float, float]]:
    """MMLU / TruthfulQA A/B accuracy per (benchmark, layer, value), Wilson intervals."""
    parse_positions(cfg.positions)
    values = [float(v) for v in cfg.values]
    benches = {name: load_benchmark(name, cfg.limit, cfg.seed) for name in cfg.benchmarks}
    study = EvalRun(cfg.out, "capabilities", cfg.settings())
    lm = load_model(cfg.model)
    vec = SteeringVector.load(cfg.vector, model=lm)
    study.update({"model_revision": lm.revision, "vector_sha256": file_sha256(cfg.vector)})
    layer_list = resolve_layers(cfg.layers, lm.n_layers)
    explain_values(vec, layer_list, cfg.unit, values)
    cells = {(name, layer, v): _cell(name, layer, cfg.unit, v, len(data), cfg.positions)
             for name, data in benches.items() for layer in layer_list for v in values}
    left = set(study.todo(list(cells.values())))
    with bar(len(left), "capabilities cells", unit="cell") as progress:
        for name, data in benches.items():
            todo = {layer: [v for v in values if cells[(name, layer, v)] in left]
                    for layer in layer_list}
            todo = {layer: vs for layer, vs in todo.items() if vs}
            if todo:
                _measure(lm, study, vec, name, data, todo, cfg.unit, cfg.positions, cfg.seed,
                         cfg.batch_size)
                progress.update(sum(len(vs) for vs in todo.values()))
    title = f"{lm.model_id}: capabilities under steering ({vec.method}, positions={cfg.positions})"
    plot = _report(study, benches, layer_list, cfg.unit, values, cfg.positions, title,
                   Path(cfg.out))
    study.finish([plot])
    out = {}
    for (name, layer, v), cell in cells.items():
        acc = study.store.records(cell=cell, metric="accuracy")[0]
        out[(name, layer, v)] = (acc["value"], acc["ci_low"], acc["ci_high"])
    return out
