"""``eval adversarial``'s config.

Example:
    >>> AdversarialConfig(out="runs/a", vector="v.safetensors", layers="12").value
    0.4
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.eval.configs.fields import not_a_setting, run_settings, setting
from steerlab.util.vocabulary import Unit

#: The suffix searches
METHODS = ("epo", "gcg")


@dataclass
class AdversarialConfig:
    """Search suffixes that reverse the steering on held-out items (EPO or GCG), against the
    same budget of random suffixes; success rates and the suffixes' cross-entropy vs natural
    text."""

    out: str | Path = field(metadata=not_a_setting())
    vector: Path
    layers: str = field(metadata=setting(more="Steered together."))
    value: float = field(default=0.4, metadata=setting(help="One value, default 0.4. "))
    data: str = "caa:refusal"
    unit: Unit = "strength"
    model: str = "smollm2-135m"
    objective: str = field(default="ab_flip", metadata=setting(
        help="ab_flip (push the A/B answer back to the other letter), answer (log-probability "
             "of the not-steered-for answer text) or projection (push the activation's "
             "projection on the vector back down)."))
    method: str = field(default="epo", metadata=setting(
        flag="--search",
        help="epo (a population trading objective against the suffix's cross-entropy) or gcg "
             "(objective only)."))
    suffix_length: int = field(default=12, metadata=setting(
        low=(1, "a count"), help="Suffix length in tokens."))
    iterations: int = field(default=30, metadata=setting(
        low=(1, "a count"), help="Search iterations per item."))
    population: int = field(default=4, metadata=setting(
        low=(1, "a count"), help="EPO population size (GCG: multiplies --children)."))
    children: int = field(default=16, metadata=setting(
        low=(1, "a count"), help="Candidates per member per iteration."))
    topk: int = field(default=256, metadata=setting(cli=False))
    projection_layer: int | None = field(default=None, metadata=setting(
        help="Where the projection objective reads (default: two blocks after the last "
             "steered layer)."))
    positions: str = "all"
    limit: int = 10
    seed: int = 0

    def settings(self) -> dict[str, Any]:
        """What ``run.json`` records: every field not marked ``not_a_setting``."""
        return run_settings(self)
