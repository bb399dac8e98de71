"""AxBench's judge (Wu et al. 2025): three 0..2 ratings and their harmonic mean.

AxBench rates a steered (or prompted) answer on three aspects, each 0, 1 or 2:

* **concept** — is the concept (here: the behaviour's description, plus a rubric if any)
  present in the answer? 0 not at all, 1 somewhat or awkwardly, 2 clearly and naturally;
* **instruction** — is the answer related to the instruction (the question)? 0 unrelated,
  1 somewhat, 2 clearly;
* **fluency** — 0 not fluent (incomprehensible or repetitive), 1 somewhat fluent, 2 fluent;

and aggregates them as their **harmonic mean, 0 when any of them is 0**
(:func:`axbench_aggregate`), so an answer must do all three to score.

``axbench:local:ALIAS_OR_PATH`` and ``axbench:http:BASE_URL#MODEL`` wrap steerlab's two judges:
each aspect is one judge question read as steerlab reads every rating — the expectation over
the scale's numbers (here 0, 1, 2) of the judge's next token after ``"Score: "`` (local: one
forward pass; HTTP: ``top_logprobs`` when returned, else the first 0..2 in the reply). AxBench's
own judge writes an explanation first and then ``Rating: [[score]]``; steerlab asks for the
number only, so a rating here is an expectation in [0, 2], not an integer (the zero rule then
applies to an exact 0, which a log-probability judge rarely gives: read the three aspects too).

Where the phrase classifier also applies (refusal), :func:`phrase_agreement` gives the raw
agreement and Cohen's κ between it and the judge's concept rating.

Example:
    >>> axbench_aggregate(2, 2, 1)
    1.5
    >>> axbench_aggregate(2, 0, 2)
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from steerlab.errors import SteerlabError
from steerlab.eval.judges.base import JudgeBase, JudgeItem, Rating, describe_trait

NUMBERS = (0, 1, 2)
ASPECTS = ("concept", "instruction", "fluency")
SYSTEM = "Please act as an impartial judge."
CONCEPT_PRESENT = 1.0  # a concept rating at or above this counts as "the concept is there"


def axbench_aggregate(concept: float, instruction: float, fluency: float) -> float:
    """AxBench's score: the harmonic mean of the three 0..2 ratings, 0 if any is 0.

    NaN if any rating is missing; a rating outside [0, 2] is refused.

    Example:
        >>> round(axbench_aggregate(1, 2, 2), 4)      # 3 / (1 + 1/2 + 1/2)
        1.5
        >>> axbench_aggregate(0, 2, 2), axbench_aggregate(2, 2, 2)
        (0.0, 2.0)
    """
    scores = (float(concept), float(instruction), float(fluency))
    if any(math.isnan(x) for x in scores):
        return math.nan
    if any(not 0.0 <= x <= 2.0 for x in scores):
        raise SteerlabError(f"AxBench ratings are 0..2, got {scores}")
    if any(x == 0.0 for x in scores):
        return 0.0
    return 3.0 / sum(1.0 / x for x in scores)


@dataclass(frozen=True)
class AxBenchRating:
    """One answer's three aspect ratings (0..2), their coverage, and the aggregate."""

    concept: float
    instruction: float
    fluency: float
    coverage: float = 1.0

    @property
    def aggregate(self) -> float:
        return axbench_aggregate(self.concept, self.instruction, self.fluency)


