"""The cells of ``eval prompting``: the four conditions scored, answered and compared.

Two score cells (the unprompted conditions in one engine pass, the prompted ones in another),
one answer cell per condition (greedy answers, their fluency cost, the refusal phrases and the
judge), then the comparison cell (effects over the baseline, vector − prompt, fluency ratios).
Every cell resumes; the answers go to ``answers.jsonl`` beside the results.

Example:
    >>> CONDITIONS
    ('baseline', 'vector', 'prompt', 'prompt+vector')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from steerlab.data.formats import ABItem
from steerlab.data.sequences import ab_sequences, answer_sequences, question_prompt
from steerlab.eval import behaviour as bh
from steerlab.eval.protocols.perplexity import ratio_ci
from steerlab.eval.protocols.prompting_inputs import Instruction
from steerlab.eval.protocols.sentiment_scores import fluency_ppl
from steerlab.eval.run import EvalRun, stopwatch
from steerlab.eval.store import cell_id, make_record, replace_cell_rows
from steerlab.model.load import LoadedModel
from steerlab.steering.spec import SteeringSpec
from steerlab.util import stats
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector

CONDITIONS = ("baseline", "vector", "prompt", "prompt+vector")
ANSWERS = "answers.jsonl"
Interval = tuple[float, float, float]


class CellSettings(Protocol):
    """What the cells read of the run's config (``PromptingConfig`` has all of it)."""

    model: str
    data: str
    form: str
    positions: str
    seed: int
    batch_size: int
    max_new_tokens: int


@dataclass
class PromptingStudy:
    """What every cell of one run shares."""

    run: EvalRun
    lm: LoadedModel
    vec: SteeringVector
    items: list[ABItem]
    ids: list[str]
    instruction: Instruction
    layer: int
    unit: Unit
    value: float
    cfg: CellSettings
    answered: list[int]  # the items whose answers are generated (the fluency cost)
    judge: Any = None

    def fields(self, condition: str, **extra: Any) -> dict[str, Any]:
        """The record fields of ``condition`` (its value: 0 unless the vector is on)."""
        steered = "vector" in condition
        return {"model": self.cfg.model, "data": bh.data_label(self.cfg.data, self.cfg.form),
                "method": self.vec.method, "site": self.vec.site, "layer": self.layer,
                self.unit: self.value if steered else 0.0, "seed": self.cfg.seed,
                "split": "test", "condition": condition, "positions": self.cfg.positions,
                "n_pairs": self.vec.manifest.get("dataset", {}).get("n_pairs"), **extra}

    def cell(self, kind: str, **parts: Any) -> str:
        """The id of one cell of this run."""
        return cell_id("prompting", kind=kind, layer=self.layer, unit=self.unit,
                       value=f"{self.value:g}", n=len(self.items), **parts)

    def prompted(self, condition: str) -> bool:
        """Whether ``condition`` asks for the behaviour in words."""
        return condition.startswith("prompt")

    def spec(self, condition: str) -> SteeringSpec | None:
        """The steering of ``condition`` (None: unsteered)."""
        if "vector" not in condition:
            return None
        return SteeringSpec.at(self.vec, [self.layer], self.value, unit=self.unit,
                               positions=self.cfg.positions)

    def sequences(self, prompted: bool) -> list[Any]:
        """The scored sequences of every item, with the instruction or without it."""
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


def score_cell(study: PromptingStudy, prompted: bool) -> None:
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


def letter_mass_cell(study: PromptingStudy) -> float:
    """The unsteered, uninstructed mean p(A) + p(B) on the A/B items (measured once, kept)."""
    from steerlab.scoring.ab import score_ab

    cell = study.cell("letter_mass")
    if not study.run.store.done(cell):
        with stopwatch() as took:
            plain = score_ab(study.lm, study.items, batch_size=study.cfg.batch_size)
        mass = [a + b for a, b in zip(plain.p_matching, plain.p_not_matching, strict=True)]
        summary = stats.mean_ci(mass)
        study.run.add(cell, [make_record("letter_mass", summary[0], ci=summary[1:],
                                         n=len(mass), seconds=took[0],
                                         **study.fields("baseline"), item_ids=study.ids)])
    return float(study.run.store.records(cell=cell, metric="letter_mass")[0]["value"])


def fluency_cell(study: PromptingStudy, condition: str) -> None:
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
    replace_cell_rows(study.run.path(ANSWERS), cell, [
        {"condition": condition, "id": i, "prompt": item.question, "answer": text,
         "nll": n, "refusal": r, "score": j, "layer": study.layer,
         study.unit: study.value if "vector" in condition else 0.0}
        for i, item, text, n, r, j in zip(item_ids, items, texts, nll, refusals, judged,
                                          strict=True)], what="answers")
    study.run.add(cell, records)


def _judge(study: PromptingStudy, items: list[ABItem], texts: list[str],
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


def stored(study: PromptingStudy, metric: str, condition: str) -> dict[str, Any] | None:
    """The last stored ``metric`` record of ``condition`` at the study's layer, if any."""
    found = [r for r in study.run.records(metric=metric)
             if (r.get("extra") or {}).get("condition") == condition
             and r.get("layer") == study.layer]
    return found[-1] if found else None


def triple(record: dict[str, Any] | None) -> Interval | None:
    """(value, low, high) of a record; None for no record."""
    if record is None:
        return None
    return bh.effect_triple(record)


def compare(study: PromptingStudy) -> tuple[dict[str, Interval], Interval | None,
                                            dict[str, Interval]]:
    """Effects over the baseline, vector − prompt, and fluency ratios (stored once)."""
    scores = {c: stored(study, "score", c) for c in CONDITIONS}
    per_item = {c: list(r["extra"]["scores"]) for c, r in scores.items() if r is not None}
    nll = {c: (r["extra"]["nll"] if r is not None else None)
           for c in CONDITIONS for r in [stored(study, "fluency_ppl", c)]}
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
               if (t := triple(stored(study, "effect", c))) is not None}
    ratios = {c: t for c in CONDITIONS[1:]
              if (t := triple(stored(study, "fluency_ratio", c))) is not None}
    return effects, triple(stored(study, "difference", "vector")), ratios
