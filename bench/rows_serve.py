"""Server rows: throughput and latency of ``steerlab serve`` (uvicorn + the openai client).

On SmolLM2-135M with four vectors extracted from the built-in optimism pairs, 16 chat
prompts, ``ignore_eos`` so that every request generates exactly ``new_tokens`` tokens:
  - 16 concurrent clients, 4 different vectors (and strengths) vs the same requests one at a
    time through the same server (target ≥ 4×);
  - 16 concurrent clients all steered vs all unsteered (target ≥ 0.95);
  - the 16 concurrent steered clients vs ``model.generate`` on the same 16 prompts as one
    left-padded batch, greedy, the same number of new tokens, no server (target ≥ 0.8);
  - p50 / p95 latency and time to first token (streamed) at 1, 4 and 16 clients (report).
Throughputs are new tokens / wall second, medians of interleaved repeats.

Example:
    $ .venv/bin/python bench/rows_serve.py --runs 1 --new-tokens 32     # on its own
    # in bench/run.py: ROWS += ("serve",) and
    #     def serve(self) -> None:
    #         from rows_serve import serve_rows
    #         self.records += serve_rows(self.lm, self.args.runs)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from common import Record, record

import steerlab
from steerlab.model.prompts import prompt_ids
from steerlab.serve import background
from steerlab.serve.app import ServerConfig, create_app
from steerlab.serve.registry import VectorRegistry
from steerlab.util.seq import left_pad
from steerlab.vector import SteeringVector

MODEL = "smollm2-135m"
PROMPTS = [
    "Describe Mondays.", "What do you think about rain?", "Tell me about getting older.",
    "My team lost the match yesterday. What now?", "I am starting a new job tomorrow.",
    "Describe what the next ten years could look like.", "How was your day?",
    "What is the point of homework?", "Write a note to a friend who moved away.",
    "What should I cook tonight?", "Explain why people like music.", "Tell me about winter.",
    "Give me advice about learning to swim.", "What happens when the power goes out?",
    "Describe a busy train station.", "What do you think of long meetings?",
]


def _vectors(lm: Any) -> dict[str, SteeringVector]:
    train = steerlab.load_dataset("builtin:optimism_pairs", split="train")
    optimism = steerlab.extract(lm, train, layers=[8, 10, 12], progress=False)
    torch.manual_seed(0)
    noise = SteeringVector({k: torch.randn(lm.hidden_size) * v.norm() / 24
                            for k, v in optimism.directions.items()}, optimism.manifest)
    mixed = SteeringVector({k: optimism.directions[k] + noise.directions[k]
                            for k in optimism.layers}, optimism.manifest)
    return {"optimism": optimism, "pessimism": -optimism, "noise": noise, "mixed": mixed}


#: Four vectors with different layers, strengths and positions: one per client in turn.
STEERINGS: list[dict[str, Any]] = [
    {"vectors": [{"name": "optimism", "layers": [10], "strength": 0.3}]},
    {"vectors": [{"name": "pessimism", "layers": [8, 12], "strength": 0.2,
                  "positions": "generation"}]},
    {"vectors": [{"name": "noise", "layers": [10], "strength": 0.4}]},
    {"vectors": [{"name": "mixed", "layers": [12], "strength": 0.25}]},
]


class _Clients:
    """Requests against one running server; each returns (latency s, TTFT s, new tokens)."""

    def __init__(self, url: str, new_tokens: int):
        import openai

        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", timeout=600,
                                    max_retries=0)
        self.new_tokens = new_tokens

    def one(self, prompt: str, steering: Any, stream: bool = False) -> tuple[float, float, int]:
        start = time.perf_counter()
        body = {"steering": steering, "ignore_eos": True}
        messages = [{"role": "user", "content": prompt}]
        if not stream:
            r = self.client.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=self.new_tokens,  # type: ignore[arg-type]
                temperature=0, extra_body=body)
            took = time.perf_counter() - start
            return took, took, r.usage.completion_tokens if r.usage else 0
        first = None
        tokens = 0
        chunks = self.client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=self.new_tokens,  # type: ignore[arg-type]
            temperature=0, stream=True, stream_options={"include_usage": True}, extra_body=body)
        for chunk in chunks:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        took = time.perf_counter() - start
        return took, first if first is not None else took, tokens

    def together(self, requests: Sequence[tuple[str, Any]],
                 stream: bool = False) -> list[tuple[float, float, int]]:
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            return list(pool.map(lambda r: self.one(*r, stream=stream), requests))


def _rate(fn: Callable[[], Sequence[tuple[float, float, int]]]) -> Callable[[], float]:
    """A callable that runs ``fn`` and returns its new tokens per wall second."""
    def run() -> float:
        start = time.perf_counter()
        results = fn()
        return sum(n for _, _, n in results) / (time.perf_counter() - start)
    return run


def _interleave_rates(a: Callable[[], float], b: Callable[[], float],
                      runs: int) -> tuple[list[float], list[float]]:
    a(), b()  # warm-up
    ra, rb = [], []
    for _ in range(runs):
        ra.append(a())
        rb.append(b())
    return ra, rb


def _hf_generate(lm: Any, prompts: Sequence[str], new_tokens: int) -> Callable[[], float]:
    ids = [prompt_ids(lm.tokenizer, p)[0] for p in prompts]
    batch = left_pad(ids, lm.pad_id)

    def run() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"],
                                    max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                    do_sample=False, pad_token_id=lm.pad_id)
        made = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
        return made / (time.perf_counter() - start)
    return run


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def serve_rows(lm: Any, runs: int, clients: int = 16, new_tokens: int = 64,
               latency_clients: Sequence[int] = (1, 4, 16)) -> list[Record]:
    """The server's benchmark records (see the module docstring)."""
    import tempfile

    vectors = _vectors(lm)
    records: list[Record] = []
    prompts = (PROMPTS * (clients // len(PROMPTS) + 1))[:clients]
    mixed = [(p, STEERINGS[i % len(STEERINGS)]) for i, p in enumerate(prompts)]
    steered_all = [(p, STEERINGS[0]) for p in prompts]
    plain = [(p, None) for p in prompts]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: v.save(Path(tmp) / f"{n}.safetensors") for n, v in vectors.items()}
        registry = VectorRegistry.from_paths(paths, lm)
        config = ServerConfig(model_name=MODEL, max_batch=clients, max_queue=4 * clients,
                              max_tokens=max(new_tokens, 16))
        app = create_app(lm, registry, config)
        with background(app) as url:
            c = _Clients(url, new_tokens)
            scheduler = app.state.server.scheduler

            concurrent, one_by_one = _interleave_rates(
                _rate(lambda: c.together(mixed)),
                _rate(lambda: [c.one(*r) for r in mixed]), runs)
            stats = scheduler.stats()
            records.append(record(
                f"server tokens/s, {clients} concurrent clients × {new_tokens} new tokens, "
                f"4 vectors", concurrent, "the same requests one at a time", one_by_one, 4.0,
                f"tokens/s; at most {stats['max_live']} rows at once, {stats['batches']} "
                "batches so far", higher_is_better=True))

            steered, unsteered = _interleave_rates(
                _rate(lambda: c.together(steered_all)), _rate(lambda: c.together(plain)), runs)
            records.append(record(
                f"server, all {clients} rows steered vs all unsteered", steered,
                "all unsteered through the server", unsteered, 0.95,
                "tokens/s ratio; steered = optimism at layer 10, strength 0.3",
                higher_is_better=True))

            hf = _hf_generate(lm, prompts, new_tokens)
            served, generated = _interleave_rates(_rate(lambda: c.together(mixed)), hf, runs)
            records.append(record(
                f"server ({clients} clients, 4 vectors) vs model.generate, one batch of "
                f"{clients}", served, "HF model.generate (unsteered, no server)", generated,
                0.8, "tokens/s ratio; greedy, the same prompts and new tokens",
                higher_is_better=True))

            for n in latency_clients:
                latencies: list[float] = []
                firsts: list[float] = []
                rounds = max(1, runs) * max(1, 4 // n)
                c.together(mixed[:n], stream=True)  # warm-up
                for _ in range(rounds):
                    for took, first, _ in c.together(mixed[:n], stream=True):
                        latencies.append(took)
                        firsts.append(first)
                p50, p95 = statistics.median(latencies), _pct(latencies, 0.95)
                t50, t95 = statistics.median(firsts), _pct(firsts, 0.95)
                records.append({
                    "measure": f"latency at {n} client(s), {new_tokens} new tokens, streamed",
                    "steerlab_s": p50, "baseline": "time to first token (p50)",
                    "baseline_s": t50, "ratio": p95 / p50, "target": 0.0, "met": True,
                    "runs": len(latencies), "min_max": [min(latencies), max(latencies)],
                    "note": f"report: latency p50 {p50:.2f} s, p95 {p95:.2f} s; TTFT p50 "
                            f"{t50:.3f} s, p95 {t95:.3f} s; ratio = p95/p50"})
    return records


def run_standalone(rows: Callable[..., list[Record]], description: str) -> None:
    """``python bench/rows_X.py``: the server-style options, then the rows as a table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--latency-clients", default="1,4,16")
    args = parser.parse_args()
    from steerlab.model.load import load_model

    lm = load_model(MODEL)
    started = time.perf_counter()
    records = rows(lm, args.runs, args.clients, args.new_tokens,
                   [int(x) for x in args.latency_clients.split(",")])
    print("| measure | steerlab | baseline | baseline value | ratio | target | met | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['measure']} | {r['steerlab_s']:.3f} | {r['baseline']} | "
              f"{r['baseline_s']:.3f} | {r['ratio']:.2f} | {r['target']:.2f} | "
              f"{'yes' if r['met'] else 'no'} | {r['note']} |")
    print(f"\n{time.perf_counter() - started:.0f} s, torch threads {torch.get_num_threads()}",
          file=sys.stderr)


def main() -> None:
    run_standalone(serve_rows, "steerlab serve benchmark rows")


if __name__ == "__main__":
    main()
