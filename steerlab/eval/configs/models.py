"""``eval models``'s config.

Example:
    >>> cfg = ModelsConfig(out="runs/s", models=["smollm2-135m"], data="caa:refusal")
    >>> cfg.settings()["strengths"]
    [-0.5, 0.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.eval.configs.fields import (
    distinct_numbers,
    not_a_setting,
    run_settings,
    setting,
    words,
)


@dataclass
class ModelsConfig:
    """One protocol across model sizes: layer chosen per model on val, reported on test."""

    out: str | Path = field(metadata=not_a_setting())
    models: Sequence[str] = field(metadata=setting(parse=words,
                                                   help="Comma-separated aliases / ids."))
    data: str
    depths: str = field(default="0.3,0.4,0.5,0.6,0.7", metadata=setting(
        help="Relative depths to sweep, e.g. 0.3,0.5 or 0.2:0.8:0.1."))
    values: Sequence[float] = field(default=(-0.5, 0.0, 0.5), metadata=setting(
        key="strengths", flag="--strengths", parse=distinct_numbers,
        help="Multiples of the mean residual-stream norm at the layer, e.g. -0.4,0,0.4 or "
             "-0.4:0.4:0.2 (start:stop:step, inclusive)."))
    train_limit: int = 0
    form: str = field(default="open", metadata=setting(key="format", flag="--format"))
    limit: int = 0
    seed: int = 0
    batch_size: int = field(default=16, metadata=not_a_setting())

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``."""
        return run_settings(self)
