"""``steerlab cast fit``: a condition direction, its layer and threshold, tuned on one split and
reported on another (conditional steering, CAST — Lee et al. 2024).

The harmful and harmless prompts are each split in two (seeded): *fit* and *test*. On the fit
half, the condition direction at every candidate layer is the difference of the mean block-input
activation (averaged over each chat-formatted prompt's real tokens) of harmful minus harmless
prompts. Every prompt is then scored at every layer with the very similarity conditional
steering uses at run time (:class:`steerlab.steering.spec.Condition`: CAST's cos(h, tanh(P h))
or plain cosine), and per layer the threshold and comparator with the best F1 on the fit half
(harmful = positive) are chosen; the layer is the one with the best fit F1. Only then is the
choice scored on the test half: F1, accuracy (Wilson interval) and AUROC. The vector file keeps
every candidate layer's direction and, in its manifest, the chosen condition and both scores.

Example:
    >>> run(CastFitConfig(out="harm.safetensors", harmful="advbench",
    ...                   harmless="xstest:safe"))                          # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steerlab.data.benchmarks import load_prompt_set
from steerlab.errors import SteerlabError
from steerlab.eval.tables import console, fmt, print_table
from steerlab.extraction.record import record
from steerlab.model.load import LoadedModel, load_model
from steerlab.model.prompts import prompt_ids
from steerlab.steering.hooks import steer
from steerlab.steering.spec import Condition, SteeringSpec
from steerlab.util import stats
from steerlab.util.parse import resolve_layers
from steerlab.util.progress import bar
from steerlab.util.seq import left_pad, token_batches
from steerlab.util.vocabulary import (
    Aggregate,
    ConditionMode,
    parse_aggregate,
    parse_condition_mode,
)
from steerlab.vector import FORMAT_VERSION, SteeringVector
from steerlab.version import __version__


@dataclass
class CastFitConfig:
    """Everything ``cast fit`` uses."""

    out: str | Path
    harmful: str = "advbench"
    harmless: str = "xstest:safe"
    model: str = "smollm2-135m"
    layers: str = "all"
    mode: str = "cast"
    aggregate: str = "mean"
    limit: int = 0
    fit_fraction: float = 0.5
    seed: int = 0
    batch_size: int = 16


@dataclass(frozen=True)
class LayerFit:
    """One layer's best threshold and comparator on the fit half, and its test scores."""

    layer: int
    threshold: float
    comparator: str
    fit_f1: float
    test_f1: float
    test_accuracy: tuple[float, float, float]
    test_auroc: float


