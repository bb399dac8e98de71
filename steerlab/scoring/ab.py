"""Steered generation and A/B scoring on top of :mod:`steerlab.steering.hooks`.

``score_ab`` is the CAA behaviour score: the question is chat-formatted, the assistant turn is
prefilled up to the answer token (``"("`` for CAA letters), and from the next-token
distribution score = p(matching) / (p(matching) + p(not matching)); propensity (Tan et al.) =
logit(matching) − logit(not matching). Batches are left-padded with explicit position ids so
padding never changes a row's numbers.

Example:
    >>> lm = steerlab.load_model("smollm2-135m")                          # doctest: +SKIP
    >>> test = steerlab.load_dataset("builtin:optimism", split="test")     # doctest: +SKIP
    >>> score_ab(lm, test).mean                                          # doctest: +SKIP
    0.61
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlab.data.formats import ABItem
from steerlab.data.loaders import Dataset
from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.model.prompts import ABSequences, ab_sequences, answer_sequences, prompt_ids
from steerlab.steering.hooks import SteeringSpec, steer
from steerlab.vector import SteeringVector

Steering = SteeringSpec | Sequence[SteeringSpec] | None


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask`` and matching ``position_ids``.

    Example:
        >>> left_pad([[5, 6], [7]], 0)["position_ids"].tolist()
        [[0, 1], [0, 0]]
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(list(row))
            mask[i, width - len(row):] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def _pad_id(lm: LoadedModel) -> int:
    tok = lm.tokenizer
    for value in (tok.pad_token_id, tok.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def generate(model: LoadedModel | Any, prompts: Sequence[str] | str, steering: Steering = None,
             *, max_new_tokens: int = 48, chat: bool = True, batch_size: int = 8,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             seed: int = 0, system: str | None = None,
             row_steering: Sequence[Sequence[SteeringSpec]] | None = None,
             tokenizer: Any = None, progress: bool = False) -> list[str]:
    """Generate completions for ``prompts`` (chat-formatted when ``chat``), optionally steered.

    ``row_steering[i]`` adds specs for prompt i only (batched together with the others).

    Example:
        >>> generate(lm, ["Tell me about Mondays."],                         # doctest: +SKIP
        ...          steering=SteeringSpec(vec, layers=[12], strength=0.5))
    """
    lm = as_loaded(model, tokenizer)
    if isinstance(prompts, str):
        prompts = [prompts]
    if row_steering is not None and len(row_steering) != len(prompts):
        raise SteerlabError(f"row_steering has {len(row_steering)} rows for {len(prompts)} prompts")
    encoded = [prompt_ids(lm.tokenizer, p, chat, system) for p in prompts]
    outputs: list[str] = []
    pad = _pad_id(lm)
    for start in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="generate",
                      leave=False):
        chunk = encoded[start:start + batch_size]
        rows = row_steering[start:start + batch_size] if row_steering is not None else None
        batch = left_pad([ids for ids, _ in chunk], pad)
        batch.pop("position_ids")
        if do_sample:
            torch.manual_seed(seed + start)
        with steer(lm, steering, row_specs=rows, instruction_lengths=[n for _, n in chunk]), \
                torch.inference_mode():
            out = lm.model.generate(  # type: ignore[operator]
                **{k: v.to(lm.device) for k, v in batch.items()}, max_new_tokens=max_new_tokens,
                do_sample=do_sample, temperature=temperature if do_sample else None,
                top_p=top_p if do_sample else None, top_k=None, pad_token_id=pad)
        width = batch["input_ids"].shape[1]
        outputs += [lm.tokenizer.decode(row[width:], skip_special_tokens=True).strip()
                    for row in out]
    return outputs


@dataclass(frozen=True)
class ABResult:
    """Per-item A/B results and their summary (mean score with a 95 % interval)."""

    scores: tuple[float, ...]
    propensities: tuple[float, ...]
    p_matching: tuple[float, ...]
    p_not_matching: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return sum(self.scores) / self.n if self.n else math.nan

    @property
    def stderr(self) -> float:
        if self.n < 2:
            return math.nan
        mean = self.mean
        var = sum((s - mean) ** 2 for s in self.scores) / (self.n - 1)
        return math.sqrt(var / self.n)

    @property
    def ci95(self) -> tuple[float, float]:
        half = 1.96 * self.stderr
        return self.mean - half, self.mean + half

    @property
    def mean_propensity(self) -> float:
        return sum(self.propensities) / self.n if self.n else math.nan

    def __str__(self) -> str:
        low, high = self.ci95
        return f"{self.mean:.3f} [{low:.3f}, {high:.3f}] (n={self.n})"


def _ab_items(data: Dataset | Sequence[ABItem]) -> list[ABItem]:
    items = list(data)
    for i, item in enumerate(items):
        if not isinstance(item, ABItem):
            raise SteerlabError(f"score_ab needs A/B items; item {i} is {type(item).__name__}")
    return items  # type: ignore[return-value]


def score_ab(model: LoadedModel | Any, data: Dataset | Sequence[ABItem], steering: Steering = None,
             *, batch_size: int = 16, system: str | None = None,
             row_steering: Sequence[Sequence[SteeringSpec]] | None = None,
             tokenizer: Any = None, progress: bool = False) -> ABResult:
    """CAA behaviour score of ``data`` under ``steering`` (or per-row ``row_steering``).

    Example:
        >>> spec = SteeringSpec(vec, layers=[12], coefficient=4)             # doctest: +SKIP
        >>> res = score_ab(lm, test, spec)                                   # doctest: +SKIP
        >>> print(res)                                                      # doctest: +SKIP
        0.712 [0.650, 0.774] (n=50)
    """
    lm = as_loaded(model, tokenizer)
    items = _ab_items(data)
    if row_steering is not None and len(row_steering) != len(items):
        raise SteerlabError(f"row_steering has {len(row_steering)} rows for {len(items)} items")
    seqs = [ab_sequences(lm.tokenizer, item, system=system) for item in items]
    return score_sequences(lm, seqs, steering, row_steering=row_steering, batch_size=batch_size,
                           progress=progress)


def score_sequences(lm: LoadedModel, seqs: Sequence[ABSequences], steering: Steering = None, *,
                    row_steering: Sequence[Sequence[SteeringSpec]] | None = None,
                    batch_size: int = 16, progress: bool = False) -> ABResult:
    """The scoring pass of :func:`score_ab` on already tokenized items (one forward per batch).

    Example:
        >>> seqs = [ab_sequences(lm.tokenizer, item) for item in test]      # doctest: +SKIP
        >>> score_sequences(lm, seqs).mean                                   # doctest: +SKIP
    """
    pad = _pad_id(lm)
    scores: list[float] = []
    props: list[float] = []
    p_m: list[float] = []
    p_n: list[float] = []
    for start in tqdm(range(0, len(seqs), batch_size), disable=not progress, desc="score",
                      leave=False):
        chunk = seqs[start:start + batch_size]
        rows = row_steering[start:start + batch_size] if row_steering is not None else None
        batch = left_pad([s.prefix for s in chunk], pad)
        with steer(lm, steering, row_specs=rows,
                   instruction_lengths=[s.instruction_length for s in chunk]), \
                torch.inference_mode():
            logits = lm.model(**{k: v.to(lm.device) for k, v in batch.items()},
                              use_cache=False, logits_to_keep=1).logits[:, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        match = torch.tensor([s.matching_id for s in chunk], device=logits.device)
        other = torch.tensor([s.not_matching_id for s in chunk], device=logits.device)
        rows_index = torch.arange(len(chunk), device=logits.device)
        lm_, ln_ = logprobs[rows_index, match], logprobs[rows_index, other]
        scores += torch.sigmoid(lm_ - ln_).tolist()
        props += (logits[rows_index, match] - logits[rows_index, other]).tolist()
        p_m += lm_.exp().tolist()
        p_n += ln_.exp().tolist()
    return ABResult(tuple(scores), tuple(props), tuple(p_m), tuple(p_n))


def score_coefficients(model: LoadedModel | Any, data: Dataset | Sequence[ABItem],
                       vector: SteeringVector, layers: Sequence[int | float | str] | str | int,
                       values: Sequence[float], *, unit: str = "coefficient",
                       positions: str = "all", batch_size: int = 16, system: str | None = None,
                       progress: bool = False) -> dict[float, ABResult]:
    """Behaviour score at several coefficients (or strengths) in shared batches (per-row specs).

    One layer (group) of the sweep engine (:mod:`steerlab.scoring.sweep`): the unsteered prefix
    runs once and every value rides in one forward as a per-row spec; results equal separate
    runs (tested).

    Example:
        >>> res = score_coefficients(lm, test, vec, [12], [-4, 0, 4])        # doctest: +SKIP
        >>> {c: round(r.mean, 2) for c, r in res.items()}                    # doctest: +SKIP
    """
    from steerlab.scoring.sweep import SweepEngine, sweep_ab  # the engine imports this module

    lm = as_loaded(model)
    group = tuple(SteeringSpec(vector, layers=layers).resolved_layers(lm.n_layers))
    results = sweep_ab(lm, data, vector, [group], values, unit=unit, positions=positions,
                       batch_size=batch_size, system=system, progress=progress)
    key = SweepEngine._key(group)
    return {float(v): results[(key, float(v))] for v in values}


def score_answers(model: LoadedModel | Any, data: Dataset | Sequence[ABItem],
                  steering: Steering = None, *, batch_size: int = 16, system: str | None = None,
                  tokenizer: Any = None, progress: bool = False) -> ABResult:
    """Open-answer preference: p(matching answer text) vs p(not-matching text), whole answers.

    For items whose answers are full sentences (``builtin:optimism_open``), each answer's
    total log-probability as the assistant's reply is computed; score = sigmoid(lp_match −
    lp_not) and propensity = lp_match − lp_not (nats). Unlike the letter score this reads what
    the model would *say*, so it shows steering in models too small to follow A/B formats.

    Example:
        >>> test = load_dataset("builtin:optimism_open", split="test")      # doctest: +SKIP
        >>> print(score_answers(lm, test))                                   # doctest: +SKIP
        0.402 [0.350, 0.454] (n=39)
    """
    lm = as_loaded(model, tokenizer)
    rows = [(seq.prefix, seq.prompt_length) for item in _ab_items(data)
            for seq in answer_sequences(lm.tokenizer, item, system=system)]
    pad = _pad_id(lm)
    totals: list[float] = []
    for start in tqdm(range(0, len(rows), batch_size), disable=not progress, desc="score",
                      leave=False):
        chunk = rows[start:start + batch_size]
        batch = left_pad([ids for ids, _ in chunk], pad)
        lengths = [n for _, n in chunk]
        with steer(lm, steering, prompt_lengths=lengths), torch.inference_mode():
            logits = lm.model(**{k: v.to(lm.device) for k, v in batch.items()},
                              use_cache=False).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = batch["input_ids"][:, 1:].to(logits.device)
        token_lp = logprobs.gather(-1, targets[..., None])[..., 0]
        width = batch["input_ids"].shape[1]
        for row, (ids, n_prompt) in enumerate(chunk):
            first = width - len(ids) + n_prompt  # index of first answer token in the padded row
            totals.append(float(token_lp[row, first - 1:].sum()))
    match, other = totals[0::2], totals[1::2]
    props = tuple(m - o for m, o in zip(match, other, strict=True))
    scores = tuple(float(torch.sigmoid(torch.tensor(p))) for p in props)
    return ABResult(scores, props, tuple(math.exp(m) for m in match),
                    tuple(math.exp(o) for o in other))
