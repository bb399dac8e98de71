"""``eval capabilities``'s config.

Example:
    >>> CapabilitiesConfig(out="runs/c", vector="v.safetensors", layers="12").benchmarks
    ('mmlu', 'truthfulqa')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.eval.configs.fields import choices, not_a_setting, run_settings, setting
from steerlab.util.vocabulary import Unit

#: The capability benchmarks (A/B): MMLU and TruthfulQA
BENCHMARKS = ("mmlu", "truthfulqa")


@dataclass
class CapabilitiesConfig:
    """MMLU / TruthfulQA A/B accuracy vs strength (Wilson CIs), with the letters' mass."""

    out: str | Path = field(metadata=not_a_setting())
    vector: Path
    layers: str = field(metadata=setting(more="Each layer is measured on its own."))
    unit: Unit = "strength"
    values: Sequence[float] = (-0.4, 0.0, 0.4)
    model: str = "smollm2-135m"
    benchmarks: Sequence[str] = field(default=BENCHMARKS, metadata=setting(
        parse=choices(BENCHMARKS), help=",".join(BENCHMARKS)))
    positions: str = "all"
    limit: int = 0
    seed: int = 0
    batch_size: int = field(default=16, metadata=not_a_setting())

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``."""
        return run_settings(self)
