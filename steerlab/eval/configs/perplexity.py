"""``eval perplexity``'s config.

Example:
    >>> PerplexityConfig(out="runs/p", vector="v.safetensors", layers="12").window
    256
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.eval.configs.fields import not_a_setting, run_settings, setting
from steerlab.util.vocabulary import Unit

#: ``--positions`` here: steer every token, or only the continuation after a prompt
POSITIONS = ("all", "generation")


@dataclass
class PerplexityConfig:
    """Perplexity ratio (steered / unsteered) on WikiText-2 test vs strength, with intervals.

    --limit is the number of windows (a seeded choice among all that fit; 0 = all).
    """

    out: str | Path = field(metadata=not_a_setting())
    vector: Path
    layers: str = field(metadata=setting(more="Each layer is measured on its own."))
    unit: Unit = "strength"
    values: Sequence[float] = (0.0, 0.1, 0.2, 0.4)
    model: str = "smollm2-135m"
    positions: str = field(default="all", metadata=setting(
        help="all: steer every token; generation: steer from --prompt-tokens on and score only "
             "those tokens."))
    window: int = field(default=256, metadata=setting(low=(2, "a token count"),
                                                      help="Tokens per window (W)."))
    stride: int = field(default=0, metadata=setting(
        low=(0, "a token count"),
        help="Window start spacing S (0 = W). S < W scores only each window's last S tokens."))
    limit: int = 32
    prompt_tokens: int = field(default=0, metadata=setting(
        low=(0, "a token count"), help="K for --positions generation (0 = W/2)."))
    seed: int = 0
    batch_size: int = field(default=4, metadata=not_a_setting())

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``."""
        return run_settings(self)
