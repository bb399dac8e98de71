"""Steering as a defence at inference time (``eval defence``): refusal of harmful requests,
plain and wrapped in published jailbreak suffixes, against over-refusal of safe ones.

Prompt sets: AdvBench harmful behaviours (plain), the same behaviours each followed by one of
the published GCG suffixes (per suffix, and pooled), and XSTest's 250 safe prompts that look
unsafe (over-refusal). Steering configurations: unsteered; the refusal vector at each strength;
and, given a condition (``steerlab cast fit``), the same vector applied only where the condition
fires (conditional steering). Every prompt is answered greedily; an answer's refusal is judged
by the documented phrase classifier (:mod:`steerlab.eval.refusal`) and, unless disabled, by a
local judge too, with their agreement (raw and Cohen's kappa) reported. Rates come with Wilson
95 % intervals; every (prompt set, configuration) is one resumable cell and its answers go to
``generations.jsonl``.

Example:
    >>> run(DefenceConfig(out="runs/def", vector=Path("refusal.safetensors"), layers="12",
    ...                   values=[0.2, 0.4], limit=20))                      # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from steerlab.data.benchmarks import load_advbench, load_gcg_suffixes, load_xstest
from steerlab.errors import SteerlabError
from steerlab.eval.configs.defence import DefenceConfig
from steerlab.eval.figures import Bars, save_png
from steerlab.eval.judges import JudgeItem, parse_judge
from steerlab.eval.refusal import JUDGE_REFUSAL, agreement, is_refusal
from steerlab.eval.run import EvalRun, file_sha256, stopwatch
from steerlab.eval.store import cell_id, make_record, replace_cell_rows
from steerlab.eval.tables import console, fmt, fmt_ci, print_table
from steerlab.model.load import LoadedModel, load_model
from steerlab.scoring.generate import generate
from steerlab.steering.spec import Condition, SteeringSpec
from steerlab.util import stats
from steerlab.util.parse import resolve_layers
from steerlab.util.progress import bar
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: list[str]
    harmful: bool  # refusing is right (AdvBench) or over-refusal (XSTest safe)


def prompt_sets(limit: int, seed: int, n_suffixes: int) -> list[PromptSet]:
    """AdvBench plain, AdvBench + each GCG suffix, XSTest safe."""
    behaviours = load_advbench(limit, seed)
    sets = [PromptSet("advbench", behaviours, True)]
    for i, suffix in enumerate(load_gcg_suffixes()[:n_suffixes]):
        sets.append(PromptSet(f"advbench+gcg{i}", [f"{b} {suffix}" for b in behaviours], True))
    sets.append(PromptSet("xstest:safe", load_xstest("safe", limit, seed), False))
    return sets


def _configs(vec: SteeringVector, layers: list[int], unit: Unit, values: Sequence[float],
             condition: Condition | None) -> dict[str, list[SteeringSpec]]:
    configs: dict[str, list[SteeringSpec]] = {"unsteered": []}
    short = "s" if unit == "strength" else "c"
    for value in values:
        if value == 0:
            continue
        configs[f"steered {short}={value:g}"] = [SteeringSpec.at(vec, layers, value, unit=unit)]
        if condition is not None:
            configs[f"conditional {short}={value:g}"] = [
                replace(SteeringSpec.at(vec, layers, value, unit=unit), condition=condition)]
    return configs


def run(cfg: DefenceConfig) -> dict[tuple[str, str], tuple[float, float, float]]:
    """Refusal rate per (prompt set, configuration), with intervals; resumable."""
    sets = prompt_sets(cfg.limit, cfg.seed, cfg.suffixes)  # bad data fails before loading
    study = EvalRun(cfg.out, "defence", cfg.settings())
    lm = load_model(cfg.model)
    vec = SteeringVector.load(cfg.vector, model=lm)
    study.update({"model_revision": lm.revision, "vector_sha256": file_sha256(cfg.vector)})
    layers = resolve_layers(cfg.layers, lm.n_layers)
    condition = None
    if cfg.condition is not None:
        cond_vec = SteeringVector.load(cfg.condition, model=lm)
        study.update({"condition_sha256": file_sha256(cfg.condition)})
        condition = Condition.from_vector(cond_vec, layer=cfg.condition_layer,
                                          threshold=cfg.threshold)
        console.print(f"condition: layer {condition.layer}, {condition.mode} similarity "
                      f"{'>' if condition.comparator == 'greater' else '<'} "
                      f"{condition.threshold:+.4f}")
    configs = _configs(vec, layers, cfg.unit, cfg.values, condition)
    from steerlab.eval.behaviour import explain_values

    explain_values(vec, layers, cfg.unit, [v for v in cfg.values if v])
    judge = None
    if cfg.judge and cfg.judge.lower() != "none":
        judge = parse_judge(cfg.judge, {cfg.model: lm})
    cells = {cell_id("defence", set=ps.name, config=name, n=len(ps.prompts),
                     tokens=cfg.max_new_tokens): (ps, name)
             for ps in sets for name in configs}
    todo = study.todo(list(cells))
    with bar(sum(len(cells[c][0].prompts) for c in todo),
             f"defence: {len(sets)} prompt sets × {len(configs)} configurations",
             unit="answer") as progress:
        for cell in todo:
            ps, name = cells[cell]
            progress.set_postfix_str(f"{ps.name}, {name}")
            _measure(study, cell, lm, ps, name, configs[name], judge, cfg)
            progress.update(len(ps.prompts))
    return _report(study, sets, configs, cells, cfg, lm)


def _measure(run: EvalRun, cell: str, lm: LoadedModel, ps: PromptSet, name: str,
             specs: list[SteeringSpec], judge: Any, cfg: DefenceConfig) -> None:
    with stopwatch() as took:
        answers = generate(lm, ps.prompts, row_steering=[specs] * len(ps.prompts),
                           max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
        phrase = [is_refusal(a) for a in answers]
        judged: list[bool] | None = None
        if judge is not None:
            ratings = judge.rate_many([JudgeItem("refusal", None, p, a)
                                       for p, a in zip(ps.prompts, answers, strict=True)])
            judged = [r.score >= JUDGE_REFUSAL for r in ratings]
    fields: dict[str, Any] = {"model": lm.model_id, "data": ps.name, "split": "test",
                              "n": len(answers), "seconds": took[0], "config": name,
                              "harmful": ps.harmful}
    rate = stats.wilson(sum(phrase), len(phrase))
    records = [make_record("refusal_rate", rate[0], ci=rate[1:], **fields)]
    if judged is not None:
        j = stats.wilson(sum(judged), len(judged))
        raw, kappa = agreement(phrase, judged)
        records += [make_record("judge_refusal_rate", j[0], ci=j[1:], **fields),
                    make_record("classifier_agreement", raw, **fields, kappa=kappa)]
    second: list[bool | None] = list(judged) if judged is not None else [None] * len(phrase)
    replace_cell_rows(run.path("generations.jsonl"), cell, [
        {"set": ps.name, "config": name, "prompt": p, "answer": a, "refusal": r,
         "judge_refusal": j_}
        for p, a, r, j_ in zip(ps.prompts, answers, phrase, second, strict=True)],
        what="generations")
    run.add(cell, records)


def _ordered(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


def refusal_table(records: Sequence[dict[str, Any]], set_names: Sequence[str] | None = None,
                  config_names: Sequence[str] | None = None
                  ) -> tuple[list[str], list[list[Any]], dict[tuple[str, str],
                                                              tuple[float, float, float]]]:
    """The study's table from its records: per configuration, the refusal rate (Wilson) on
    AdvBench, on AdvBench with the GCG suffixes (pooled) and on XSTest's safe prompts, and the
    phrase classifier's agreement with the judge (mean κ). Returns the columns, the rows and
    every (set or group, configuration) → rate; the terminal table and the report's section are
    both built from this.

    Example:
        >>> rec = lambda data, config, v: {"metric": "refusal_rate", "value": v, "n": 10,
        ...                                "ci_low": v - 0.1, "ci_high": v + 0.1,
        ...                                "data": data, "extra": {"config": config}}
        >>> cols, rows, rates = refusal_table([rec("advbench", "unsteered", 0.2),
        ...                                    rec("xstest:safe", "unsteered", 0.1)])
        >>> cols
        ['configuration', 'advbench', 'xstest:safe', 'judge κ']
        >>> rates[("advbench", "unsteered")][0]
        0.2
    """
    rates_ = [r for r in records if r.get("metric") == "refusal_rate"]
    sets = list(set_names) if set_names is not None else _ordered([r.get("data")
                                                                    for r in rates_])
    configs = list(config_names) if config_names is not None else _ordered(
        [(r.get("extra") or {}).get("config") for r in rates_])
    cell = {(r.get("data"), (r.get("extra") or {}).get("config")): r for r in rates_}
    out: dict[tuple[str, str], tuple[float, float, float]] = {}
    for (data, config), rec in cell.items():
        out[(str(data), str(config))] = (rec["value"], rec["ci_low"], rec["ci_high"])
    suffixed = [name for name in sets if name.startswith("advbench+gcg")]
    groups = ["advbench", *(["advbench+gcg (pooled)"] if suffixed else []), "xstest:safe"]
    rows = []
    for name in configs:
        row: list[Any] = [name]
        for group in groups:
            members = suffixed if group.endswith("(pooled)") else [group]
            hits = n = 0
            for member in members:
                found = cell.get((member, name))
                if found is not None:
                    hits += round(found["value"] * found["n"])
                    n += found["n"]
            rate = stats.wilson(hits, n)
            out[(group, name)] = rate
            row.append(fmt_ci(*rate, digits=2))
        kappas: list[float] = [
            float(r["extra"]["kappa"]) for r in records
            if r.get("metric") == "classifier_agreement"
            and (r.get("extra") or {}).get("config") == name
            and r["extra"].get("kappa") is not None]
        row.append(fmt(sum(kappas) / len(kappas), 2) if kappas else "–")
        rows.append(row)
    return ["configuration", *groups, "judge κ"], rows, out


def _report(run: EvalRun, sets: list[PromptSet], configs: dict[str, list[SteeringSpec]],
            cells: dict[str, tuple[PromptSet, str]], cfg: DefenceConfig,
            lm: LoadedModel) -> dict[tuple[str, str], tuple[float, float, float]]:
    mine = [r for c in cells for r in run.store.records(cell=c)]
    columns, rows, out = refusal_table(mine, [ps.name for ps in sets], list(configs))
    groups = columns[1:-1]
    suffixed = [ps for ps in sets if ps.name.startswith("advbench+gcg")]
    print_table(f"{lm.model_id}: refusal rate (phrase classifier) — harmful prompts should be "
                "refused, XSTest safe prompts should not", columns, rows,
                caption=f"Wilson 95 % intervals; n = {len(sets[0].prompts)} prompts per set"
                        f"{f', {len(suffixed)} GCG suffixes pooled' if suffixed else ''}; κ: "
                        "agreement of the phrase classifier with the judge")
    plot = run.path("defence_refusal.png")
    series = {}
    for group in groups:
        series[group] = ([out[(group, n)][0] for n in configs],
                         [out[(group, n)][1] for n in configs],
                         [out[(group, n)][2] for n in configs])
    save_png(plot, [Bars(f"{lm.model_id}: refusal under steering (n={len(sets[0].prompts)} "
                         "per set)", "refusal rate", list(configs), series, ylim=(0.0, 1.0))],
             note="error bars: 95 % Wilson interval")
    run.finish([plot])
    if any(math.isnan(v[0]) for v in out.values()):
        raise SteerlabError("defence: a cell has no answers")
    return out
