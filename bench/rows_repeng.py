"""Row: RepE/PCA extraction, steerlab ``method="pca"`` vs ``repeng`` 0.4 ``ControlVector.train``.

repeng pins transformers < 5, so it runs in its own virtual environment (``bench/.venv-repeng``,
created on first use with the on-disk torch pinned by ``repeng-constraints.txt``) as a
long-lived worker (``repeng_worker.py``): each repeat times one repeng training call in the
worker, then one steerlab extraction here, alternately; model loading is not timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import Record, caa_items, min_cosine, peer_texts, record, timed_result
from rows_peers import ours

import steerlab
from steerlab.model.aliases import alias_dir

HERE = Path(__file__).parent
VENV = HERE / ".venv-repeng"
PYTHON = VENV / "bin" / "python"
BATCHES = (4, 8, 16, 32)
TUNE_PAIRS = 16


def ensure_venv() -> None:
    """Create ``bench/.venv-repeng`` (torch 2.13.0 CPU first, then repeng, transformers < 5)."""
    if PYTHON.exists():
        return
    pip = [str(VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "-c", str(HERE / "repeng-constraints.txt"), "repeng==0.4.*",
                    "transformers<5"], check=True)


class Worker:
    """The repeng subprocess: JSON commands in, ``@@``-prefixed JSON answers out."""

    def __init__(self, model_dir: Path, inputs: Path) -> None:
        self.proc = subprocess.Popen([str(PYTHON), str(HERE / "repeng_worker.py"),
                                      str(model_dir), str(inputs)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return dict(json.loads(line[2:]))
        raise RuntimeError(f"repeng worker exited ({self.proc.wait()})")

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.ask(cmd="quit")
        self.proc.wait(timeout=60)


def repeng_row(lm: Any, alias: str, n_pairs: int, runs: int, steerlab_batch: int) -> Record:
    """steerlab pca vs repeng pca_diff on the same ``n_pairs`` texts, all layers."""
    ensure_venv()
    items = caa_items(n_pairs)
    texts, sequences = peer_texts(lm, items)
    layers = list(range(lm.n_layers))
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.json"
        inputs.write_text(json.dumps({"texts": texts, "ids": sequences, "layers": layers}))
        worker = Worker(alias_dir(alias), inputs)
        try:
            best, tune_s = _tune(worker)
            def pca() -> Any:
                return ours(lm, items, steerlab_batch, "pca")

            pca()  # warm-up
            mine_t, theirs_t = [], []
            for _ in range(runs):
                theirs_t.append(worker.ask(cmd="train", n_pairs=n_pairs,
                                           batch_size=best)["seconds"])
                seconds, vec = timed_result(pca)
                mine_t.append(seconds)
            worker.ask(cmd="save", path=str(Path(tmp) / "repeng.json"))
            theirs = {int(k): torch.tensor(v) for k, v in
                      json.loads((Path(tmp) / "repeng.json").read_text()).items()}
        finally:
            worker.close()
    return _repeng_record(vec, theirs, worker.ready, mine_t, theirs_t, alias, n_pairs,
                          (steerlab_batch, best, tune_s))


def _tune(worker: Worker) -> tuple[int, dict[int, float]]:
    worker.ask(cmd="train", n_pairs=8, batch_size=BATCHES[0])  # warm-up
    seconds = {b: worker.ask(cmd="train", n_pairs=TUNE_PAIRS, batch_size=b)["seconds"]
               for b in BATCHES}
    return min(seconds, key=lambda b: seconds[b]), seconds


def _repeng_record(vec: Any, theirs: dict[int, torch.Tensor], ready: dict[str, Any],
                   mine_t: list[float], theirs_t: list[float], alias: str, n_pairs: int,
                   batches: tuple[int, int, dict[int, float]]) -> Record:
    mine = vec.directions
    last = max(mine)
    inner = {k: v for k, v in mine.items() if k != last}
    cos_inner, layer = min_cosine(inner, theirs, absolute=True)
    cos_last = abs(steerlab.vector.cosine(mine[last], theirs[last]))
    signed = min(steerlab.vector.cosine(v, theirs[k]) for k, v in inner.items())
    mine_b, theirs_b, tune_s = batches
    tuned = ", ".join(f"{b}:{s:.1f}s" for b, s in tune_s.items())
    note = (f"{alias}, all {len(mine)} layers, same token ids ({ready['retokenized_ok']}/"
            f"{ready['n_texts']} re-tokenize identically under transformers 4); repeng "
            f"pca_diff (sklearn PCA of centred pos-neg diffs = steerlab's pca), batch "
            f"{theirs_b} (tuned on {TUNE_PAIRS} pairs: {tuned}), steerlab batch {mine_b}; "
            f"|cosine| min {cos_inner:.6f} "
            f"over layers 0-{last - 1} (layer {layer}; signed min {signed:.6f}); layer {last}: "
            f"{cos_last:.4f} because repeng reads hidden_states[-1], which HF takes after the "
            f"final norm; model load excluded ({ready['load_s']:.1f}s in repeng)")
    rec = record(f"RepE PCA extraction, {n_pairs} pairs, {alias}", mine_t,
                 "repeng 0.4 ControlVector.train", theirs_t, 3.0, note)
    rec["min_cosine"] = cos_inner
    return rec
