"""Adversarial inputs that reverse steering (``eval adversarial``; CAE finding 3).

For each held-out item, a suffix appended to the user's question is searched for — by EPO (a
population trading the objective against the suffix's own cross-entropy) or GCG — under the
*steered* model, to push its behaviour back. The same evaluation budget of random suffixes
(allowed tokens, same length) is the baseline, so success means more than noise. Success is
one rule for every objective: the steered model *with* the suffix scores at least what the
*unsteered* model scored without one (the steering is undone). Natural text of the same length
(WikiText-2 windows of as many tokens, appended the same way) gives the cross-entropy a
natural suffix has in that place: the paper's "adversarial inputs are unnatural", measured.

Per item (one resumable cell): the objective unsteered, steered, at the search's start and
best; the best suffix's cross-entropy (steered and unsteered); success; and the same for the
random baseline; the natural windows' cross-entropy; the search's Pareto frontier. Summary:
success rates with Wilson intervals (search vs random), cross-entropies with t intervals (found
suffixes vs natural text), and the frontier plot (objective vs cross-entropy).

Example:
    >>> run(AdversarialConfig(out="runs/adv", vector=Path("ref.safetensors"), layers="12",
    ...                       value=0.4, data="caa:refusal", limit=5))       # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlab.attack import OBJECTIVES, SearchResult, epo, evaluate, gcg, random_search, search
from steerlab.data.benchmarks import wikitext_text
from steerlab.data.loaders import Dataset, load_dataset
from steerlab.errors import SteerlabError
from steerlab.eval.configs.adversarial import METHODS, AdversarialConfig
from steerlab.eval.figures import Curves, Line, save_png
from steerlab.eval.run import EvalRun, file_sha256
from steerlab.eval.store import cell_id, make_record, replace_cell_rows
from steerlab.eval.tables import console, fmt, fmt_ci, print_table
from steerlab.model.load import LoadedModel, load_model
from steerlab.scoring.ab import ab_items
from steerlab.steering.spec import SteeringSpec
from steerlab.util import stats
from steerlab.util.parse import resolve_layers
from steerlab.util.progress import bar
from steerlab.vector import SteeringVector

NATURAL_WINDOWS = 8
MAX_PLOTTED_ITEMS = 8


def _search_config(cfg: AdversarialConfig) -> Any:
    common = {"suffix_length": cfg.suffix_length, "iterations": cfg.iterations,
              "topk": cfg.topk, "seed": cfg.seed}
    if cfg.method == "epo":
        return epo(population=cfg.population, children=cfg.children, **common)
    return gcg(children=cfg.children * cfg.population, **common)


def _items(cfg: AdversarialConfig) -> Dataset:
    data = load_dataset(cfg.data, split="test", seed=cfg.seed)
    if cfg.objective == "answer":
        data = data.open_answers()
        if not len(data):
            raise SteerlabError(f"{cfg.data}: no item has parseable options for the 'answer' "
                                "objective")
    ab_items(data, "eval adversarial")
    return data.subset(cfg.limit, cfg.seed) if cfg.limit else data


def _objective(lm: LoadedModel, cfg: AdversarialConfig, item: Any, vec: SteeringVector,
               layers: list[int]) -> Any:
    if cfg.objective == "projection":
        layer = cfg.projection_layer if cfg.projection_layer is not None else min(
            lm.n_layers - 1, max(layers) + 2)
        return OBJECTIVES["projection"](lm, item, vec, layer)
    return OBJECTIVES[cfg.objective](lm, item)


def natural_suffixes(lm: LoadedModel, length: int, n: int, seed: int) -> list[list[int]]:
    """``n`` windows of ``length`` tokens of WikiText-2 (natural text, seeded)."""
    tokens = list(lm.tokenizer(wikitext_text()[:200_000], add_special_tokens=False)["input_ids"])
    rng = random.Random(seed)
    starts = [rng.randrange(0, len(tokens) - length) for _ in range(n)]
    return [tokens[s:s + length] for s in starts]


def _records(item_index: int, found: SearchResult, baseline: SearchResult,
             natural: list[float], base: dict[str, Any]) -> list[dict[str, Any]]:
    fields = {**base, "item": item_index, "n": 1}
    out = [
        make_record("adv_success", float(bool(found.success)), **fields),
        make_record("adv_objective", found.objective, **fields, start=found.start_objective,
                    steered=found.steered_no_suffix, unsteered=found.reference,
                    suffix=found.suffix_text, suffix_ids=list(map(int, found.suffix_ids)),
                    iterations=found.iterations, evaluations=found.evaluations),
        make_record("adv_xent", found.xent, **fields, unsteered_xent=found.xent_unsteered),
        make_record("random_success", float(bool(baseline.success)), **fields),
        make_record("random_objective", baseline.objective, **fields,
                    evaluations=baseline.evaluations),
        make_record("random_xent", baseline.xent, **fields),
        make_record("natural_xent", sum(natural) / len(natural), **{**fields, "n": len(natural)},
                    windows=natural),
    ]
    return out


def run(cfg: AdversarialConfig) -> dict[str, tuple[float, float, float]]:
    """Search every item not yet stored; print rates and cross-entropies; plot the frontier."""
    if cfg.method not in METHODS:
        raise SteerlabError(f"--search must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.objective not in OBJECTIVES:
        raise SteerlabError(f"--objective must be one of {', '.join(OBJECTIVES)}, got "
                            f"{cfg.objective!r}")
    search_config = _search_config(cfg)  # bad search sizes fail before the model loads
    items = _items(cfg)
    study = EvalRun(cfg.out, "adversarial", cfg.settings())
    lm = load_model(cfg.model)
    vec = SteeringVector.load(cfg.vector, model=lm)
    study.update({"model_revision": lm.revision, "vector_sha256": file_sha256(cfg.vector),
                  "data_sha256": items.sha256[:16]})
    layers = resolve_layers(cfg.layers, lm.n_layers)
    spec = SteeringSpec.at(vec, layers, cfg.value, unit=cfg.unit, positions=cfg.positions)
    from steerlab.eval.behaviour import explain_values

    explain_values(vec, layers, cfg.unit, [cfg.value])
    natural = natural_suffixes(lm, cfg.suffix_length, NATURAL_WINDOWS, cfg.seed)
    base = {"model": lm.model_id, "data": cfg.data, "split": "test", "method": cfg.method,
            "layer": layers[0], "site": vec.site, cfg.unit: cfg.value, "seed": cfg.seed,
            "objective": cfg.objective}
    cells = {cell_id("adversarial", item=i, objective=cfg.objective, method=cfg.method): i
             for i in range(len(items))}
    todo = study.todo(list(cells))
    console.print(f"adversarial: {len(items)} items of {cfg.data}, {cfg.method} "
                  f"{cfg.iterations} iterations × {search_config.candidates} candidates, "
                  f"{cfg.suffix_length}-token suffixes, objective {cfg.objective}")
    with bar(len(todo), f"adversarial search ({cfg.method})", unit="item") as progress:
        for cell in todo:
            index = cells[cell]
            objective = _objective(lm, cfg, items[index], vec, layers)
            found = search(lm, objective, spec, search_config, progress=False)
            baseline = random_search(lm, objective, spec, search_config,
                                     evaluations=found.evaluations, progress=False)
            _, natural_xent = evaluate(lm, objective, spec, natural)
            records = _records(index, found, baseline, natural_xent, base)
            _save_frontier(study, cell, index, found)
            study.add(cell, records)
            progress.set_postfix_str(f"success {int(bool(found.success))}, xent "
                                     f"{found.xent:.2f}")
            progress.update(1)
    return _report(study, cfg, len(items))


def _save_frontier(run: EvalRun, cell: str, index: int, found: SearchResult) -> None:
    replace_cell_rows(run.path("frontiers.jsonl"), cell, [{"item": index, "points": [
        {"objective": p.objective, "xent": p.xent, "text": p.text, "iteration": p.iteration}
        for p in found.frontier]}], what="frontiers")


def _values(records: Sequence[dict[str, Any]], metric: str, objective: str) -> list[float]:
    return [float(r["value"]) for r in records
            if r.get("metric") == metric and r.get("value") is not None
            and (r.get("extra") or {}).get("objective") == objective]


def summarize(records: Sequence[dict[str, Any]], objective: str
              ) -> dict[str, tuple[float, float, float]]:
    """The study's summary from its records (one objective): success rates (Wilson) of the
    search and of the random baseline, mean cross-entropies (t intervals) of the found, random
    and natural suffixes, and the mean objective gain over the steered model. The terminal
    table and the report's section are both built from this.

    Example:
        >>> rec = lambda m, v: {"metric": m, "value": v, "extra": {"objective": "ab_flip",
        ...                                                        "steered": 0.2}}
        >>> records = [rec("adv_success", 1.0), rec("random_success", 0.0),
        ...            rec("adv_objective", 0.7)]
        >>> round(summarize(records, "ab_flip")["objective_gain"][0], 2)
        0.5
    """
    found = _values(records, "adv_success", objective)
    rand = _values(records, "random_success", objective)
    gains = [float(r["value"]) - float(r["extra"]["steered"]) for r in records
             if r.get("metric") == "adv_objective" and r.get("value") is not None
             and (r.get("extra") or {}).get("objective") == objective]
    return {
        "success": stats.wilson(int(sum(found)), len(found)),
        "random_success": stats.wilson(int(sum(rand)), len(rand)),
        "suffix_xent": stats.mean_ci(_values(records, "adv_xent", objective)),
        "random_xent": stats.mean_ci(_values(records, "random_xent", objective)),
        "natural_xent": stats.mean_ci(_values(records, "natural_xent", objective)),
        "objective_gain": stats.mean_ci(gains),
    }


#: The summary table's columns (terminal and report).
SUMMARY_HEADERS = ["suffixes", "success rate [Wilson 95%]",
                   "suffix cross-entropy (nats/token) [95% t]"]


def summary_rows(summary: dict[str, tuple[float, float, float]], method: str
                 ) -> list[list[str]]:
    """The summary table's rows: the search, the random baseline, natural text."""
    return [[f"search ({method})", fmt_ci(*summary["success"]),
             fmt_ci(*summary["suffix_xent"], digits=2)],
            ["random suffixes, same budget", fmt_ci(*summary["random_success"]),
             fmt_ci(*summary["random_xent"], digits=2)],
            ["natural text, same length", "–", fmt_ci(*summary["natural_xent"], digits=2)]]


