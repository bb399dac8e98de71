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

import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.data.formats import ABItem
from steerlab.data.loaders import Dataset, load_dataset
from steerlab.data.sequences import ab_sequences, answer_sequences, question_prompt
from steerlab.errors import SteerlabError
from steerlab.eval import behaviour as bh
from steerlab.eval import verdicts as rules
from steerlab.eval.judges.base import TRAIT_DESCRIPTIONS
from steerlab.eval.plots import BarPanel, save_bar_panels
from steerlab.eval.protocols.perplexity import ratio_ci
from steerlab.eval.protocols.sentiment import fluency_ppl
from steerlab.eval.run import EvalRun, file_sha256, stopwatch, text_sha256
from steerlab.eval.store import cell_id, make_record
from steerlab.eval.tables import console, fmt_ci, print_table
from steerlab.model.load import LoadedModel, load_model
from steerlab.steering.spec import SteeringSpec, parse_positions
from steerlab.util import stats
from steerlab.util.io import write_json, write_jsonl
from steerlab.util.parse import resolve_layers
from steerlab.vector import SteeringVector

CONDITIONS = ("baseline", "vector", "prompt", "prompt+vector")
PARTS = ("system", "prefix", "fewshot")
SYSTEM_TEMPLATE = "You are an assistant who shows {name} in every reply. {title} means: {text}."
PREFIX_TEMPLATE = "Reply in a way that shows {name} ({text})."
ANSWERS = "answers.jsonl"
Interval = tuple[float, float, float]


def item_id(item: ABItem) -> str:
    """A stable id of an item: a short hash of its question and both answers.

    Example:
        >>> item_id(ABItem("Q?", "yes", "no")) == item_id(ABItem("Q?", "yes", "no"))
        True
        >>> len(item_id(ABItem("Q?", "yes", "no")))
        12
    """
    text = json.dumps([item.question, item.matching, item.not_matching])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def behaviour_name(data: str) -> str:
    """The behaviour a dataset spec names: ``caa:refusal`` → ``refusal``, a file → its stem.

    Example:
        >>> behaviour_name("caa:refusal"), behaviour_name("builtin:optimism_open")
        ('refusal', 'optimism')
        >>> behaviour_name("data/my-trait.json")
        'my-trait'
    """
    name = data.split(":", 1)[1] if ":" in data and not Path(data).exists() else Path(data).stem
    for suffix in ("_open", "_pairs", "_statements"):
        name = name.removesuffix(suffix)
    return name


@dataclass(frozen=True)
class Instruction:
    """The behaviour asked for in words: system prompt, user-turn prefix, few-shot turns."""

    behaviour: str
    text: str  # the description (or --instruction) the prompts are made from
    system: str | None
    prefix: str | None
    shots: tuple[ABItem, ...] = ()

    def context(self) -> list[dict[str, str]]:
        """The few-shot turns: user question, assistant matching answer, for each example."""
        turns = []
        for shot in self.shots:
            turns += [{"role": "user", "content": shot.question},
                      {"role": "assistant", "content": shot.matching.strip()}]
        return turns

    def question(self, question: str) -> str:
        """The user turn: the prefix (if any), a blank line, the question."""
        if not self.prefix:
            return question
        return f"{self.prefix}\n\n{question}" if question else self.prefix

    def apply(self, item: ABItem) -> ABItem:
        """``item`` with its question behind the prefix (answers unchanged)."""
        return ABItem(self.question(item.question), item.matching, item.not_matching)

    def describe(self) -> dict[str, Any]:
        """Everything the prompted conditions read (stored in the run's settings)."""
        return {"behaviour": self.behaviour, "text": self.text, "system": self.system,
                "prefix": self.prefix, "shot_ids": [item_id(s) for s in self.shots]}