def f1(predicted: Sequence[bool], truth: Sequence[bool]) -> float:
    """F1 of the positive class.

    Example:
        >>> f1([True, True, False], [True, False, False])
        0.6666666666666666
    """
    tp = sum(p and t for p, t in zip(predicted, truth, strict=True))
    fp = sum(p and not t for p, t in zip(predicted, truth, strict=True))
    fn = sum(t and not p for p, t in zip(predicted, truth, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def auroc(scores: Sequence[float], truth: Sequence[bool]) -> float:
    """Area under the ROC curve: P(a positive scores above a negative), ties count half.

    Example:
        >>> auroc([0.9, 0.8, 0.1], [True, False, False])
        1.0
    """
    pos = [s for s, t in zip(scores, truth, strict=True) if t]
    neg = [s for s, t in zip(scores, truth, strict=True) if not t]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def best_threshold(scores: Sequence[float], truth: Sequence[bool]) -> tuple[float, str, float]:
    """The threshold and comparator with the best F1 (thresholds between sorted scores).

    Example:
        >>> best_threshold([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
        (0.5, 'greater', 1.0)
    """
    ordered = sorted(set(scores))
    cuts = [(a + b) / 2 for a, b in itertools.pairwise(ordered)] or ordered
    best = (cuts[0], "greater", -1.0)
    for cut in cuts:
        for comparator in ("greater", "less"):
            fired = [(s > cut) if comparator == "greater" else (s < cut) for s in scores]
            score = f1(fired, truth)
            if score > best[2]:
                best = (cut, comparator, score)
    return best


def _split(prompts: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    cut = max(1, min(len(prompts) - 1, round(len(prompts) * fraction)))
    return [prompts[i] for i in sorted(order[:cut])], [prompts[i] for i in sorted(order[cut:])]


def condition_directions(lm: LoadedModel, harmful: list[list[int]],
                         harmless: list[list[int]], layers: list[int],
                         batch_size: int) -> dict[int, torch.Tensor]:
    """Mean block-input activation (over each prompt's tokens) of harmful − harmless."""
    means = {}
    for name, rows in (("harmful", harmful), ("harmless", harmless)):
        total: dict[int, torch.Tensor] = {}
        for batch in record(lm.model, rows, layers, site="block_input", read="mean",
                            batch_size=batch_size, pad_id=lm.pad_id):
            for k in layers:
                total[k] = total[k] + batch.acts[k].double().sum(0) if k in total else \
                    batch.acts[k].double().sum(0)
        means[name] = {k: (v / len(rows)).float() for k, v in total.items()}
    return {k: means["harmful"][k] - means["harmless"][k] for k in layers}


def similarities(lm: LoadedModel, rows: list[list[int]], vector: SteeringVector,
                 layers: list[int], mode: ConditionMode, aggregate: Aggregate,
                 batch_size: int) -> dict[int, list[float]]:
    """Each prompt's condition similarity at every layer, computed by the run-time gate."""
    zero = SteeringVector.from_directions({lm.n_layers - 1: torch.zeros(lm.hidden_size)})
    conditions = {k: Condition(vector, layer=k, threshold=0.0, mode=mode, aggregate=aggregate)
                  for k in layers}
    specs = [SteeringSpec(zero, coefficient=0.0, condition=c) for c in conditions.values()]
    out: dict[int, list[float]] = {k: [0.0] * len(rows) for k in layers}
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    spans = token_batches([len(rows[i]) for i in order], batch_size)
    with bar(len(rows), "condition similarities", unit="prompt") as progress:
        for span in spans:
            index = [order[i] for i in span]
            batch = left_pad([rows[i] for i in index], lm.pad_id)
            batch.pop("position_ids")
            with steer(lm, specs) as handle, torch.inference_mode():
                lm.model(**{k: v.to(lm.device) for k, v in batch.items()}, use_cache=False,
                         logits_to_keep=1)
                gates = {id(g.condition): g for g in handle.gates()}
            for layer, condition in conditions.items():
                scores = gates[id(condition)].scores
                assert scores is not None
                for row, value in zip(index, scores.tolist(), strict=True):
                    out[layer][row] = float(value)
            progress.update(len(index))
    return out


def run(cfg: CastFitConfig) -> tuple[SteeringVector, list[LayerFit]]:
    """Fit the condition on one half, report it on the other, save the vector."""
    mode = parse_condition_mode(cfg.mode, "--mode")
    aggregate = parse_aggregate(cfg.aggregate, "--aggregate")
    if not 0.1 <= cfg.fit_fraction <= 0.9:
        raise SteerlabError(f"fit fraction must be in [0.1, 0.9], got {cfg.fit_fraction}")
    from steerlab.util.io import check_writable

    check_writable(cfg.out, what="condition vector")
    harmful = load_prompt_set(cfg.harmful, cfg.limit, cfg.seed)
    harmless = load_prompt_set(cfg.harmless, cfg.limit, cfg.seed)
    if len(harmful) < 4 or len(harmless) < 4:
        raise SteerlabError(f"cast fit needs at least 4 prompts per set, got {len(harmful)} "
                            f"harmful and {len(harmless)} harmless")
    lm = load_model(cfg.model)
    layers = resolve_layers(cfg.layers, lm.n_layers)
    splits = {name: _split(prompts, cfg.fit_fraction, cfg.seed)
              for name, prompts in (("harmful", harmful), ("harmless", harmless))}
    ids = {name: ([prompt_ids(lm.tokenizer, p)[0] for p in fit],
                  [prompt_ids(lm.tokenizer, p)[0] for p in test])
           for name, (fit, test) in splits.items()}
    console.print(f"cast fit on {lm.model_id}: {len(ids['harmful'][0])} + "
                  f"{len(ids['harmless'][0])} fit prompts, {len(ids['harmful'][1])} + "
                  f"{len(ids['harmless'][1])} test prompts ({cfg.harmful} vs {cfg.harmless}), "
                  f"layers {layers[0]}..{layers[-1]}")
    directions = condition_directions(lm, ids["harmful"][0], ids["harmless"][0], layers,
                                      cfg.batch_size)
    vector = SteeringVector.from_directions(directions, site="block_input",
                                            model_id=lm.model_id, n_layers=lm.n_layers,
                                            method="condition_mean_diff")
    fits = []
    truth = {part: [True] * len(ids["harmful"][part]) + [False] * len(ids["harmless"][part])
             for part in (0, 1)}
    scores = {part: similarities(lm, ids["harmful"][part] + ids["harmless"][part], vector,
                                 layers, mode, aggregate, cfg.batch_size)
              for part in (0, 1)}
    for layer in layers:
        threshold, comparator, fit_f1 = best_threshold(scores[0][layer], truth[0])
        test = scores[1][layer]
        fired = [(s > threshold) if comparator == "greater" else (s < threshold) for s in test]
        correct = sum(p == t for p, t in zip(fired, truth[1], strict=True))
        signed = test if comparator == "greater" else [-s for s in test]
        fits.append(LayerFit(layer, threshold, comparator, fit_f1, f1(fired, truth[1]),
                             stats.wilson(correct, len(test)), auroc(signed, truth[1])))
    best = max(fits, key=lambda f: (f.fit_f1, -f.layer))
    vector.manifest.update({
        "format_version": FORMAT_VERSION, "steerlab_version": __version__,
        "model_revision": lm.revision,
        "dataset": {"name": f"{cfg.harmful} vs {cfg.harmless}", "split": "fit",
                    "n_pairs": len(ids["harmful"][0]), "sha256": None},
        "condition": {"layer": best.layer, "threshold": best.threshold,
                      "comparator": best.comparator, "mode": cfg.mode,
                      "aggregate": cfg.aggregate, "site": "block_input",
                      "fit": {"f1": best.fit_f1, "n": len(truth[0])},
                      "test": {"f1": best.test_f1, "accuracy": best.test_accuracy[0],
                               "auroc": best.test_auroc, "n": len(truth[1])},
                      "harmful": cfg.harmful, "harmless": cfg.harmless, "seed": cfg.seed,
                      "per_layer": {str(f.layer): {"threshold": f.threshold,
                                                   "comparator": f.comparator,
                                                   "fit_f1": f.fit_f1, "test_f1": f.test_f1,
                                                   "test_auroc": f.test_auroc} for f in fits}}})
    vector.save(cfg.out)
    _report(fits, best, cfg, len(truth[1]))
    return vector, fits


def _report(fits: list[LayerFit], best: LayerFit, cfg: CastFitConfig, n_test: int) -> None:
    rows: list[list[Any]] = [
        [("*" if f is best else "") + str(f.layer), f"{f.threshold:+.4f}", f.comparator,
         fmt(f.fit_f1), fmt(f.test_f1), f"{fmt(f.test_accuracy[0])} [{fmt(f.test_accuracy[1])}, "
         f"{fmt(f.test_accuracy[2])}]", fmt(f.test_auroc)] for f in fits]
    print_table(f"condition per layer ({cfg.mode}, {cfg.aggregate} over the prompt; * = chosen "
                "on fit F1)", ["layer", "threshold", "fires when", "fit F1", "test F1",
                               "test accuracy [Wilson 95%]", "test AUROC"], rows,
                caption=f"threshold and comparator chosen on the fit half only; test n = "
                        f"{n_test} prompts")
    console.print(f"wrote {cfg.out}: condition at layer {best.layer}, similarity "
                  f"{'>' if best.comparator == 'greater' else '<'} {best.threshold:+.4f}; test F1 "
                  f"{best.test_f1:.3f}, AUROC {best.test_auroc:.3f}")
