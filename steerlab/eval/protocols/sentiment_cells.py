"""The cells of ``eval sentiment``: completions, their scores, and their records.

One cell is one (prompt set, layer, value): every prompt continued ``samples`` times under the
steering, scored (raw, with the steering words masked, and by VADER beside the classifier),
and the unsteered model's NLL of each completion. :func:`cell_records` turns that into tidy
records; :func:`measure_set` measures a prompt set's baseline and cells, resumably.

Example:
    >>> import torch
    >>> rows_summed(SteeringVector.from_directions({0: torch.ones(2, 3)})).directions[0].shape
    torch.Size([3])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steerlab.eval.protocols.sentiment_scores import (
    KINDS,
    ScoreKind,
    Scorer,
    contains_words,
    fluency_ppl,
    mask_words,
    paired_shift,
    ppl_ratio,
    rate_above,
    success_rate,
)
from steerlab.eval.run import EvalRun, stopwatch
from steerlab.eval.store import cell_id, make_record
from steerlab.model.load import LoadedModel
from steerlab.scoring.generate import GREEDY, Sampling, generate_ids
from steerlab.scoring.likelihood import continuation_nll
from steerlab.steering.spec import SteeringSpec
from steerlab.util import stats
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector


def rows_summed(vec: SteeringVector) -> SteeringVector:
    """A position-resolved (ActAdd) vector as one direction per layer: its rows summed.

    Example:
        >>> import torch
        >>> v = SteeringVector.from_directions({1: torch.tensor([[0.0, 0.0], [1.0, 2.0]])})
        >>> rows_summed(v).directions[1].tolist()
        [1.0, 2.0]
    """
    return SteeringVector({k: d.sum(0) if d.ndim == 2 else d for k, d in vec.directions.items()},
                          {**vec.manifest, "rows_summed": True})


@dataclass
class Completions:
    """Completions of one cell: token ids, texts, scores and unsteered per-token NLLs; the
    scores with the steering words masked, and VADER's second opinion (raw, masked)."""

    ids: list[list[int]]
    texts: list[str]
    scores: list[float]
    nll: list[float | None]
    masked: list[float] | None = None
    second: list[float] | None = None
    second_masked: list[float] | None = None
    has_words: list[bool] | None = None  # per completion: holds a steering word


@dataclass
class CellRunner:
    lm: LoadedModel
    vec: SteeringVector
    store: EvalRun
    scorer: Scorer
    task: str
    target: str
    unit: Unit
    positions: str
    samples: int
    max_new_tokens: int
    greedy: bool
    temperature: float
    top_p: float
    seed: int
    batch_size: int
    start: dict[str, Any] | None = None  # the document-start token every prompt begins with
    kind: ScoreKind | None = None  # None: VADER for sentiment, p(offensive) for toxicity
    second: Scorer | None = None  # VADER beside the classifier
    mask: tuple[str, ...] = ()  # the steering words whose families are masked
    sign: int = field(init=False, default=1)

    def __post_init__(self) -> None:
        if self.kind is None:
            self.kind = KINDS["toxicity" if self.task == "toxicity" else "vader"]
        self.sign = -1 if self.task == "toxicity" or self.target == "negative" else 1

    def cell(self, prompt_set: str, n: int, **parts: Any) -> str:
        return cell_id("sentiment", task=self.task, prompts=prompt_set, n=n,
                              samples=self.samples, tokens=self.max_new_tokens,
                              decoding="greedy" if self.greedy else
                              f"t{self.temperature:g}p{self.top_p:g}", **parts)

    def spec(self, layer: int, value: float) -> SteeringSpec:
        return SteeringSpec(self.vec, layers=[layer], positions=self.positions,
                            coefficient=value if self.unit == "coefficient" else None,
                            strength=value if self.unit == "strength" else None)

    def other_unit(self, layer: int, value: float) -> float | None:
        """``value`` in the other unit (strength for a coefficient and vice versa)."""
        norm = float(self.vec.directions[layer].norm(dim=-1).mean())
        resid = self.vec.resid_norm(layer)
        if resid is None or norm == 0:
            return None
        return value * norm / resid if self.unit == "coefficient" else value * resid / norm

    def score(self, texts: list[str]) -> Completions:
        """Scores of ``texts`` (raw, steering words masked, and VADER's if asked for)."""
        masked = mask_words(texts, self.mask) if self.mask else None

        def both(scorer: Scorer) -> tuple[list[float], list[float] | None]:
            raw = scorer(texts)
            if masked is None:
                return raw, None
            changed = [i for i, (a, b) in enumerate(zip(texts, masked, strict=True)) if a != b]
            out = list(raw)
            for i, value in zip(changed, scorer([masked[i] for i in changed]), strict=True):
                out[i] = value
            return raw, out

        scores, scores_masked = both(self.scorer)
        second, second_masked = both(self.second) if self.second else (None, None)
        return Completions([], texts, scores, [], scores_masked, second, second_masked,
                           contains_words(texts, self.mask) if self.mask else None)

    def complete(self, prompts: list[str], spec: SteeringSpec | None) -> Completions:
        from steerlab.model.prompts import encode_plain, with_document_start

        rows = [with_document_start(encode_plain(self.lm.tokenizer, p), self.start)
                for p in prompts for _ in range(self.samples)]
        sampling = GREEDY if self.greedy else Sampling(self.temperature, self.top_p,
                                                       seed=self.seed)
        ids = generate_ids(self.lm, rows, spec, max_new_tokens=self.max_new_tokens,
                           sampling=sampling, batch_size=self.batch_size, progress=False)
        texts = [self.lm.tokenizer.decode(x, skip_special_tokens=True).strip() for x in ids]
        got = self.score(texts)
        got.ids, got.nll = ids, self.fluency(rows, ids)
        return got

    def fluency(self, prompts: list[list[int]], ids: list[list[int]]) -> list[float | None]:
        """Unsteered mean NLL of each non-empty completion given its prompt."""
        keep = [i for i, x in enumerate(ids) if x]
        nll = continuation_nll(self.lm, [prompts[i] + ids[i] for i in keep],
                               [len(prompts[i]) for i in keep], None,
                               batch_size=self.batch_size, desc="fluency") if keep else []
        out: list[float | None] = [None] * len(ids)
        for i, row in zip(keep, nll, strict=True):
            out[i] = sum(row) / len(row)
        return out