def instruction_for(data: str, instruction: str | None, parts: Sequence[str], shots: int,
                    train: Sequence[ABItem], test: Sequence[ABItem],
                    seed: int = 0) -> tuple[Instruction | None, str]:
    """The :class:`Instruction` for ``data`` (or why there is none).

    The words: ``instruction`` if given, else the behaviour's description
    (:data:`~steerlab.eval.judges.base.TRAIT_DESCRIPTIONS`). The few-shot examples: a seeded
    draw of ``shots`` train items whose question is no test item's question.

    Example:
        >>> train = [ABItem(f"T{i}?", "(A)", "(B)") for i in range(5)]
        >>> got, why = instruction_for("caa:refusal", None, PARTS, 2, train, [train[0]])
        >>> got.system.startswith("You are an assistant who shows refusal"), len(got.shots)
        (True, 2)
        >>> train[0] in got.shots
        False
        >>> instruction_for("caa:nothing-known", None, PARTS, 2, train, [])[0] is None
        True
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise SteerlabError(f"--prompt-parts: expected some of {', '.join(PARTS)}, got "
                            f"{list(parts)}")
    name = behaviour_name(data)
    if instruction is not None and instruction.strip():
        text = " ".join(instruction.split())
        system, prefix = text, text
    elif name in TRAIT_DESCRIPTIONS:
        text = TRAIT_DESCRIPTIONS[name]
        words = name.replace("-", " ").replace("_", " ")
        system = SYSTEM_TEMPLATE.format(name=words, title=words[:1].upper() + words[1:],
                                        text=text)
        prefix = PREFIX_TEMPLATE.format(name=words, text=text)
    else:
        return None, (f"no instruction for {name!r}: the behaviour has no description "
                      "(steerlab.eval.judges.base.TRAIT_DESCRIPTIONS); give --instruction")
    examples: tuple[ABItem, ...] = ()
    if "fewshot" in parts and shots > 0:
        held_out = {item.question for item in test} | {item_id(item) for item in test}
        pool = [item for item in train
                if item.question not in held_out and item_id(item) not in held_out]
        if not pool:
            return None, f"{data}: no train item left for few-shot examples"
        picked = sorted(random.Random(seed).sample(range(len(pool)), min(shots, len(pool))))
        examples = tuple(pool[i] for i in picked)
    return Instruction(name, text, system if "system" in parts else None,
                       prefix if "prefix" in parts else None, examples), ""


def split_items(data: str, split: str, seed: int, form: str) -> Dataset:
    """One split of ``data`` as scored items in ``form`` (``open``: the options' texts).

    Plain contrast pairs become open answers to an empty question (as in ``eval sweep``).
    """
    bh.check_format(form)
    ds = load_dataset(data, split=split, seed=seed)
    if ds.kind == "pairs":
        if form == "ab":
            raise SteerlabError(f"{data}: plain contrast pairs have no A/B letters; use "
                                "--format open")
        return ds.as_answers()
    if form == "open":
        ds = ds.open_answers()
        if not len(ds):
            raise SteerlabError(f"{data}: no item of the {split} split has parseable "
                                "'Choices: (A) ... (B) ...' options for --format open")
    return ds


def resolve_steering(vec: SteeringVector, layers: str | None, unit: str | None,
                     value: float | None, n_layers: int) -> tuple[int, str, float, str]:
    """``(layer, unit, value, where from)``: the given ones, else the manifest's
    ``recommended`` layer and strength (written by ``eval sweep``), else the vector's only
    layer; one-line errors otherwise.

    Example:
        >>> resolve_steering(vec, None, None, None, 30)                  # doctest: +SKIP
        (14, 'strength', 0.4, 'recommended by eval sweep on caa:refusal/open val ...')
    """
    recommended = vec.manifest.get("recommended") or {}
    source = []
    if layers is None:
        if isinstance(recommended.get("layer"), int):
            layer = int(recommended["layer"])
            source.append("layer from the vector's manifest")
        elif len(vec.layers) == 1:
            layer = vec.layers[0]
        else:
            raise SteerlabError(f"give --layers (one layer; the vector has {vec.layers} and "
                                "no recommended layer)")
    else:
        got = resolve_layers(layers, n_layers)
        if len(got) != 1:
            raise SteerlabError(f"--layers: the comparison steers at one layer, got {got}")
        layer = got[0]
    if value is None:
        unit = unit or "strength"
        if not isinstance(recommended.get(unit), int | float):
            raise SteerlabError(f"give --strengths (one value; the vector's manifest "
                                f"recommends no {unit})")
        value = float(recommended[unit])
        source.append(f"{unit} from the vector's manifest")
    if value == 0:
        raise SteerlabError("the vector's value must be non-zero (0 is the baseline)")
    if layer not in vec.layers:
        raise SteerlabError(f"the vector has no direction for layer {layer}; it has {vec.layers}")
    note = (f"{'; '.join(source)} ({recommended.get('chosen_by', 'eval sweep')})"
            if source else "given")
    return layer, unit or "strength", float(value), note


@dataclass
class PromptingConfig:
    """Everything ``eval prompting`` measures with."""

    out: str | Path
    data: str
    vector: Path
    layers: str | None = None  # None: the manifest's recommended layer (or the only one)
    unit: str | None = None
    value: float | None = None  # None: the manifest's recommended strength
    model: str = "smollm2-135m"
    instruction: str | None = None
    parts: Sequence[str] = PARTS
    shots: int = 3
    form: str = "open"
    positions: str = "all"
    limit: int = 40
    fluency_limit: int = 0  # answers generated for the fluency cost (0 = every scored item)
    max_new_tokens: int = 32
    judge: str | None = None  # also rate the answers (e.g. axbench:local:qwen2.5-coder-0.5b)
    seed: int = 0
    batch_size: int = 16
    write_verdict: bool = True  # verdicts.json in --out (the audit writes its own)

    def settings(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "vector": str(self.vector),
                "layers": self.layers, "unit": self.unit, "value": self.value,
                "instruction": self.instruction, "prompt_parts": list(self.parts),
                "shots": self.shots, "format": self.form, "positions": self.positions,
                "limit": self.limit, "fluency_limit": self.fluency_limit,
                "max_new_tokens": self.max_new_tokens, "judge": self.judge, "seed": self.seed}


@dataclass
class PromptingResult:
    """Per-condition scores, effects and fluency; the head-to-head difference; the verdict."""

    layer: int | None
    unit: str
    value: float | None
    verdict: rules.Verdict
    scores: dict[str, Interval] = field(default_factory=dict)
    effects: dict[str, Interval] = field(default_factory=dict)
    fluency: dict[str, Interval] = field(default_factory=dict)
    difference: Interval | None = None
    item_ids: dict[str, list[str]] = field(default_factory=dict)
    n: int = 0


@dataclass
class _Study:
    """What every cell of one run shares."""

    run: EvalRun
    lm: LoadedModel
    vec: SteeringVector
    items: list[ABItem]
    ids: list[str]
    instruction: Instruction
    layer: int
    unit: str
    value: float
    cfg: PromptingConfig
    answered: list[int]  # the items whose answers are generated (the fluency cost)
    judge: Any = None

    def fields(self, condition: str, **extra: Any) -> dict[str, Any]:
        steered = "vector" in condition
        return {"model": self.cfg.model, "data": bh.data_label(self.cfg.data, self.cfg.form),
                "method": self.vec.method, "site": self.vec.site, "layer": self.layer,
                self.unit: self.value if steered else 0.0, "seed": self.cfg.seed,
                "split": "test", "condition": condition, "positions": self.cfg.positions,
                "n_pairs": self.vec.manifest.get("dataset", {}).get("n_pairs"), **extra}

    def cell(self, kind: str, **parts: Any) -> str:
        return cell_id("prompting", kind=kind, layer=self.layer, unit=self.unit,
                       value=f"{self.value:g}", n=len(self.items), **parts)

    def prompted(self, condition: str) -> bool:
        return condition.startswith("prompt")

    def spec(self, condition: str) -> SteeringSpec | None:
        if "vector" not in condition:
            return None
        return SteeringSpec.at(self.vec, [self.layer], self.value, unit=self.unit,
                               positions=self.cfg.positions)

    def sequences(self, prompted: bool) -> list[Any]:
        tok = self.lm.tokenizer
        system = self.instruction.system if prompted else None
        context = self.instruction.context() if prompted else []
        items = [self.instruction.apply(i) for i in self.items] if prompted else self.items
        if self.cfg.form == "open":
            return [s for item in items for s in answer_sequences(tok, item, system, context)]
        return [ab_sequences(tok, item, system, context) for item in items]

    def prompt_rows(self, prompted: bool) -> tuple[list[list[int]], list[int]]:
        """Token ids of each answered item's chat prompt (no answer), its instruction length."""
        from steerlab.model.prompts import prompt_ids

        system = self.instruction.system if prompted else None
        context = self.instruction.context() if prompted else []
        rows, lengths = [], []
        for item in (self.items[i] for i in self.answered):
            question = self.instruction.question(item.question) if prompted else item.question
            ids, length = prompt_ids(self.lm.tokenizer, question_prompt(question, context),
                                     system=system)
            rows.append(ids)
            lengths.append(length)
        return rows, lengths


def _score_cell(study: _Study, prompted: bool) -> None:
    """Score the two conditions without (or with) the instruction: value 0 and the vector."""
    from steerlab.scoring.sweep import SweepEngine

    pair = ("prompt", "prompt+vector") if prompted else ("baseline", "vector")
    cell = study.cell("score", prompted=prompted)
    if study.run.store.done(cell):
        return
    with stopwatch() as took:
        engine = SweepEngine(study.lm, batch_size=study.cfg.batch_size)
        results = engine.score(study.sequences(prompted), study.vec, [[study.layer]],
                               [0.0, study.value], unit=study.unit,
                               positions=study.cfg.positions)
    records = []
    for condition, value in zip(pair, (0.0, study.value), strict=True):
        res = results[(study.layer, value)]
        records.append(make_record(
            "score", res.mean, ci=res.ci95, n=res.n, seconds=took[0] / 2,
            **study.fields(condition), item_ids=study.ids, scores=list(res.scores),
            propensities=list(res.propensities)))
    study.run.add(cell, records)


def _fluency_cell(study: _Study, condition: str) -> None:
    """Greedy answers under ``condition``, scored by the plain model given the bare question."""
    from steerlab.scoring.generate import generate_ids
    from steerlab.scoring.likelihood import continuation_nll

    cell = study.cell("answers", condition=condition, tokens=study.cfg.max_new_tokens,
                      answered=len(study.answered))
    if study.run.store.done(cell):
        return
    prompted = study.prompted(condition)
    items = [study.items[i] for i in study.answered]
    item_ids = [study.ids[i] for i in study.answered]
    with stopwatch() as took:
        rows, lengths = study.prompt_rows(prompted)
        ids = generate_ids(study.lm, rows, study.spec(condition), instruction_lengths=lengths,
                           max_new_tokens=study.cfg.max_new_tokens,
                           batch_size=study.cfg.batch_size)
        bare, _ = study.prompt_rows(False)
        keep = [i for i, x in enumerate(ids) if x]
        nll_rows = continuation_nll(study.lm, [bare[i] + ids[i] for i in keep],
                                    [len(bare[i]) for i in keep], None,
                                    batch_size=study.cfg.batch_size, desc="fluency") \
            if keep else []
    nll: list[float | None] = [None] * len(ids)
    for i, row in zip(keep, nll_rows, strict=True):
        nll[i] = sum(row) / len(row)
    texts = [study.lm.tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
    ppl = fluency_ppl(nll)
    fields = study.fields(condition, n=len(keep), seconds=took[0],
                          max_new_tokens=study.cfg.max_new_tokens)
    records = [make_record("fluency_ppl", ppl[0], ci=ppl[1:], **fields, item_ids=item_ids,
                           nll=nll, examples=texts[:3])]
    refusals: list[bool | None] = [None] * len(texts)
    if study.instruction.behaviour == "refusal":
        from steerlab.eval.refusal import is_refusal

        refusals = [is_refusal(t) for t in texts]
        rate = stats.wilson(sum(bool(r) for r in refusals), len(texts))
        records.append(make_record("refusal_rate", rate[0], ci=rate[1:],
                                   **{**fields, "n": len(texts)}, item_ids=item_ids,
                                   refused=refusals, classifier="phrase"))
    judged: list[float | None] = [None] * len(texts)
    if study.judge is not None:
        judged = _judge(study, items, texts, refusals, fields, item_ids, records)
    _append_answers(study.run.path(ANSWERS), cell, [
        {"condition": condition, "id": i, "prompt": item.question, "answer": text,
         "nll": n, "refusal": r, "score": j, "layer": study.layer,
         study.unit: study.value if "vector" in condition else 0.0}
        for i, item, text, n, r, j in zip(item_ids, items, texts, nll, refusals, judged,
                                          strict=True)])
    study.run.add(cell, records)


def _judge(study: _Study, items: list[ABItem], texts: list[str],
           refusals: list[bool | None], fields: dict[str, Any], item_ids: list[str],
           records: list[dict[str, Any]]) -> list[float | None]:
    """The judge's rating of each answer (AxBench: its three aspects too), and where the phrase
    classifier also applies, their agreement (raw and Cohen's kappa)."""
    from steerlab.eval.judges import AxBenchJudge, JudgeItem
    from steerlab.eval.refusal import JUDGE_REFUSAL, agreement

    asked = [JudgeItem(study.instruction.behaviour, None, item.question, text)
             for item, text in zip(items, texts, strict=True)]
    where = {**fields, "n": len(texts), "judge": study.judge.name}
    if isinstance(study.judge, AxBenchJudge):
        rated = study.judge.rate_aspects(asked)
        scores = [r.aggregate for r in rated]
        for aspect in ("concept", "instruction", "fluency"):
            got = [float(getattr(r, aspect)) for r in rated]
            mean = stats.mean_ci(got, bounds=(0.0, 2.0))
            records.append(make_record(f"axbench_{aspect}", mean[0], ci=mean[1:], **where,
                                       scores=got))
        present = [r.concept >= 1.0 for r in rated]
    else:
        scores = study.judge.score_many(asked)
        present = [s >= JUDGE_REFUSAL for s in scores]
    low, high = study.judge.scale if hasattr(study.judge, "scale") else (1.0, 10.0)
    mean = stats.mean_ci(scores, bounds=(low, high))
    records.append(make_record("judge_score", mean[0], ci=mean[1:], **where, scores=scores,
                               item_ids=item_ids))
    if all(r is not None for r in refusals):
        raw, kappa = agreement([bool(r) for r in refusals], present)
        records.append(make_record("classifier_agreement", raw, **where, kappa=kappa,
                                   classifiers="phrase vs judge"))
    return list(scores)


def _append_answers(path: Path, cell: str, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``answers.jsonl`` with this cell's rows replacing any earlier ones."""
    kept = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("cell") != cell:
                kept.append(row)
    kept += [{"cell": cell, **row} for row in rows]
    write_jsonl(path, kept)


def _stored(study: _Study, metric: str, condition: str) -> dict[str, Any] | None:
    found = [r for r in study.run.records(metric=metric)
             if (r.get("extra") or {}).get("condition") == condition
             and r.get("layer") == study.layer]
    return found[-1] if found else None


def _triple(record: dict[str, Any] | None) -> Interval | None:
    if record is None:
        return None
    return bh.effect_triple(record)


def _compare(study: _Study) -> tuple[dict[str, Interval], Interval | None,
                                     dict[str, Interval]]:
    """Effects over the baseline, vector − prompt, and fluency ratios (stored once)."""
    scores = {c: _stored(study, "score", c) for c in CONDITIONS}
    per_item = {c: list(r["extra"]["scores"]) for c, r in scores.items() if r is not None}
    nll = {c: (r["extra"]["nll"] if r is not None else None)
           for c in CONDITIONS for r in [_stored(study, "fluency_ppl", c)]}
    cell = study.cell("compare", tokens=study.cfg.max_new_tokens)
    if not study.run.store.done(cell) and len(per_item) == len(CONDITIONS):
        base = per_item["baseline"]
        records = []
        for condition in CONDITIONS[1:]:
            eff = stats.mean_ci([a - b for a, b in zip(per_item[condition], base, strict=True)],
                                bounds=(-1.0, 1.0))
            records.append(make_record("effect", eff[0], ci=eff[1:], n=len(base),
                                       **study.fields(condition), versus="baseline"))
            pairs = [(a, b) for a, b in zip(nll[condition] or [], nll["baseline"] or [],
                                            strict=True) if a is not None and b is not None]
            if pairs:
                ratio = ratio_ci([a for a, _ in pairs], [b for _, b in pairs], study.cfg.seed)
                records.append(make_record("fluency_ratio", ratio[0], ci=ratio[1:],
                                           n=len(pairs), **study.fields(condition),
                                           versus="baseline"))
        diff = stats.mean_ci([a - b for a, b in zip(per_item["vector"], per_item["prompt"],
                                                    strict=True)], bounds=(-1.0, 1.0))
        records.append(make_record("difference", diff[0], ci=diff[1:], n=len(base),
                                   **study.fields("vector"), versus="prompt"))
        study.run.add(cell, records)
    effects = {c: t for c in CONDITIONS[1:]
               if (t := _triple(_stored(study, "effect", c))) is not None}
    ratios = {c: t for c in CONDITIONS[1:]
              if (t := _triple(_stored(study, "fluency_ratio", c))) is not None}
    return effects, _triple(_stored(study, "difference", "vector")), ratios


def _report(study: _Study, effects: dict[str, Interval],
            ratios: dict[str, Interval]) -> list[list[str]]:
    rows = []
    for condition in CONDITIONS:
        score = _stored(study, "score", condition)
        ppl = _stored(study, "fluency_ppl", condition)
        refusal = _stored(study, "refusal_rate", condition)
        judged = _stored(study, "judge_score", condition)
        eff, ratio = effects.get(condition), ratios.get(condition)
        rows.append([condition, _ci(_triple(score)), "–" if eff is None else _ci(eff),
                     _ci(_triple(ppl), 2), "–" if ratio is None else _ci(ratio),
                     _ci(_triple(refusal), 2) if refusal else "–",
                     _ci(_triple(judged), 2) if judged else "–",
                     str(score["n"]) if score else "–"])
    return rows


def _ci(triple: Interval | None, digits: int = 3) -> str:
    return "–" if triple is None else fmt_ci(*triple, digits)


def _plot(study: _Study, effects: dict[str, Interval], ratios: dict[str, Interval]) -> Path:
    scores = [_triple(_stored(study, "score", c)) or (math.nan,) * 3 for c in CONDITIONS]
    ratio = [ratios.get(c, (1.0, 1.0, 1.0) if c == "baseline" else (math.nan,) * 3)
             for c in CONDITIONS]
    path = study.run.path("prompting.png")

    def band(rows: list[Any]) -> tuple[list[float], list[float], list[float]]:
        return ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    save_bar_panels(path, [
        BarPanel("behaviour score", list(CONDITIONS), {"score": band(scores)},
                 "behaviour score", (0.0, 1.0)),
        BarPanel("fluency cost of the answers", list(CONDITIONS), {"ratio": band(ratio)},
                 "perplexity ratio vs baseline")],
        title=f"{study.cfg.data} on {study.cfg.model}: steering (layer {study.layer}, "
              f"{study.unit} {study.value:g}) vs prompting (n={len(study.items)} test items)",
        bars="score: 95 % t interval over items; ratio: 95 % paired bootstrap over items")
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
    study = _Study(study_run, lm, vec, items, ids, instruction, layer, unit, value, cfg,
                   answered, judge)
    write_json(study_run.path("instruction.json"), instruction.describe(), what="instruction")
    for prompted in (False, True):
        _score_cell(study, prompted)
    for condition in CONDITIONS:
        _fluency_cell(study, condition)
    effects, difference, ratios = _compare(study)
    verdict = rules.judge_prompting(difference, effects.get("vector"), effects.get("prompt"),
                                    combined_effect=effects.get("prompt+vector"),
                                    fluency=ratios)
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
    scores = {c: t for c in CONDITIONS if (t := _triple(_stored(study, "score", c)))}
    ids_by = {c: list((r or {}).get("extra", {}).get("item_ids", []))
              for c in CONDITIONS for r in [_stored(study, "score", c)]}
    return PromptingResult(layer, unit, value, verdict, scores, effects, ratios, difference,
                           ids_by, len(items))
