"""Naive reference loops: the plainest way to compute what the fast paths compute.

Test oracles (and the benchmarks' baselines), never used by the library itself: one steering
context per sweep cell, the ordinary batched scorer inside it.

Example:
    >>> ref = naive_sweep(lm, val, vec, [12], [-1, 1])                 # doctest: +SKIP
    >>> ref[(12, 1.0)].mean                                          # doctest: +SKIP
    0.61
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steerlab.data.formats import ABItem
from steerlab.data.loaders import Dataset
from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.scoring.ab import ABResult, score_ab, score_answers
from steerlab.scoring.sweep import LayerKey
from steerlab.steering.spec import SteeringSpec
from steerlab.util.vocabulary import Unit
from steerlab.vector import SteeringVector

SCORERS = {"ab": score_ab, "open": score_answers}


def naive_sweep(model: LoadedModel | Any, data: Dataset | Sequence[ABItem],
                vector: SteeringVector, layers: Sequence[int | Sequence[int]],
                values: Sequence[float], *, form: str = "ab", unit: Unit = "coefficient",
                positions: str = "all", batch_size: int = 1, system: str | None = None,
                progress: bool = False) -> dict[tuple[LayerKey, float], ABResult]:
    """Every (layer group, value) cell scored on its own: ``score_ab`` (``form="ab"``) or
    ``score_answers`` (``"open"``) inside one steering context per cell.

    Example:
        >>> ref = naive_sweep(lm, items, vec, [12], [-1, 1], form="open")   # doctest: +SKIP
    """
    if form not in SCORERS:
        raise SteerlabError(f"form must be one of {', '.join(SCORERS)}, got {form!r}")
    lm = as_loaded(model)
    groups = [tuple(x) if isinstance(x, Sequence) else (int(x),) for x in layers]
    out: dict[tuple[LayerKey, float], ABResult] = {}
    cells = [(g, float(v)) for g in groups for v in values]
    for group, value in cells:
        spec = SteeringSpec.at(vector, list(group), value, unit=unit, positions=positions)
        key = group[0] if len(group) == 1 else group
        out[(key, value)] = SCORERS[form](lm, data, spec, batch_size=batch_size, system=system)
    return out
