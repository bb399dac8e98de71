"""Row: peak RSS of a ``mean_diff`` extraction of 100 vs 1000 CAA pairs, fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import Record, record

WORKER = Path(__file__).parent / "rss_worker.py"


def peak(alias: str, n_pairs: int, batch_size: int) -> dict[str, Any]:
    """Run one extraction in a fresh interpreter; its JSON report."""
    out = subprocess.run([sys.executable, str(WORKER), alias, str(n_pairs), str(batch_size)],
                         check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def rss_row(alias: str, runs: int, batch_size: int, small: int = 100,
            large: int = 1000) -> Record:
    """Peak RSS during extraction (MB); ratio = small / large (1.0 = flat).

    Target ≥ 1/1.1: the large run's peak is within 10 % of the small run's.
    """
    small_r, large_r = [], []
    for _ in range(runs):
        small_r.append(peak(alias, small, batch_size))
        large_r.append(peak(alias, large, batch_size))
    rec = record(f"peak RSS of extraction, {large} vs {small} pairs (MB)",
                 [r["peak_mb"] for r in large_r], f"{small} pairs",
                 [r["peak_mb"] for r in small_r], 0.9,
                 f"{alias}, mean_diff, all layers, batch {batch_size}, fresh process each; peak "
                 f"RSS during extract() (VmHWM after a reset; model ~"
                 f"{small_r[0]['before_mb']:.0f} MB resident before); lifetime ru_maxrss "
                 f"{small_r[0]['lifetime_max_mb']:.0f} / {large_r[0]['lifetime_max_mb']:.0f} MB; "
                 "ratio = small/large peak; 'steerlab_s'/'baseline_s' hold MB here")
    return rec
