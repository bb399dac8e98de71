"""``eval ood``'s config.

Example:
    >>> OODConfig(out="runs/o", vector="v.safetensors", trait="agreeableness").formats
    ('choice-qa', 'open-ended')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from steerlab.data.benchmarks import FORMATS, LENGTHS
from steerlab.eval.configs.fields import choices, not_a_setting, run_settings, setting
from steerlab.util.vocabulary import Unit


@dataclass
class OODConfig:
    """Steered answers to the AEP OOD prompts, judged 1..10, vs the in-distribution A/B effect.

    --format sets the in-distribution score (ab: letters, the only one persona Yes/No data has;
    open: whole replies, for CAA data on small models)."""

    GENERATES: ClassVar[bool] = True  # offers --engine

    out: str | Path = field(metadata=not_a_setting())
    vector: Path
    trait: str = field(metadata=setting(help="AEP trait, e.g. agreeableness."))
    unit: Unit = "strength"
    values: Sequence[float] = field(default=(-0.5, 0.0, 0.5), metadata=setting(
        help="Default -0.5,0,0.5; 0 is always added. "))
    layers: str | None = field(default=None, metadata=setting(
        more="Default: the vector's only layer."))
    model: str = "smollm2-135m"
    judge: str = "local:qwen2.5-coder-0.5b"
    formats: Sequence[str] = field(default=FORMATS, metadata=setting(
        parse=choices(FORMATS), help=",".join(FORMATS)))
    lengths: Sequence[str] = field(default=LENGTHS, metadata=setting(
        parse=choices(LENGTHS), help=",".join(LENGTHS)))
    id_data: str | None = field(default=None, metadata=setting(  # None: mwe:/caa:<trait>
        help="A/B data for the in-distribution comparison (default mwe:TRAIT or caa:TRAIT; "
             "'none' to skip)."))
    # the ID score: "ab" letters or "open" whole replies
    id_format: str = field(default="ab", metadata=setting(flag="--format"))
    max_new_tokens: int = 64
    limit: int = 0
    # ID test items (None: ``limit``); recorded only when set: run directories written
    # before id_limit existed still resume
    id_limit: int | None = field(default=None, metadata=setting(when_set=True, cli=False))
    seed: int = 0
    batch_size: int = field(default=16, metadata=not_a_setting())

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``."""
        return run_settings(self)
