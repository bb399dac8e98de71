"""Shared helpers of the benchmark rows: timing, records, inputs both libraries read alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

import steerlab
from steerlab.extraction import pair_sequences

Record = dict[str, Any]


def timed_result(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock seconds of one call, and what it returned."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def timed(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call."""
    return timed_result(fn)[0]


def interleave(a: Callable[[], Any], b: Callable[[], Any], runs: int,
               warm: bool = True) -> tuple[list[float], list[float]]:
    """Alternate ``a`` and ``b`` ``runs`` times (after one warm-up call each when ``warm``)."""
    if warm:
        a(), b()
    ta, tb = [], []
    for _ in range(runs):
        ta.append(timed(a))
        tb.append(timed(b))
    return ta, tb


def record(measure: str, mine: list[float], baseline: str, base: list[float], target: float,
           note: str, higher_is_better: bool = False) -> Record:
    """One result row; ``ratio`` = how many times better steerlab is (median vs median).

    ``higher_is_better`` means the numbers are rates or ratios, not seconds.
    """
    m, b = statistics.median(mine), statistics.median(base)
    ratio = (m / b) if higher_is_better else (b / m)
    return {"measure": measure, "steerlab_s": m, "baseline": baseline, "baseline_s": b,
            "ratio": ratio, "target": target, "met": ratio >= target, "runs": len(mine),
            "min_max": [min(mine), max(mine)], "note": note}


def caa_items(n: int, behaviours: Sequence[str] = ("sycophancy",)) -> list[Any]:
    """The first ``n`` CAA train items, concatenating behaviours when one has too few."""
    items: list[Any] = []
    for name in behaviours:
        items += list(steerlab.load_dataset(f"caa:{name}", split="train").items)
        if len(items) >= n:
            return items[:n]
    raise RuntimeError(f"only {len(items)} CAA train items in {', '.join(behaviours)}; need {n}")


def peer_texts(lm: Any, items: Sequence[Any]) -> tuple[list[str], list[list[int]]]:
    """Texts that a peer library re-tokenizes to exactly steerlab's sequences.

    steerlab reads the A/B answer token, the last token of ``prefix + letter``; peers read the
    last token of the strings they are given. Decoding steerlab's token sequences (chat
    template included) gives strings ending at that letter; the check below makes sure the
    peer's tokenizer gives back the same ids, so both read the identical position.
    """
    sequences, _ = pair_sequences(lm, items)
    texts = [lm.tokenizer.decode(seq) for seq in sequences]
    bad = sum(lm.tokenizer(t)["input_ids"] != s for t, s in zip(texts, sequences, strict=True))
    if bad:
        raise RuntimeError(f"{bad} decoded texts do not re-tokenize to steerlab's sequences")
    return texts, sequences


def min_cosine(ours: dict[int, torch.Tensor], theirs: dict[int, torch.Tensor],
               absolute: bool = False) -> tuple[float, int]:
    """Smallest per-layer cosine (``abs`` of it when sign is arbitrary) and its layer."""
    cos = {}
    for k, v in ours.items():
        c = steerlab.vector.cosine(v, theirs[k].float())
        cos[k] = abs(c) if absolute else c
    worst = min(cos, key=lambda k: cos[k])
    return cos[worst], worst


def best_batch(candidates: Sequence[int], run: Callable[[int], Any]) -> tuple[int, dict[int,
                                                                                          float]]:
    """Time ``run(batch_size)`` once per candidate (after one warm-up) and keep the fastest."""
    run(candidates[0])
    seconds = {b: timed(lambda b=b: run(b)) for b in candidates}
    return min(seconds, key=lambda b: seconds[b]), seconds
