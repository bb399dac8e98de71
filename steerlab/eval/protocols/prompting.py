"""Is steering worth it? The vector against asking for the behaviour (``eval prompting``).

AxBench (Wu et al. 2025) found that simply asking for a concept beats steering towards it. This
study puts a user's own vector against that baseline on the **same test items** with the
**same scorer** the behaviour studies use (the sweep engine: the open-answer score
p(matching reply) / (p(matching) + p(other)) over whole replies, or CAA's letter score with
``--format ab``; the same seeded ``--limit`` subset of the test split as ``eval sweep``):

* ``baseline`` — the item as the sweep scores it, unsteered;
* ``vector`` — the vector at one layer and value (``--layers`` / ``--strengths``, else the
  ``recommended`` layer and strength ``eval sweep`` wrote into the vector's manifest);
* ``prompt`` — the behaviour asked for in words, unsteered: a system prompt, a user-turn prefix
  and ``--shots`` few-shot examples (question → matching answer) drawn, seeded, from the
  **train** split (never the test split; an example whose question is a test question is left
  out). ``--prompt-parts`` picks which of the three are used;
* ``prompt+vector`` — both at once.

Every record carries the ids of the items it scored (``item_ids``: a hash of question and
answers), so the same items can be checked across conditions.

The words come from the behaviour's description (the dataset's name, e.g. ``refusal`` of
``caa:refusal``, looked up in the descriptions the judges read,
:data:`steerlab.eval.judges.base.TRAIT_DESCRIPTIONS`) or from ``--instruction TEXT`` (then used
as both the system prompt and the user-turn prefix). A behaviour with neither is *not
measurable*.

**Fluency cost.** Each condition answers the test questions greedily (``--max-new-tokens``;
``--fluency-limit N``: a seeded N of the scored items, the same N for every condition);
the plain model (unsteered, no instruction) scores each answer given the bare question, as
``eval sentiment`` scores completions: ``fluency_ppl`` = exp(mean per-token NLL) with exp of
its 95 % t interval, and ``fluency_ratio`` = exp(mean paired NLL difference vs the baseline's
answer to the same question) with a seeded paired bootstrap over items (as ``eval
perplexity``'s ratio). Greedy answers are the plain model's own likeliest text, so every other
condition pays something; compare the vector's ratio with the prompt's. For ``refusal`` the
phrase classifier (:func:`steerlab.eval.refusal.is_refusal`) also gives each condition's
``refusal_rate`` of its answers (Wilson interval). With ``--judge`` (e.g.
``axbench:local:qwen2.5-coder-0.5b``, AxBench's concept / instruction / fluency aggregate, see
:mod:`steerlab.eval.judges.axbench`) every answer is also rated (``judge_score``; AxBench's three
aspects as ``axbench_concept`` / ``_instruction`` / ``_fluency``), and where the phrase
classifier applies too, their agreement (``classifier_agreement``: raw, with Cohen's kappa;
a concept rating ≥ 1, or a 1..10 rating ≥ 5.5, counts as a refusal).

**Effects and verdict.** Each condition's ``effect`` is its paired mean score difference over
the baseline (Student-t 95 %, clipped to [−1, 1]); ``difference`` is vector − prompt, item by
item. :func:`steerlab.eval.verdicts.judge_prompting` turns it into *holds* (steering beats
prompting), *does not hold* (prompting beats steering), *inconclusive* or *not measurable*.

Cells (resumable): the two unprompted conditions in one engine pass, the two prompted ones in
another, one generation cell per condition, then the comparisons.

Example:
    $ steerlab eval prompting --data caa:refusal --vector runs/refusal/vector.safetensors \\
          --layers 14 --strengths 0.4 --limit 40 -o runs/refusal-prompting
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.eval import behaviour as bh
from steerlab.eval import verdicts as rules
from steerlab.eval.configs.prompting import PromptingConfig
from steerlab.eval.figures import Bars, save_png
from steerlab.eval.protocols.prompting_cells import (
    CONDITIONS,
    Interval,
    PromptingStudy,
    compare,
    fluency_cell,
    letter_mass_cell,
    score_cell,
    stored,
    triple,
)
from steerlab.eval.protocols.prompting_inputs import (
    instruction_for,
    item_id,
    resolve_steering,
    split_items,
)
from steerlab.eval.run import (
    EvalRun,
    file_sha256,
    text_sha256,
)
from steerlab.eval.tables import console, fmt_ci, print_table
from steerlab.model.load import load_model
from steerlab.steering.spec import parse_positions
from steerlab.util.io import write_json
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector


@dataclass
class PromptingResult:
    """Per-condition scores, effects and fluency; the head-to-head difference; the verdict."""

    layer: int | None
    unit: Unit
    value: float | None
    verdict: rules.Verdict
    scores: dict[str, Interval] = field(default_factory=dict)
    effects: dict[str, Interval] = field(default_factory=dict)
    fluency: dict[str, Interval] = field(default_factory=dict)
    difference: Interval | None = None
    item_ids: dict[str, list[str]] = field(default_factory=dict)
    n: int = 0


def _report(study: PromptingStudy, effects: dict[str, Interval],
            ratios: dict[str, Interval]) -> list[list[str]]:
    rows = []
    for condition in CONDITIONS:
        score = stored(study, "score", condition)
        ppl = stored(study, "fluency_ppl", condition)
        refusal = stored(study, "refusal_rate", condition)
        judged = stored(study, "judge_score", condition)
        eff, ratio = effects.get(condition), ratios.get(condition)
        rows.append([condition, _ci(triple(score)), "–" if eff is None else _ci(eff),
                     _ci(triple(ppl), 2), "–" if ratio is None else _ci(ratio),
                     _ci(triple(refusal), 2) if refusal else "–",
                     _ci(triple(judged), 2) if judged else "–",
                     str(score["n"]) if score else "–"])
    return rows


def _ci(interval: Interval | None, digits: int = 3) -> str:
    return "–" if interval is None else fmt_ci(*interval, digits)


def _plot(study: PromptingStudy, effects: dict[str, Interval],
          ratios: dict[str, Interval]) -> Path:
    scores = [triple(stored(study, "score", c)) or (math.nan,) * 3 for c in CONDITIONS]
    ratio = [ratios.get(c, (1.0, 1.0, 1.0) if c == "baseline" else (math.nan,) * 3)
             for c in CONDITIONS]
    path = study.run.path("prompting.png")

    def band(rows: list[Any]) -> tuple[list[float], list[float], list[float]]:
        return ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    save_png(path, [
        Bars("behaviour score", "behaviour score", list(CONDITIONS), {"score": band(scores)},
             (0.0, 1.0)),
        Bars("fluency cost of the answers", "perplexity ratio vs baseline", list(CONDITIONS),
             {"ratio": band(ratio)}, hline=1.0)],
        title=f"{study.cfg.data} on {study.cfg.model}: steering (layer {study.layer}, "
              f"{study.unit} {study.value:g}) vs prompting (n={len(study.items)} test items)",
        note="error bars: score: 95 % t interval over items; ratio: 95 % paired bootstrap over "
             "items")
    return path


def run(cfg: PromptingConfig) -> PromptingResult:
    """Measure (or resume) the four conditions, compare them, judge which wins."""
    parse_positions(cfg.positions)
    if cfg.shots < 0:
        raise SteerlabError(f"--shots must be 0 or more, got {cfg.shots}")
    if cfg.fluency_limit < 0:
        raise SteerlabError(f"--fluency-limit must be 0 (all) or more, got {cfg.fluency_limit}")
    if cfg.judge:
        from steerlab.eval.judges import split_judge_spec

        split_judge_spec(cfg.judge, allow_axbench=True)
    test = split_items(cfg.data, "test", cfg.seed, cfg.form)
    items = list(bh.ab_items(test.subset(cfg.limit, cfg.seed) if cfg.limit else test,
                             "eval prompting"))
    train = split_items(cfg.data, "train", cfg.seed, cfg.form)
    instruction, why = instruction_for(cfg.data, cfg.instruction, cfg.parts, cfg.shots,
                                       list(bh.ab_items(train, "few-shot examples")), items,
                                       cfg.seed)
    study_run = EvalRun(cfg.out, "prompting", cfg.settings())
    study_run.update({"data_sha256": test.sha256[:16]})
    lm = load_model(cfg.model)
    vec = SteeringVector.load(cfg.vector, model=lm)
    layer, unit, value, source = resolve_steering(vec, cfg.layers, cfg.unit, cfg.value,
                                                  lm.n_layers)
    study_run.update({"model_revision": lm.revision, "vector_sha256": file_sha256(cfg.vector),
                      "layer": layer, "unit_used": unit, "value_used": value})
    if instruction is None:
        verdict = rules.judge_prompting(None, missing=why)
        console.print(f"not measurable: {why}")
        if cfg.write_verdict:
            write_json(study_run.path("verdicts.json"), [verdict.as_dict()], what="verdicts")
        return PromptingResult(layer, unit, value, verdict)
    study_run.update({"instruction_sha256": text_sha256(json.dumps(instruction.describe()))})
    bh.explain_values(vec, [layer], unit, [value])
    console.print(f"steering: layer {layer}, {unit} {value:g} ({source}); prompting: "
                  f"{', '.join(cfg.parts)} ({len(instruction.shots)} train examples); "
                  f"{len(items)} test items")
    ids = [item_id(i) for i in items]
    answered = list(range(len(items)))
    if 0 < cfg.fluency_limit < len(items):
        answered = sorted(random.Random(cfg.seed).sample(answered, cfg.fluency_limit))
    judge = None
    if cfg.judge:
        from steerlab.eval.judges import parse_judge

        judge = parse_judge(cfg.judge, {cfg.model: lm}, progress=False, allow_axbench=True)
    study = PromptingStudy(study_run, lm, vec, items, ids, instruction, layer, unit, value,
                           cfg, answered, judge)
    write_json(study_run.path("instruction.json"), instruction.describe(), what="instruction")
    # the letter score means something only if the model answers A/B at all
    mass = letter_mass_cell(study) if cfg.form == "ab" else None
    for prompted in (False, True):
        score_cell(study, prompted)
    for condition in CONDITIONS:
        fluency_cell(study, condition)
    effects, difference, ratios = compare(study)
    verdict = rules.judge_prompting(difference, effects.get("vector"), effects.get("prompt"),
                                    combined_effect=effects.get("prompt+vector"),
                                    fluency=ratios, letter_mass=mass)
    print_table(f"steering vs prompting: {cfg.data} on {cfg.model}, layer {layer}, "
                f"{unit} {value:g}",
                ["condition", "score [95% CI]", "effect vs baseline", "fluency ppl",
                 "fluency ratio", "refusal rate (phrases)", "judge", "n"],
                _report(study, effects, ratios),
                caption=f"{bh.INTERVALS}; fluency: the plain model's perplexity of each "
                        f"condition's greedy answers to {len(study.answered)} of the items, "
                        "ratio = paired bootstrap over them")
    console.print(f"[bold]{verdict.verdict}[/bold]: {verdict.reason}")
    for warning in verdict.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if cfg.write_verdict:
        write_json(study_run.path("verdicts.json"), [verdict.as_dict()], what="verdicts")
    plot = _plot(study, effects, ratios)
    study_run.finish([plot])
    scores = {c: t for c in CONDITIONS if (t := triple(stored(study, "score", c)))}
    ids_by = {c: list((r or {}).get("extra", {}).get("item_ids", []))
              for c in CONDITIONS for r in [stored(study, "score", c)]}
    return PromptingResult(layer, unit, value, verdict, scores, effects, ratios, difference,
                           ids_by, len(items))
