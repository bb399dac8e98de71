"""Behaviour scores: the CAA A/B letter score and its open-answer counterpart.

``score_ab`` is the CAA behaviour score: the question is chat-formatted, the assistant turn is
prefilled up to the answer token (``"("`` for CAA letters), and from the next-token
distribution score = p(matching) / (p(matching) + p(not matching)); propensity (Tan et al.) =
logit(matching) − logit(not matching). ``score_answers`` compares whole answer texts (their
summed token log-probabilities as the assistant's reply). Both run through the one batched
steered forward (:mod:`steerlab.scoring.batch`) and return an :class:`ABResult`: per-item
numbers and their mean with a 95 % Student-t interval (clipped to [0, 1]). On SmolLM2-135M
the whole optimism test split scores ``0.512 [0.478, 0.546] (n=39)``; the example runs the same
calls on a tiny random-weight model.

Example:
    >>> import steerlab
    >>> lm = steerlab.load_model("smollm2-135m")                          # doctest: +SKIP
    >>> from steerlab.testing.tiny import tiny_lm
    >>> lm = tiny_lm()                                  # a tiny random-weight stand-in
    >>> test = steerlab.load_dataset("builtin:optimism", split="test")
    >>> print(score_ab(lm, test.head(8)))                                 # doctest: +ELLIPSIS
    0... [...] (n=8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerlab.data.formats import ABItem
from steerlab.data.loaders import Dataset
from steerlab.data.sequences import ABSequences, ab_sequences, answer_sequences
from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.scoring.batch import RowSteering, read_batches
from steerlab.scoring.readout import ABReadout, AnswerReadout
from steerlab.steering.spec import Steering
from steerlab.util.stats import mean_ci


@dataclass(frozen=True)
class ABResult:
    """Per-item A/B results and their summary (mean score, 95 % Student-t interval).

    Example:
        >>> res = ABResult((0.2, 0.6), (-1.0, 0.5), (0.2, 0.6), (0.8, 0.4))
        >>> res.mean, res.n
        (0.4, 2)
    """

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
    def ci95(self) -> tuple[float, float]:
        """95 % Student-t interval of the mean score, clipped to [0, 1] (NaN if n < 2)."""
        _, low, high = mean_ci(list(self.scores), bounds=(0.0, 1.0))
        return low, high

    @property
    def mean_propensity(self) -> float:
        return sum(self.propensities) / self.n if self.n else math.nan

    def __str__(self) -> str:
        low, high = self.ci95
        if math.isnan(low):
            return f"{self.mean:.3f} (n={self.n}: too few for an interval)"
        return f"{self.mean:.3f} [{low:.3f}, {high:.3f}] (n={self.n})"

    def __repr__(self) -> str:
        return f"ABResult({self}, propensity {self.mean_propensity:+.3f})"


def ab_items(data: Dataset | Sequence[ABItem], what: str = "A/B scoring") -> list[ABItem]:
    """The items of ``data``, all :class:`ABItem` (one-line error naming the first that is not).

    Example:
        >>> ab_items([ABItem("Q?", "(A)", "(B)")])[0].matching
        '(A)'
    """
    items = list(data)
    for i, item in enumerate(items):
        if not isinstance(item, ABItem):
            raise SteerlabError(
                f"{what} needs A/B items (question + matching / not-matching answer); item {i} "
                f"is a plain contrast pair — score plain pairs with --format open (their "
                "completions become the two answers) or use A/B data")
    return items  # type: ignore[return-value]


def answer_result(totals: Sequence[float]) -> ABResult:
    """Pair (matching, not matching) answer log-probabilities into an :class:`ABResult`.

    Example:
        >>> round(answer_result([-1.0, -2.0]).mean, 4)
        0.7311
    """
    if len(totals) % 2:
        raise SteerlabError("whole answers come in (matching, not matching) pairs")
    match, other = totals[0::2], totals[1::2]
    props = tuple(m - o for m, o in zip(match, other, strict=True))
    scores = tuple(1.0 / (1.0 + math.exp(-p)) if p > -700 else 0.0 for p in props)
    return ABResult(scores, props, tuple(math.exp(m) for m in match),
                    tuple(math.exp(o) for o in other))


def score_sequences(lm: LoadedModel, seqs: Sequence[ABSequences], steering: Steering = None, *,
                    row_steering: RowSteering | None = None, batch_size: int = 16,
                    progress: bool = False) -> ABResult:
    """The scoring pass of :func:`score_ab` on already tokenized items.

    Example:
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm, test = tiny_lm(), [ABItem("Is the sky blue?", "(A)", "(B)")]
        >>> seqs = [ab_sequences(lm.tokenizer, item) for item in test]
        >>> result = score_sequences(lm, seqs)
        >>> result.n, 0.0 < result.mean < 1.0
        (1, True)
    """
    rows = read_batches(lm, ABReadout(seqs), steering, row_steering=row_steering,
                        instruction_lengths=[s.instruction_length for s in seqs],
                        batch_size=batch_size, progress=progress)
    return ABResult(*(tuple(r[i] for r in rows) for i in range(4)))


def score_ab(model: LoadedModel | Any, data: Dataset | Sequence[ABItem], steering: Steering = None,
             *, batch_size: int = 16, system: str | None = None,
             row_steering: RowSteering | None = None, tokenizer: Any = None,
             progress: bool = False) -> ABResult:
    """CAA behaviour score of ``data`` under ``steering`` (or per-row ``row_steering``).

    Example:
        >>> import steerlab
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()                     # steerlab.load_model(...) on a real model
        >>> train = steerlab.load_dataset("builtin:optimism", split="train").head(8)
        >>> test = steerlab.load_dataset("builtin:optimism", split="test").head(8)
        >>> vec = steerlab.extract(lm, train, layers=[2], progress=False)
        >>> spec = steerlab.SteeringSpec(vec, layers=[2], strength=4)
        >>> steered, plain = score_ab(lm, test, spec), score_ab(lm, test)
        >>> steered.n, steered.scores != plain.scores
        (8, True)
    """
    lm = as_loaded(model, tokenizer)
    items = ab_items(data, "score_ab")
    if row_steering is not None and len(row_steering) != len(items):
        raise SteerlabError(f"row_steering has {len(row_steering)} rows for {len(items)} items")
    seqs = [ab_sequences(lm.tokenizer, item, system=system) for item in items]
    return score_sequences(lm, seqs, steering, row_steering=row_steering,
                           batch_size=batch_size, progress=progress)


def score_answers(model: LoadedModel | Any, data: Dataset | Sequence[ABItem],
                  steering: Steering = None, *, batch_size: int = 16, system: str | None = None,
                  tokenizer: Any = None, progress: bool = False) -> ABResult:
    """Open-answer preference: p(matching answer text) vs p(not-matching text), whole answers.

    For items whose answers are full sentences (``builtin:optimism_open``), each answer's total
    log-probability as the assistant's reply is computed; score = sigmoid(lp_match − lp_not)
    and propensity = lp_match − lp_not (nats). Unlike the letter score this reads what the
    model would *say*, so it shows steering in models too small to follow A/B formats.
    Steering applies at every position (``prompt`` / ``generation`` positions see the prompt
    as the question and the answer as the generation).

    Example:
        >>> import steerlab
        >>> from steerlab.testing.tiny import tiny_lm
        >>> lm = tiny_lm()                     # steerlab.load_model(...) on a real model
        >>> test = steerlab.load_dataset("builtin:optimism_open", split="test").head(8)
        >>> print(score_answers(lm, test))                               # doctest: +ELLIPSIS
        0... [...] (n=8)
    """
    lm = as_loaded(model, tokenizer)
    seqs = [seq for item in ab_items(data, "score_answers")
            for seq in answer_sequences(lm.tokenizer, item, system=system)]
    rows = read_batches(lm, AnswerReadout(seqs), steering,
                        prompt_lengths=[s.prompt_length for s in seqs],
                        instruction_lengths=[s.instruction_length for s in seqs],
                        batch_size=batch_size, progress=progress)
    return answer_result([r[0] for r in rows])
