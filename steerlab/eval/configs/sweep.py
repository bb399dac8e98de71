"""``eval sweep``'s config.

Example:
    >>> SweepConfig(out="runs/r", data="caa:refusal").settings()["values"]
    [-0.4, -0.2, 0.0, 0.2, 0.4]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.eval.configs.fields import not_a_setting, run_settings, setting
from steerlab.util.vocabulary import Unit


@dataclass
class SweepConfig:
    """Layer × strength sweep on val; the chosen layer reported on test (never chosen there)."""

    out: str | Path = field(metadata=not_a_setting())
    data: str
    unit: Unit = "strength"
    values: Sequence[float] = (-0.4, -0.2, 0.0, 0.2, 0.4)
    model: str = "smollm2-135m"
    layers: str = "all"
    vector: Path | None = None
    method: str = "mean_diff"
    positions: str = "all"
    train_limit: int = 0
    form: str = field(default="open", metadata=setting(key="format", flag="--format"))
    limit: int = 0
    seed: int = 0
    batch_size: int = field(default=16, metadata=not_a_setting())

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``."""
        return run_settings(self)