def _shift(name: str, steered: list[float] | None, base: list[float] | None, run: CellRunner,
           fields: dict[str, Any]) -> list[dict[str, Any]]:
    if steered is None or base is None:
        return []
    value = paired_shift(steered, base, run.samples)
    return [make_record(name, value[0], ci=value[1:],
                        **{**fields, "n": len(steered) // run.samples})]


def cell_records(run: CellRunner, got: Completions, base: Completions | None,
                 **fields: Any) -> list[dict[str, Any]]:
    """Records of one cell: mean score, rate, fluency, the masked control, VADER's second
    opinion, and the shifts and fluency ratio vs ``base`` if given."""
    kind = run.kind or KINDS["vader"]
    mean = stats.mean_ci(got.scores)
    rate = (success_rate(got.scores, run.target, kind.centre) if run.task == "sentiment"
            else rate_above(got.scores))
    fluency = fluency_ppl(got.nll)
    n_fluent = sum(x is not None for x in got.nll)
    lists = {"scores": got.scores} | ({"scores_masked": got.masked} if got.masked else {})
    records = [make_record(kind.metric, mean[0], ci=mean[1:], **fields, **lists,
                           examples=got.texts[:3]),
               make_record("success_rate" if run.task == "sentiment" else "toxic_rate",
                           rate[0], ci=rate[1:], **fields),
               make_record("fluency_ppl", fluency[0], ci=fluency[1:],
                           **{**fields, "n": n_fluent}, nll=got.nll)]
    if got.has_words is not None:
        share = stats.wilson(sum(got.has_words), len(got.has_words))
        records.append(make_record("mask_rate", share[0], ci=share[1:], **fields,
                                   words=list(run.mask), has_words=got.has_words))
    if got.second is not None:
        vader = stats.mean_ci(got.second)
        records.append(make_record("compound", vader[0], ci=vader[1:], **fields,
                                   scores=got.second, scores_masked=got.second_masked))
    if base is not None:
        records += _shift("shift", got.scores, base.scores, run, fields)
        records += _shift("shift_masked", got.masked, base.masked, run, fields)
        records += _shift("shift_vader", got.second, base.second, run, fields)
        records += _shift("shift_vader_masked", got.second_masked, base.second_masked, run,
                          fields)
        if got.nll and len(got.nll) == len(base.nll):
            ratio = ppl_ratio(got.nll, base.nll, run.samples)
            records.append(make_record("ppl_ratio", ratio[0], ci=ratio[1:3],
                                       **{**fields, "n": ratio[3]}))
    return records


def _fields(run: CellRunner, set_name: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"command": "sentiment", "model": run.lm.model_id, "data": f"{run.task}:{set_name}",
            "seed": run.seed, "n": n, "method": run.vec.method, "site": run.vec.site,
            "target": run.target, "positions": run.positions, "samples": run.samples,
            "max_new_tokens": run.max_new_tokens, "greedy": run.greedy, **extra}


def _floats(values: Any) -> list[float] | None:
    return None if values is None else [float(x) for x in values]


def _stored(run: CellRunner, cell: str) -> Completions:
    """A finished cell's per-completion scores and NLLs, read back from the store."""
    got = {r["metric"]: r for r in run.store.records(cell=cell)}
    mean = got[(run.kind or KINDS["vader"]).metric]["extra"]
    second = got["compound"]["extra"] if run.second and "compound" in got else {}
    nll = got["fluency_ppl"]["extra"]["nll"]
    hits = got["mask_rate"]["extra"].get("has_words") if "mask_rate" in got else None
    return Completions([], list(mean.get("examples", [])), [float(x) for x in mean["scores"]],
                       [None if x is None else float(x) for x in nll],
                       _floats(mean.get("scores_masked")), _floats(second.get("scores")),
                       _floats(second.get("scores_masked")),
                       None if hits is None else [bool(x) for x in hits])


def measure_set(run: CellRunner, set_name: str, prompts: list[str], layers: list[int],
                 values: list[float]) -> None:
    n = len(prompts) * run.samples
    base_cell = run.cell(set_name, len(prompts), baseline=True)
    if not run.store.store.done(base_cell):
        with stopwatch() as t:
            got = run.complete(prompts, None)
        run.store.add(base_cell, cell_records(run, got, None, **_fields(
            run, set_name, n, seconds=t[0], baseline=True, **{run.unit: 0.0})))
    base = _stored(run, base_cell)
    for layer, value in [(layer, v) for layer in layers for v in values]:
        cell = run.cell(set_name, len(prompts), layer=layer, **{run.unit: value})
        if run.store.store.done(cell):
            continue
        with stopwatch() as t:
            got = base if value == 0 else run.complete(prompts, run.spec(layer, value))
        other = run.other_unit(layer, value)
        equivalent = {} if other is None else {
            "as_strength" if run.unit == "coefficient" else "as_coefficient": other}
        run.store.add(cell, cell_records(run, got, base, **_fields(
            run, set_name, n, layer=layer, seconds=t[0], **{run.unit: value}, **equivalent)))


