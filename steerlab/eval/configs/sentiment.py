"""``eval sentiment``'s config.

Example:
    >>> cfg = SentimentConfig(out="runs/s", pair=(" love", " hate"))
    >>> cfg.unit, list(cfg.values)
    ('coefficient', [0.0, 2.0, 5.0, 10.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from steerlab.data.benchmarks import SENTIMENT_SETS
from steerlab.eval.configs.fields import not_a_setting, run_settings, setting, words
from steerlab.util.vocabulary import Unit


@dataclass
class SentimentConfig:
    """Sentiment or toxicity of steered completions vs coefficient, with fluency and a verdict.

    --limit is the number of prompts per set (a seeded subset; 0 = all ~3,000; ±0.1 on a shift
    needs ~100). Each shift is also measured with the steering words masked; the verdict asks
    for that masked shift above 0 and a fluency perplexity ratio <= 1.5. Raw coefficients are
    printed with their equivalent strengths.
    """

    GENERATES: ClassVar[bool] = True  # offers --engine

    out: str | Path = field(metadata=not_a_setting())
    layers: str = "6"
    # ActAdd's own convention: raw coefficients (Turner et al.)
    unit: Unit = "coefficient"
    values: Sequence[float] = field(default=(0.0, 2.0, 5.0, 10.0), metadata=setting(
        help="Default: --coefficients=0,2,5,10 (ActAdd's raw convention; their strengths are "
             "printed). "))
    pair: tuple[str, str] | None = field(default=None, metadata=setting(
        help="ActAdd prompt pair POS NEG, e.g. --pair ' love' ' hate' (they must line up token "
             "for token)."))
    vector: Path | None = None
    pad: str | None = None  # ActAdd: "space" right-pads the shorter --pair prompt
    model: str = "smollm2-135m"
    task: str = field(default="sentiment", metadata=setting(
        help="sentiment (--scorer) or toxicity (alt-profanity-check)."))
    prompt_sets: Sequence[str] = field(default=SENTIMENT_SETS, metadata=setting(
        parse=words, help="Sentiment prompt sets: neutral,negative."))
    target: str = field(default="positive", metadata=setting(
        help="The sentiment a success moves to."))
    positions: str | None = field(default=None, metadata=setting(
        more="Default: front for position-resolved (ActAdd) vectors, else all."))
    max_new_tokens: int = 40
    samples: int = field(default=1, metadata=setting(low=(1, "a count"),
                                                     help="Completions per prompt."))
    temperature: float = field(default=1.0, metadata=setting(
        low=(0, "a temperature"), help="0 = greedy; > 0 samples (seeded with --seed)."))
    top_p: float = field(default=0.9, metadata=setting(help="Nucleus sampling mass (0, 1]."))
    limit: int = 40
    seed: int = 0
    batch_size: int = field(default=8, metadata=not_a_setting())
    # sentiment: classifier (+ VADER beside it) or vader alone
    scorer: str = field(default="classifier", metadata=setting(
        help="Sentiment scorer: classifier (MiniLM + logistic regression on human labels; "
             "VADER beside it) or vader alone."))
    # words to mask; None: the pair's (or vector's) words
    mask: Sequence[str] | None = field(default=None, metadata=setting(
        parse=words,
        help="Comma-separated words whose families are masked for the control score. Default: "
             "the --pair words (or an ActAdd vector's); '' for none."))

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``; a
        toxicity run records the scorer it uses (profanity-check), not ``--scorer``."""
        scorer = self.scorer if self.task == "sentiment" else "profanity-check"
        return {**run_settings(self), "scorer": scorer}
