"""``eval samples``'s config.

Example:
    >>> SamplesConfig(out="runs/n", data="caa:refusal", layer=14).settings()["sizes"][-1]
    320
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.eval.configs.fields import counts, not_a_setting, one_layer, run_settings, setting
from steerlab.util.vocabulary import Unit


@dataclass
class SamplesConfig:
    """Effect and cosine to the full-data vector vs the number of contrast pairs (plateau)."""

    out: str | Path = field(metadata=not_a_setting())
    data: str
    layer: int = field(metadata=setting(flag="--layers", parse=one_layer,
                                        help="The one layer to extract and steer at, e.g. 14."))
    unit: Unit = "strength"
    values: Sequence[float] = (-0.4, 0.4)
    sizes: Sequence[int] = field(default=(1, 2, 5, 10, 20, 40, 80, 160, 320),
                                 metadata=setting(flag="--n", parse=counts,
                                                  help="Pair counts to try."))
    seeds: int = field(default=5, metadata=setting(low=(1, "a count"),
                                                   help="Random draws per pair count."))
    model: str = "smollm2-135m"
    method: str = "mean_diff"
    split: str = "test"
    train_limit: int = 0
    form: str = field(default="open", metadata=setting(key="format", flag="--format"))
    limit: int = 0
    seed: int = 0
    batch_size: int = field(default=16, metadata=not_a_setting())

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``."""
        return run_settings(self)
