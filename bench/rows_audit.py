"""Row: ``steerlab audit`` at its default sizes on SmolLM2-135M (target: ≤ 15 min on 2 cores),
and the share of the wall time each study took.

Runs the audit of ``caa:refusal`` into a fresh temporary directory (nothing resumed), with the
default judge (``local:qwen2.5-coder-0.5b``, pulled beforehand so the download is not timed).
The record's ``steerlab_s`` is the audit's total; the baseline column holds the 900 s budget,
so ``ratio`` = budget ÷ wall time (≥ 1 meets the target); the note lists each study's seconds
and share and the verdicts.

Example:
    $ .venv/bin/python bench/run.py --only audit
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Record

BUDGET_S = 900.0


def audit_rows(alias: str = "smollm2-135m", data: str = "caa:refusal") -> list[Record]:
    """One record: the audit's wall time vs the 15-minute budget, with per-study shares."""
    from steerlab.eval.protocols.audit import AuditConfig, run
    from steerlab.model.aliases import pull

    pull("qwen2.5-coder-0.5b")  # the default judge: its one-time download is not the audit's
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit"
        started = time.perf_counter()
        verdicts = run(AuditConfig(out=out, data=data, model=alias))
        wall = time.perf_counter() - started
        summary: dict[str, Any] = json.loads((out / "audit.json").read_text())
    per = summary["seconds"]
    shares = ", ".join(f"{k} {v:.0f} s ({v / wall:.0%})" for k, v in per.items())
    found = ", ".join(f"{v.finding}: {v.verdict}" for v in verdicts)
    return [{"measure": f"audit of {data} at default sizes, {alias}", "steerlab_s": wall,
             "baseline": "budget (15 min)", "baseline_s": BUDGET_S, "ratio": BUDGET_S / wall,
             "target": 1.0, "met": wall <= BUDGET_S, "runs": 1, "min_max": [wall, wall],
             "note": f"{shares}; layer {summary['layer']}, strength {summary['strength']:g}; "
                     f"{found}"}]


if __name__ == "__main__":
    for row in audit_rows():
        print(json.dumps(row, indent=2))
