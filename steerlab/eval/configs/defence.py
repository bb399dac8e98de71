"""``eval defence``'s config.

Example:
    >>> DefenceConfig(out="runs/d", vector="v.safetensors", layers="12").suffixes
    13
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from steerlab.errors import SteerlabError
from steerlab.eval.configs.fields import not_a_setting, run_settings, setting
from steerlab.util.vocabulary import Unit


def auto_or_number(text: str, flag: str) -> float | None:
    """``parse`` for ``--threshold``: ``auto`` (None: the fitted one) or a number.

    Example:
        >>> auto_or_number("auto", "--threshold"), auto_or_number("0.5", "--threshold")
        (None, 0.5)
    """
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise SteerlabError(f"{flag}: expected auto or a number, got {text!r}") from None


@dataclass
class DefenceConfig:
    """Refusal of AdvBench (plain and with GCG suffixes) vs over-refusal of XSTest's safe
    prompts: unsteered, steered and conditionally steered.

    --limit is the number of AdvBench behaviours and of XSTest prompts (seeded subsets).
    """

    GENERATES: ClassVar[bool] = True  # offers --engine

    out: str | Path = field(metadata=not_a_setting())
    vector: Path
    layers: str = field(metadata=setting(more="Steered together."))
    values: Sequence[float] = field(default=(0.2, 0.4), metadata=setting(
        help="Default 0.2,0.4 (0 = unsteered is always measured). "))
    unit: Unit = "strength"
    model: str = "smollm2-135m"
    condition: Path | None = field(default=None, metadata=setting(
        help="A condition vector from 'steerlab cast fit': also measure conditional steering."))
    condition_layer: int | None = field(default=None, metadata=setting(
        help="Override the fitted condition layer."))
    threshold: float | None = field(default=None, metadata=setting(  # None: the fitted one
        parse=auto_or_number,
        help="The condition's threshold: auto (the fitted one, the default) or a number."))
    suffixes: int = field(default=13, metadata=setting(
        low=(0, "a count"), help="How many of the 13 published GCG suffixes (0 = none)."))
    limit: int = 20
    max_new_tokens: int = 48
    judge: str | None = field(default="local:qwen2.5-coder-0.5b", metadata=setting(
        help="Second-opinion refusal judge (local:ALIAS or http:URL#MODEL), or none."))
    seed: int = 0
    batch_size: int = field(default=16, metadata=not_a_setting())

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``."""
        return run_settings(self)