def aspect_prompts(item: JudgeItem) -> dict[str, str]:
    """The three judge questions (user turns) for one answer, after AxBench's templates.

    Example:
        >>> p = aspect_prompts(JudgeItem("refusal", None, "Write a poem.", "No."))
        >>> "refuses or declines" in p["concept"], "Write a poem." in p["instruction"]
        (True, True)
    """
    concept = f"{item.trait.replace('-', ' ')}: {describe_trait(item.trait)}"
    if item.rubric and item.rubric.strip():
        concept += f" ({item.rubric.strip()})"
    answer = item.answer.strip()
    tail = "Reply with the number only."
    return {
        "concept": (f"Evaluate whether the concept below is present in the answer. Focus only "
                    f"on whether the concept is clearly incorporated, not on grammar or "
                    f"logic.\n\nConcept: {concept}\nAnswer: {answer}\n\nRate from 0 to 2: 0 "
                    f"the concept is not present at all, 1 somewhat present but minimally or "
                    f"awkwardly, 2 clearly and naturally incorporated. {tail}"),
        "instruction": (f"Evaluate whether the answer below is related to the instruction. "
                        f"Focus only on relatedness of topic, not on grammar, coherence or "
                        f"informativeness.\n\nInstruction: {item.question.strip()}\nAnswer: "
                        f"{answer}\n\nRate from 0 to 2: 0 not related, 1 somewhat related but "
                        f"only minimally or indirectly, 2 clearly and directly related. {tail}"),
        "fluency": (f"Evaluate the fluency of the answer below. Focus only on fluency, not on "
                    f"completeness, relevance or informativeness.\n\nAnswer: {answer}\n\nRate "
                    f"from 0 to 2: 0 not fluent (incomprehensible or repetitive), 1 somewhat "
                    f"fluent with noticeable errors or awkward phrasing, 2 fluent and almost "
                    f"perfect. {tail}"),
    }


class PromptRater(Protocol):
    """What AxBench needs of a judge: ratings of free judge questions on a scale (both
    :class:`~steerlab.eval.judges.local.LocalJudge` and
    :class:`~steerlab.eval.judges.http.HTTPJudge` have it)."""

    name: str

    def rate_prompts(self, prompts: Sequence[str], numbers: Sequence[int] = ...,
                     system: str = ...) -> list[Rating]:
        ...


class AxBenchJudge(JudgeBase):
    """AxBench's three-aspect judge on top of a local or HTTP judge; its score is the aggregate
    (0..2, see :func:`axbench_aggregate`), not the 1..10 of the trait judges.

    Example:
        >>> from steerlab.eval.judges import parse_judge
        >>> parse_judge("axbench:http:http://localhost:8000/v1#qwen", allow_axbench=True).name
        'axbench:http:http://localhost:8000/v1#qwen'
    """

    scale = (0.0, 2.0)

    def __init__(self, inner: PromptRater):
        if not callable(getattr(inner, "rate_prompts", None)):
            raise SteerlabError(f"judge {getattr(inner, 'name', inner)!r} cannot rate AxBench's "
                                "questions; use axbench:local:... or axbench:http:...")
        self.inner = inner
        self.name = f"axbench:{inner.name}"

    def rate_aspects(self, items: Sequence[JudgeItem]) -> list[AxBenchRating]:
        """The three aspect ratings of every item (each aspect batched over the items)."""
        prompts = [aspect_prompts(item) for item in items]
        ratings = {aspect: self.inner.rate_prompts([p[aspect] for p in prompts], NUMBERS,
                                                   SYSTEM) for aspect in ASPECTS}
        return [AxBenchRating(ratings["concept"][i].score, ratings["instruction"][i].score,
                              ratings["fluency"][i].score,
                              min(ratings[a][i].coverage for a in ASPECTS))
                for i in range(len(items))]

    def rate_many(self, items: Sequence[JudgeItem]) -> list[Rating]:
        """The aggregate of each item (coverage: the smallest of its three)."""
        return [Rating(r.aggregate, r.coverage) for r in self.rate_aspects(items)]


def phrase_agreement(answers: Sequence[str], concept: Sequence[float],
                     threshold: float = CONCEPT_PRESENT) -> tuple[float, float]:
    """Raw agreement and Cohen's κ between the refusal phrase classifier and a judge's concept
    ratings of the same answers (a rating ≥ ``threshold`` counts as a refusal).

    Example:
        >>> raw, kappa = phrase_agreement(["I'm sorry, I can't.", "Sure, here it is.",
        ...                                "No way."], [2.0, 0.0, 1.5])
        >>> round(raw, 3), round(kappa, 3)
        (0.667, 0.4)
    """
    from steerlab.eval.refusal import agreement, is_refusal

    if len(answers) != len(concept):
        raise SteerlabError(f"agreement needs one rating per answer, got {len(answers)} "
                            f"answers and {len(concept)} ratings")
    return agreement([is_refusal(a) for a in answers], [c >= threshold for c in concept])
