"""Rows: CAA mean-difference extraction, steerlab vs ``steering-vectors``; bf16 vs fp32.

Both libraries get the same token sequences (see :func:`common.peer_texts`), all layers, and
each its best batch size from a short tuning pass on a subset of the pairs.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from common import Record, best_batch, caa_items, interleave, min_cosine, peer_texts, record

import steerlab

SV_BATCHES = (4, 8, 16, 32)
STEERLAB_BATCHES = (8, 16, 32, 64)
TUNE_PAIRS = 16


def sv_train(lm: Any, samples: list[tuple[str, str]], batch_size: int) -> dict[int, torch.Tensor]:
    """steering-vectors' documented training call, reading the last token of each string."""
    import steering_vectors as sv

    vector = sv.train_steering_vector(lm.model, lm.tokenizer, samples,
                                      layers=list(range(lm.n_layers)), read_token_index=-1,
                                      batch_size=batch_size)
    return {k: v.float() for k, v in vector.layer_activations.items()}


def ours(lm: Any, items: list[Any], batch_size: int, method: str = "mean_diff") -> Any:
    return steerlab.extract(lm, items, method=method, layers="all", batch_size=batch_size,
                            progress=False)


def tune(lm: Any, items: list[Any], samples: list[tuple[str, str]]) -> tuple[int, int, str]:
    """Best batch sizes (steerlab counts sequences, steering-vectors counts pairs)."""
    mine, mine_s = best_batch(STEERLAB_BATCHES, lambda b: ours(lm, items[:TUNE_PAIRS], b))
    theirs, theirs_s = best_batch(SV_BATCHES, lambda b: sv_train(lm, samples[:TUNE_PAIRS], b))
    fmt = ", ".join
    note = (f"tuned on {TUNE_PAIRS} pairs: steerlab "
            f"{fmt(f'{b}:{s:.1f}s' for b, s in mine_s.items())}; steering-vectors "
            f"{fmt(f'{b}:{s:.1f}s' for b, s in theirs_s.items())}")
    return mine, theirs, note


def sv_row(lm: Any, alias: str, n_pairs: int, runs: int,
           batches: tuple[int, int] | None = None) -> tuple[Record, tuple[int, int]]:
    """steerlab ``mean_diff`` vs ``train_steering_vector`` on ``n_pairs`` CAA pairs."""
    items = caa_items(n_pairs)
    texts, _ = peer_texts(lm, items)
    samples = list(zip(texts[0::2], texts[1::2], strict=True))
    if batches is None:
        mine_b, theirs_b, tune_note = tune(lm, items, samples)
    else:
        (mine_b, theirs_b), tune_note = batches, "batch sizes tuned on SmolLM2-135M"
    results: dict[str, Any] = {}

    def run_ours() -> None:
        results["ours"] = ours(lm, items, mine_b)

    def run_theirs() -> None:
        results["theirs"] = sv_train(lm, samples, theirs_b)

    mine_t, theirs_t = interleave(run_ours, run_theirs, runs, warm=False)
    cos, layer = min_cosine(results["ours"].directions, results["theirs"])
    note = (f"{alias}, all {lm.n_layers} layers, same token ids (answer letter); batch "
            f"steerlab {mine_b} seqs, steering-vectors {theirs_b} pairs; min cosine "
            f"{cos:.6f} (layer {layer}); {tune_note}")
    rec = record(f"CAA mean-diff extraction, {n_pairs} pairs, {alias}", mine_t,
                 "steering-vectors 0.12 train_steering_vector", theirs_t, 2.0, note)
    rec["min_cosine"] = cos
    rec["met"] = rec["met"] and cos >= 0.999
    return rec, (mine_b, theirs_b)


def bf16_row(fp32: Any, alias: str, n_pairs: int, runs: int, batch_size: int) -> Record:
    """The same extraction with the model in bfloat16 vs float32 (``fp32``, already loaded):
    speed ratio and cosine."""
    bf16 = steerlab.load_model(alias, dtype=torch.bfloat16)
    items = caa_items(n_pairs)
    results: dict[str, Any] = {}

    def run(lm: Any, key: str) -> None:
        results[key] = ours(lm, items, batch_size)

    bf_t, fp_t = interleave(lambda: run(bf16, "bf16"), lambda: run(fp32, "fp32"), runs)
    cos, layer = min_cosine(results["bf16"].directions, results["fp32"].directions)
    median = statistics.median(steerlab.vector.cosine(v, results["fp32"].directions[k])
                               for k, v in results["bf16"].directions.items())
    cpu_flags = _bf16_flags()
    note = (f"{alias}, {n_pairs} pairs, all layers, batch {batch_size}; min cosine bf16 vs "
            f"fp32 {cos:.5f} (layer {layer}), median over layers {median:.5f}; ratio > 1 = "
            f"bf16 faster; CPU bf16 support: {cpu_flags}")
    rec = record(f"bf16 vs fp32 extraction ({n_pairs} pairs)", bf_t, "steerlab fp32", fp_t, 1.0,
                 note)
    rec["min_cosine"] = cos
    return rec


def _bf16_flags() -> str:
    from steerlab.util.machine import cpu_flags

    flags = cpu_flags()
    if not flags:
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) or "none (no avx512_bf16/amx_bf16)"
