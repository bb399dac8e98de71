"""``eval prompting``'s config.

Example:
    >>> PromptingConfig(out="runs/p", data="caa:refusal", vector="v.safetensors").parts
    ('system', 'prefix', 'fewshot')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from steerlab.eval.configs.fields import choices, not_a_setting, run_settings, setting
from steerlab.util.vocabulary import Unit

#: How the prompt asks for the behaviour: a system prompt, a user-turn prefix, few-shot examples
PARTS = ("system", "prefix", "fewshot")


@dataclass
class PromptingConfig:
    """Is steering worth it? The vector vs the behaviour asked for by instruction (and both),
    on the same test items with the same scorer, with each one's fluency cost and a verdict.

    --limit is the number of test items (a seeded subset, the one eval sweep scores).
    """

    GENERATES: ClassVar[bool] = True  # offers --engine

    out: str | Path = field(metadata=not_a_setting())
    data: str
    vector: Path
    # None: the manifest's recommended layer (or the only one)
    layers: str | None = field(default=None, metadata=setting(
        more="One layer. Default: the layer 'eval sweep' recommended in the vector's manifest, "
             "else its only layer."))
    unit: Unit | None = None
    value: float | None = field(default=None, metadata=setting(  # None: the manifest's
        help="One value. Default: the strength 'eval sweep' recommended in the vector's "
             "manifest. "))
    model: str = "smollm2-135m"
    instruction: str | None = field(default=None, metadata=setting(
        help="The behaviour asked for in words (used as the system prompt and the user-turn "
             "prefix). Default: made from the behaviour's description (caa:/mwe: names)."))
    parts: Sequence[str] = field(default=PARTS, metadata=setting(
        key="prompt_parts", flag="--prompt-parts", parse=choices(PARTS),
        help="How the prompt asks: system (system prompt), prefix (before the question), "
             "fewshot (train examples)."))
    shots: int = field(default=3, metadata=setting(
        low=(0, "a count"),
        help="Few-shot examples (question → matching answer) drawn from the train split."))
    form: str = field(default="open", metadata=setting(key="format", flag="--format"))
    positions: str = "all"
    limit: int = 40
    # answers generated for the fluency cost (0 = every scored item)
    fluency_limit: int = field(default=0, metadata=setting(
        low=(0, "an item count (0 = all)"),
        help="Answers generated per condition for the fluency cost: a seeded subset of the "
             "scored items (0 = all)."))
    max_new_tokens: int = 32
    # also rate the answers (e.g. axbench:local:qwen2.5-coder-0.5b)
    judge: str | None = field(default=None, metadata=setting(
        help="Also rate every answer: local:ALIAS_OR_PATH, http:BASE_URL#MODEL, or axbench: "
             "before either (AxBench's concept/instruction/fluency aggregate, 0..2)."))
    seed: int = 0
    batch_size: int = field(default=16, metadata=not_a_setting())
    # verdicts.json in --out (the audit writes its own)
    write_verdict: bool = field(default=True, metadata=not_a_setting(cli=False))

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``."""
        return run_settings(self)