def _report(run: EvalRun, cfg: AdversarialConfig, n: int) -> dict[str, tuple[float, float, float]]:
    summary = summarize(run.records(), cfg.objective)
    found = _values(run.records(), "adv_success", cfg.objective)
    rows = summary_rows(summary, cfg.method)
    print_table(f"{cfg.data}: reversing steering ({cfg.unit} {cfg.value:g} at layers "
                f"{cfg.layers}) with {cfg.suffix_length}-token suffixes, objective "
                f"{cfg.objective}", SUMMARY_HEADERS, rows,
                caption=f"n = {len(found)} items; success: the steered model with the suffix "
                        "scores at least what the unsteered model did")
    console.print(f"mean objective gain over the steered model: {fmt(summary['objective_gain'][0])}"
                  f" [{fmt(summary['objective_gain'][1])}, {fmt(summary['objective_gain'][2])}]")
    plots = [_frontier_plot(run, cfg)]
    run.finish(plots)
    return summary


def _number(value: float | None) -> float:
    """A stored number (null where it was NaN or infinite: the JSON policy) as a float."""
    return math.nan if value is None else float(value)


def _frontier_plot(run: EvalRun, cfg: AdversarialConfig) -> Path:
    """Each item's Pareto frontier (objective vs the suffix's cross-entropy); natural text's
    mean cross-entropy as the dotted line."""
    path = run.path("adversarial_frontier.png")
    entries = [json.loads(line) for line in
               run.path("frontiers.jsonl").read_text(encoding="utf-8").splitlines() if line]
    shown = sorted(entries, key=lambda e: e["item"])[:MAX_PLOTTED_ITEMS]
    lines = []
    for e in shown:
        points = sorted((_number(p["xent"]), _number(p["objective"])) for p in e["points"])
        lines.append(Line(f"item {e['item']}", [x for x, _ in points], [y for _, y in points]))
    natural = stats.mean_ci(_values(run.records(), "natural_xent", cfg.objective))
    save_png(path, [Curves(f"{cfg.method} Pareto frontiers ({cfg.model})",
                           "suffix cross-entropy (nats/token; dotted: natural text)",
                           f"objective ({cfg.objective}; higher = steering undone)", lines,
                           vline=None if math.isnan(natural[0]) else natural[0])],
             note=f"{len(shown)} of {len(entries)} items shown")
    return path
