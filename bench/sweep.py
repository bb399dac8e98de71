"""Sweep-engine rows for ``bench/run.py``: layer × coefficient grid vs naive loops.

10 layers (0, 3, ..., 27) × 5 coefficients (-2..2) × 50 CAA sycophancy A/B items on
SmolLM2-135M. Baselines use steerlab's own hooks (so only the loop structure differs):

* naive: one steering context per cell, one item per forward (``naive_sweep`` batch 1);
* batched-naive: one steering context per cell, 16 items per forward (``batch_size=16``).

Both with steering at every position (the engine's layer-prefix reuse) and with CAA's
``after_instruction`` positions (the engine's KV-cache token-prefix reuse). Scores must agree
(max |Δ| reported in the note).

Example:
    $ .venv/bin/python bench/run.py --only sweep
"""

from __future__ import annotations

from typing import Any

from common import record, timed_result

import steerlab
from steerlab.scoring.sweep import sweep_ab
from steerlab.testing.reference import naive_sweep

LAYERS = list(range(0, 30, 3))
VALUES = [-2.0, -1.0, 0.0, 1.0, 2.0]


def _max_delta(a: dict[Any, Any], b: dict[Any, Any]) -> float:
    return max(abs(x - y) for key in a for x, y in zip(a[key].scores, b[key].scores, strict=True))


def work_bound(n_layers: int) -> float:
    """Best ratio any exact reuse can reach vs the batched-naive loop with steering at every
    position: the naive loop runs all blocks for every cell; the layer-prefix engine runs them
    once unsteered (every coefficient-0 cell) plus, per non-zero cell at layer L, the blocks
    above L. Ignores the LM head and padding.

    Example:
        >>> round(work_bound(30), 2)
        2.31
    """
    above = sum((n_layers - 1 - layer) / n_layers for layer in LAYERS)
    nonzero = sum(1 for v in VALUES if v != 0.0)
    return len(LAYERS) * len(VALUES) / (1 + nonzero * above)


def sweep_records(lm: Any, runs: int) -> list[dict[str, Any]]:
    """Engine vs naive and batched-naive sweeps, interleaved; one record per comparison."""
    train = steerlab.load_dataset("caa:sycophancy", split="train").subset(64, 0)
    items = list(steerlab.load_dataset("caa:sycophancy", split="val"))[:50]
    vec = steerlab.extract(lm, train, layers=LAYERS, progress=False)
    grid = f"{len(LAYERS)} layers × {len(VALUES)} coefficients × {len(items)} items"
    records = []
    for positions in ("after_instruction", "all"):
        engine_t, batched_t = [], []
        delta = 0.0

        def engine(p: str = positions) -> Any:
            return sweep_ab(lm, items, vec, LAYERS, VALUES, positions=p, batch_size=16)

        def batched(p: str = positions) -> Any:
            return naive_sweep(lm, items, vec, LAYERS, VALUES, positions=p, batch_size=16)

        for _ in range(runs):
            t, fast = timed_result(engine)
            engine_t.append(t)
            t, slow = timed_result(batched)
            batched_t.append(t)
            delta = max(delta, _max_delta(fast, slow))
        reuse = "layer-prefix" if positions == "all" else "KV-cache token-prefix"
        bound = (f"; work bound for this grid {work_bound(lm.n_layers):.2f}× (every cell must "
                 "rerun the blocks above its layer at every position)" if positions == "all"
                 else "")
        records.append(record(
            f"layer × coefficient sweep ({grid}), positions={positions}", engine_t,
            "batched-naive loop (hook per cell, 16 items per forward)", batched_t, 3.0,
            f"engine: {reuse} reuse + per-row coefficients; max |Δscore| vs baseline "
            f"{delta:.1e}{bound}"))
        if positions == "all":
            t_naive, slow = timed_result(
                lambda: naive_sweep(lm, items, vec, LAYERS, VALUES, batch_size=1))
            delta1 = _max_delta(fast, slow)
            records.append(record(
                f"layer × coefficient sweep ({grid}), positions=all", engine_t,
                "naive loop (hook per cell, one item per forward; 1 run)", [t_naive], 3.0,
                f"max |Δscore| vs baseline {delta1:.1e}"))
    return records
