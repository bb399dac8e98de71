"""Behaviour-score cells shared by ``eval sweep``, ``samples`` and ``models``.

A study scores a vector at (layer × value) cells on a split of A/B data, in one of two
formats: ``ab`` (CAA's letter score) or ``open`` (each item's question with its two options'
full texts as replies; the vector is then read at the end of question + answer). The sweep
engine scores a chunk of layers × all values per resumable cell. Per (split, layer, value):
``score`` and ``propensity``; per (split, layer): ``effect`` (score at the largest value minus
at the smallest, paired), ``steerability`` and ``anti_steerable``.

Intervals: 95 % Student-t over items, clipped to the quantity's range (score [0, 1], effect
[−1, 1]); the anti-steerable share uses Wilson's interval.

Example:
    >>> layer_chunks([9, 1, 5, 3, 7], 2)
    [[1, 3], [5, 7], [9]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlab.data.loaders import Dataset, load_dataset
from steerlab.data.sequences import ABSequences, AnswerSequence, ab_sequences, answer_sequences
from steerlab.errors import SteerlabError
from steerlab.eval.run import EvalRun, stopwatch
from steerlab.eval.store import cell_id, make_record
from steerlab.eval.tables import console
from steerlab.model.load import LoadedModel
from steerlab.scoring.ab import ABResult, ab_items
from steerlab.util import stats
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector

LAYERS_PER_CELL = 4  # layers scored per engine pass (one resumable cell)
FORMATS = ("ab", "open")
INTERVALS = "95 % Student-t intervals over items (clipped to the range); n = items"


def layer_chunks(layers: Sequence[int], size: int = LAYERS_PER_CELL) -> list[list[int]]:
    """Deterministic chunks of the sorted layer list (the resumable cells of a sweep)."""
    ordered = sorted(layers)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def check_format(form: str) -> str:
    """``form`` if it is ``ab`` or ``open`` (one-line error otherwise)."""
    if form not in FORMATS:
        raise SteerlabError(f"--format must be one of {', '.join(FORMATS)}, got {form!r}")
    return form


def load_splits(data: str, seed: int, train_limit: int, form: str) -> dict[str, Dataset]:
    """train (extraction input), val and test of ``data`` in the chosen format.

    ``open`` turns each A/B item into its question stem and the two options' texts; the train
    split then becomes (question + matching answer, question + other answer) pairs. Plain
    contrast pairs (a user's own positive/negative texts) are already in open form: their
    validation and test items score the two completions as the two answers.
    """
    check_format(form)
    splits = {s: load_dataset(data, split=s, seed=seed) for s in ("train", "val", "test")}
    if splits["train"].kind == "pairs":
        if form == "ab":
            raise SteerlabError(f"{data}: plain contrast pairs have no A/B letters; use "
                                "--format open")
        splits = {s: d.as_answers() for s, d in splits.items()}
        if train_limit:
            splits["train"] = splits["train"].subset(train_limit, seed)
        splits["train"] = splits["train"].answer_pairs()
        return splits
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


def data_label(data: str, form: str) -> str:
    """The ``data`` field of records: the spec, plus ``/open`` for the open-answer format."""
    return data if form == "ab" else f"{data}/open"


def sequences(lm: LoadedModel, dataset: Dataset, limit: int, seed: int,
              form: str) -> list[ABSequences] | list[AnswerSequence]:
    """Token sequences the engine scores: A/B prefixes, or (matching, other) answer pairs."""
    items = ab_items(dataset.subset(limit, seed) if limit else dataset, "behaviour scoring")
    if form == "open":
        return [seq for item in items for seq in answer_sequences(lm.tokenizer, item)]
    return [ab_sequences(lm.tokenizer, item) for item in items]


def cached_vector(lm: LoadedModel, saved: Path, train: Dataset, method: str,
                  layers: Sequence[int], batch_size: int) -> SteeringVector:
    """Extract from ``train`` unless ``saved`` already holds that extraction (same data, pair
    count, method and layers) — so a resumed run scores the very same vector."""
    from steerlab.extraction import extract

    if saved.exists():
        vec = SteeringVector.load(saved, model=lm)
        info = vec.manifest.get("dataset", {})
        if (vec.method == method and set(layers) <= set(vec.layers)
                and info.get("name") == train.name and info.get("n_pairs") == len(train)
                and info.get("sha256") == train.sha256):
            return vec
    vec = extract(lm, train, method=method, layers=list(layers), batch_size=batch_size)
    vec.save(saved)
    return vec


def given_vector(lm: LoadedModel, path: Path, layers: Sequence[int]) -> SteeringVector:
    """A vector file, checked against the model and the layers a study needs."""
    vec = SteeringVector.load(path, model=lm)
    missing = [k for k in layers if k not in vec.layers]
    if missing:
        raise SteerlabError(f"{path}: no direction for layer(s) {missing}; it has {vec.layers}")
    return vec


def explain_values(vec: SteeringVector, layers: Sequence[int], unit: str,
                   values: Sequence[float]) -> None:
    """Print the vector's norm at each layer and what the values mean in the other unit.

    Raw coefficients do not transfer between vectors (a vector of norm 42 at coefficient 8 is
    a far larger push than one of norm 4.6), so every command that takes them says what they
    amount to as strengths (multiples of the mean residual norm), and vice versa.
    """
    biggest = max((abs(v) for v in values), default=0.0)
    for layer in list(layers)[:6]:
        norm = float(vec.directions[layer].norm(dim=-1).mean())
        resid = vec.resid_norm(layer)
        if resid is None or norm == 0:
            console.print(f"layer {layer}: vector norm {norm:.3g} (no residual-norm "
                          "calibration: raw coefficients only)")
            continue
        if unit == "coefficient":
            other = f"coefficient {biggest:g} = strength {biggest * norm / resid:.3g}"
        else:
            other = f"strength {biggest:g} = coefficient {biggest * resid / norm:.3g}"
        console.print(f"layer {layer}: vector norm {norm:.3g}, mean residual norm {resid:.3g}; "
                      f"{other}")
    if len(layers) > 6:
        console.print(f"(… {len(layers) - 6} more layers)")


def cell_records(results: dict[tuple[Any, float], ABResult], layer: int,
                 values: Sequence[float], unit: str, seconds: float,
                 **fields: Any) -> list[dict[str, Any]]:
    """Tidy records of one layer's results: score/propensity per value, effect, steerability.

    Example:
        >>> res = {(3, -1.0): ABResult((0.2, 0.4), (-1.0, 0.0), (0.2, 0.4), (0.8, 0.6)),
        ...        (3, 1.0): ABResult((0.6, 0.4), (1.0, -0.5), (0.6, 0.4), (0.4, 0.6))}
        >>> recs = cell_records(res, 3, [-1.0, 1.0], "coefficient", 1.0)
        >>> [(r["metric"], r["value"]) for r in recs if r["metric"] != "score"][-2:]
        [('steerability', 0.375), ('anti_steerable', 0.5)]
    """
    records = []
    for value in values:
        res = results[(layer, float(value))]
        where = {**fields, "layer": layer, unit: float(value), "n": res.n, "seconds": seconds}
        records.append(make_record("score", res.mean, ci=res.ci95, **where))
        mean, low, high = stats.mean_ci(list(res.propensities))
        records.append(make_record("propensity", mean, ci=(low, high), **where))
    if len(values) >= 2:
        low_v, high_v = float(min(values)), float(max(values))
        diffs = [a - b for a, b in zip(results[(layer, high_v)].scores,
                                       results[(layer, low_v)].scores, strict=True)]
        mean, low, high = stats.mean_ci(diffs, bounds=(-1.0, 1.0))
        records.append(make_record("effect", mean, ci=(low, high), **{
            **fields, "layer": layer, "n": len(diffs), "seconds": seconds, "unit": unit,
            "low_value": low_v, "high_value": high_v}))
        props = [list(results[(layer, float(v))].propensities) for v in values]
        slopes, mean_slope, anti = stats.steerability([float(v) for v in values], props)
        finite = [s for s in slopes if not math.isnan(s)]
        _, low, high = stats.mean_ci(finite)
        where = {**fields, "layer": layer, "n": len(finite), "seconds": seconds, "unit": unit}
        records.append(make_record("steerability", mean_slope, ci=(low, high), **where))
        _, a_low, a_high = stats.wilson(sum(s < 0 for s in finite), len(finite))
        records.append(make_record("anti_steerable", anti, ci=(a_low, a_high), **where))
    return records


def score_grid(run: EvalRun, lm: LoadedModel, seqs: Sequence[Any], vector: SteeringVector,
               layers: Sequence[int], values: Sequence[float], *, unit: Unit, split: str,
               positions: str, batch_size: int, fields: dict[str, Any]) -> None:
    """Score ``layers`` × ``values`` on ``seqs`` into the run, one cell per layer chunk."""
    from steerlab.scoring.sweep import SweepEngine
    from steerlab.util.progress import bar

    engine = SweepEngine(lm, batch_size=batch_size)
    chunks = {cell_id("sweep", model=fields["model"], data=fields["data"], split=split,
                      layers=",".join(map(str, chunk)), unit=unit,
                      values=",".join(f"{v:g}" for v in values), positions=positions,
                      seed=fields.get("seed")): chunk for chunk in layer_chunks(layers)}
    todo = run.todo(list(chunks))
    n_items = len(seqs) // 2 if seqs and isinstance(seqs[0], AnswerSequence) else len(seqs)
    with bar(len(todo) * n_items, f"{split}: {len(layers)} layer(s) × {len(values)} value(s)",
             unit="item") as progress:
        for cell in todo:
            chunk = chunks[cell]
            with stopwatch() as took:
                results = engine.score(seqs, vector, [[k] for k in chunk], values, unit=unit,
                                       positions=positions)
            per_layer = took[0] / len(chunk)
            run.add(cell, [rec for k in chunk for rec in cell_records(
                results, k, values, unit, per_layer, split=split, **fields)])
            progress.update(n_items)


def stored(run: EvalRun, metric: str, **match: Any) -> dict[str, Any] | None:
    """The last stored record of ``metric`` matching ``match`` (or None)."""
    found = run.records(metric=metric, **match)
    return found[-1] if found else None


def effect_triple(record: dict[str, Any] | None) -> tuple[float, float, float]:
    """(value, low, high) of a record, NaN where missing."""
    if record is None:
        return math.nan, math.nan, math.nan
    return tuple(math.nan if record[k] is None else float(record[k])  # type: ignore[return-value]
                 for k in ("value", "ci_low", "ci_high"))
