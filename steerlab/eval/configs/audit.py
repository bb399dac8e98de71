"""``steerlab audit``'s config: what it measures, and at which sizes (≤ 15 min on SmolLM2).

Example:
    >>> cfg = AuditConfig(out="runs/audit", data="caa:refusal")
    >>> cfg.strength(), list(cfg.pair_counts)
    (0.4, [1, 5, 20, 80, 160])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from steerlab.errors import SteerlabError
from steerlab.eval.configs.fields import counts, numbers, setting, words
from steerlab.eval.studies import AUDIT_STEPS


@dataclass
class AuditConfig:
    """Run the sweep, sample-count, OOD, adversarial, perplexity, steering-vs-prompting (and
    with --models, size) studies at sizes that fit ~15 min on SmolLM2, then judge the five
    findings and which of steering and prompting wins, by written rules, into verdicts.json.
    Rerun to resume."""

    out: str | Path
    data: str
    model: str = "smollm2-135m"
    vector: Path | None = None
    # None: the vector's layers, else depths 0.3-0.7
    layers: str | None = field(default=None, metadata=setting(
        more="Default: the vector's layers, or depths 0.3,0.4,0.5,0.6,0.7 of the model."))
    strengths: Sequence[float] = field(default=(-0.4, 0.0, 0.4), metadata=setting(
        parse=numbers,
        help="The sweep's grid (default -0.4,0,0.4); the largest positive one steers every "
             "later study. Multiples of the mean residual-stream norm at the layer, e.g. "
             "-0.4,0,0.4 or -0.4:0.4:0.2 (start:stop:step, inclusive)."))
    models: Sequence[str] = field(default=(), metadata=setting(
        parse=words, help="More models for the size finding (comma-separated); without it "
                          "that finding is inconclusive."))
    studies: Sequence[str] = field(default=AUDIT_STEPS, metadata=setting(
        flag="--only", parse=words, help="The studies to run."))
    form: str = field(default="open", metadata=setting(flag="--format"))
    limit: int = 40
    train_limit: int = 160
    pair_counts: Sequence[int] = field(default=(1, 5, 20, 80, 160), metadata=setting(
        flag="--n", parse=counts,
        help="Pair counts of the samples study."))
    draws: int = field(default=3, metadata=setting(
        flag="--seeds", low=(1, "a count"), help="Random draws per pair count."))
    judge: str = "local:qwen2.5-coder-0.5b"
    ood_limit: int = field(default=8, metadata=setting(
        low=(1, "a count"), help="OOD prompts per AEP set (and ID items)."))
    ood_lengths: Sequence[str] = field(default=("short",), metadata=setting(cli=False))
    max_new_tokens: int = 48
    adversarial_limit: int = field(default=8, metadata=setting(
        low=(1, "a count"), help="Held-out items the suffix search attacks."))
    iterations: int = field(default=4, metadata=setting(
        low=(1, "a count"), help="Suffix-search iterations per item."))
    population: int = field(default=4, metadata=setting(cli=False))
    children: int = field(default=8, metadata=setting(cli=False))
    suffix_length: int = field(default=10, metadata=setting(cli=False))
    windows: int = field(default=16, metadata=setting(
        flag="--perplexity-limit", low=(1, "a count"),
        help="WikiText-2 windows for the perplexity cost."))
    # prompting: items answered per condition for the fluency cost
    fluency_limit: int = field(default=16, metadata=setting(
        low=(0, "an item count (0 = all)"),
        help="Test items answered per condition for the prompting study's fluency cost (0 = "
             "all)."))
    # the prompting study's words (default: the description)
    instruction: str | None = field(default=None, metadata=setting(
        help="The behaviour asked for in words, for the prompting study (default: made from "
             "the behaviour's description; without either it is not measurable)."))
    # prompting: few-shot train examples (eval prompting's own default is 3)
    shots: int = field(default=2, metadata=setting(
        low=(0, "a count"), help="Few-shot train examples in the prompting study's prompt."))
    seed: int = 0
    batch_size: int = 16

    @property
    def root(self) -> Path:
        """The audit's directory (each study in a sub-directory of it)."""
        return Path(self.out)

    def strength(self) -> float:
        """The strength later studies steer with: the sweep's largest positive value."""
        positive = [float(v) for v in self.strengths if v > 0]
        if not positive:
            raise SteerlabError(f"--strengths: the audit steers with the largest positive "
                                f"strength; got {list(self.strengths)}")
        return max(positive)
