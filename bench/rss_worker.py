"""Peak memory of one extraction in a fresh process (``bench/rows_memory.py`` starts it).

``argv = [alias, n_pairs, batch_size]``. Loads the model, builds the CAA pairs (behaviours
concatenated when one has too few), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``
``5``), extracts ``mean_diff`` at all layers, and prints one JSON line: the peak RSS during the
extraction (``VmHWM`` after the reset), the process's lifetime ``ru_maxrss``, the RSS before.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from common import caa_items

import steerlab

BEHAVIOURS = ("sycophancy", "hallucination", "myopic-reward", "survival-instinct")


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    alias, n_pairs, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    lm = steerlab.load_model(alias)
    items = caa_items(n_pairs, BEHAVIOURS)
    before = status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    steerlab.extract(lm, items, method="mean_diff", layers="all", batch_size=batch_size,
                     progress=False)
    peak = status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n_pairs": n_pairs, "peak_mb": peak / 1024, "before_mb": before / 1024,
                      "lifetime_max_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      / 1024, "reset": reset}))


if __name__ == "__main__":
    main()
