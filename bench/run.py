"""steerlab benchmarks (``make bench``; never part of ``make test``). See ``bench/README.md``.

Rows (``--only`` names), on SmolLM2-135M from steerlab's cache unless noted:
  extract     CAA mean-diff extraction, 200 pairs, all layers: steerlab vs steering-vectors 0.12
  repeng      RepE PCA extraction, 200 pairs, all layers: steerlab vs repeng 0.4 (own venv)
  rss         peak RSS of extraction, 100 vs 1000 pairs, fresh processes
  bf16        bf16 vs fp32 extraction: speed ratio and cosine
  qwen        the ``extract`` row on Qwen2.5-Coder-0.5B
  truncated   one middle layer vs all layers (truncated forward), 64 pairs
  generation  steered vs unsteered generation, batch 1 and 8
  load        cached safetensors load vs GGUF load
  sweep       layer × coefficient sweep (``bench/sweep.py``, when present)
  llamacpp    llama.cpp with the exported control vector vs without, and vs steerlab.generate
  attack      adversarial suffix search: iterations/s and objective at equal wall time vs nanoGCG
  serve       the OpenAI-compatible server: concurrent clients, steered vs not, vs generate
  audit       steerlab audit at its default sizes (target <= 15 min) and each study's share
  vllm        steering inside vLLM (plugin): steered vs unsteered engine, vs steerlab serve, TTFT
Writes ``bench/results/latest.json`` and ``latest.md``; with ``--only`` the rows run replace
their namesakes in the existing files. Ratios are medians of interleaved repeats.

Example:
    $ .venv/bin/python bench/run.py               # everything: ~65 min on 2 cores (sweep ~32)
    $ .venv/bin/python bench/run.py --only extract,repeng --runs 2
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import Record

import steerlab
from steerlab.model.aliases import is_pulled
from steerlab.model.load import LoadedModel, load_model
from steerlab.util.machine import cpu_features, cpu_name

HERE = Path(__file__).parent
RESULTS = HERE / "results"
SMALL, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b"
ROWS = ("extract", "repeng", "rss", "bf16", "qwen", "truncated", "generation", "load", "sweep",
        "llamacpp", "attack", "serve", "audit", "vllm")


class Bench:
    """Runs the selected rows, sharing the loaded model and the tuned batch sizes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._lm: LoadedModel | None = None
        self.batches: tuple[int, int] = (args.batch, 8)  # steerlab seqs, steering-vectors pairs
        self.records: list[Record] = []

    @property
    def lm(self) -> LoadedModel:
        """SmolLM2-135M, loaded on first use (the rss and load rows do not need it here)."""
        if self._lm is None:
            self._lm = load_model(SMALL)
        return self._lm

    def extract(self) -> None:
        from rows_peers import sv_row

        rec, self.batches = sv_row(self.lm, SMALL, self.args.pairs, self.args.runs)
        self.records.append(rec)

    def repeng(self) -> None:
        from rows_repeng import repeng_row

        self.records.append(repeng_row(self.lm, SMALL, self.args.pairs, self.args.runs,
                                       self.batches[0]))

    def rss(self) -> None:
        from rows_memory import rss_row

        small, large = (int(n) for n in self.args.rss_pairs.split(","))
        self.records.append(rss_row(SMALL, self.args.runs, self.batches[0], small, large))

    def bf16(self) -> None:
        from rows_peers import bf16_row

        self.records.append(bf16_row(self.lm, SMALL, self.args.bf16_pairs, self.args.runs,
                                     self.batches[0]))

    def qwen(self) -> None:
        from rows_peers import sv_row

        if not is_pulled(LARGE):
            subprocess.run([str(Path(sys.executable).parent / "steerlab"), "models", "pull",
                            LARGE], check=True)
        lm = load_model(LARGE)
        rec, _ = sv_row(lm, LARGE, self.args.qwen_pairs, max(1, self.args.runs - 1),
                        self.batches)
        self.records.append(rec)

    def truncated(self) -> None:
        from rows_basic import truncated_row

        self.records.append(truncated_row(self.lm, self.args.runs))

    def generation(self) -> None:
        from rows_basic import generation_rows

        self.records += generation_rows(self.lm, self.args.runs)

    def load(self) -> None:
        from rows_basic import load_row

        self.records.append(load_row(SMALL, self.args.runs))

    def sweep(self) -> None:
        if not (HERE / "sweep.py").exists():
            print("bench/sweep.py not present: sweep row skipped", file=sys.stderr)
            return
        module = importlib.import_module("sweep")
        self.records += module.sweep_records(self.lm, self.args.sweep_runs)

    def llamacpp(self) -> None:
        from rows_llamacpp import llamacpp_rows

        self.records += llamacpp_rows(self.lm, self.args.runs)

    def attack(self) -> None:
        from rows_attack import attack_rows

        self.records += attack_rows(self.lm, SMALL, runs=self.args.runs, steps=4, width=64,
                                    threads=1)

    def audit(self) -> None:
        from rows_audit import audit_rows

        self.records += audit_rows(SMALL)

    def serve(self) -> None:
        from rows_serve import serve_rows

        self.records += serve_rows(self.lm, self.args.runs)

    def vllm(self) -> None:
        from rows_vllm import vllm_rows

        self.records += vllm_rows(self.lm, self.args.runs)

    def run(self, rows: list[str]) -> list[Record]:
        for name in rows:
            started = time.perf_counter()
            step: Callable[[], None] = getattr(self, name)
            done = len(self.records)
            step()
            for rec in self.records[done:]:
                rec["row"] = name
            print(f"[bench] {name}: {time.perf_counter() - started:.0f}s", file=sys.stderr,
                  flush=True)
        return self.records


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _repeng_versions() -> dict[str, str | None]:
    python = HERE / ".venv-repeng" / "bin" / "python"
    if not python.exists():
        return {"repeng": None, "repeng_transformers": None}
    code = ("import importlib.metadata as m, json; print(json.dumps([m.version('repeng'), "
            "m.version('transformers'), m.version('torch')]))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    repeng, transformers, repeng_torch = json.loads(out.stdout)
    return {"repeng": repeng, "repeng_transformers": transformers, "repeng_torch": repeng_torch}


def environment(load_before: float, wall_s: float) -> Record:
    """Machine and versions; load averages tell how noisy the timings were."""
    return {"measure": "environment", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "cpu_features": cpu_features(),
            "python": platform.python_version(), "steerlab": steerlab.__version__,
            "transformers": _version("transformers"),
            "steering_vectors": _version("steering-vectors"), **_repeng_versions(),
            "load_avg_start": load_before, "load_avg_end": os.getloadavg()[0],
            "wall_s": round(wall_s), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def stamp(records: list[Record]) -> list[Record]:
    """Each row says where and when it was measured (its run's environment record), so rows
    kept from an earlier run on another machine are not read as this machine's."""
    env = next((r for r in records if r["measure"] == "environment"), {})
    where = " ".join(str(x) for x in (str(env.get("date", "?"))[:10], env.get("cpu", "?"),
                                       env.get("cpu_features", "")) if x)
    return [r if r["measure"] == "environment" or "measured_on" in r
            else {**r, "measured_on": where} for r in records]


def merge(old: list[Record], new: list[Record]) -> list[Record]:
    """Rows just measured replace every earlier record of the same row (whatever sizes it was
    run at); the rows kept keep their own machine and date; the environment record (this
    run's) goes last."""
    fresh = {r.get("row") for r in new} - {None}
    kept = [r if "measured_on" in r else {**r, "measured_on": "an earlier run (not recorded)"}
            for r in old if r.get("row") not in fresh]
    rows = [r for r in kept + stamp(new) if r["measure"] != "environment"]
    return rows + [r for r in new if r["measure"] == "environment"]


def markdown(records: list[Record]) -> str:
    """The results as a Markdown table (seconds unless the measure says MB)."""
    lines = ["| measure | steerlab | baseline | baseline value | ratio | target | met | runs "
             "| steerlab min–max | note | measured on |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["measure"] == "environment":
            continue
        lo, hi = r["min_max"]
        lines.append(f"| {r['measure']} | {r['steerlab_s']:.3f} | {r['baseline']} | "
                     f"{r['baseline_s']:.3f} | {r['ratio']:.2f} | {r['target']:.2f} | "
                     f"{'yes' if r['met'] else 'no'} | {r['runs']} | {lo:.3f}–{hi:.3f} | "
                     f"{r['note']} | {r.get('measured_on', '?')} |")
    env = next((r for r in records if r["measure"] == "environment"), None)
    if env:
        lines.append("\n" + ", ".join(f"{k}: {v}" for k, v in env.items() if k != "measure"))
    return "\n".join(lines) + "\n"


def write(records: list[Record], partial: bool) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "latest.json"
    records = merge(json.loads(path.read_text()), records) if partial and path.exists() \
        else stamp(records)
    tmp = RESULTS / "latest.json.tmp"
    tmp.write_text(json.dumps(records, indent=2))
    tmp.replace(path)
    (RESULTS / "latest.md").write_text(markdown(records))
    print(markdown(records))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed repeats per row (median)")
    parser.add_argument("--only", default=",".join(ROWS),
                        help=f"comma-separated rows to run: {', '.join(ROWS)}")
    parser.add_argument("--pairs", type=int, default=200, help="pairs for extract/repeng")
    parser.add_argument("--qwen-pairs", type=int, default=64, help="pairs for the qwen row")
    parser.add_argument("--rss-pairs", default="100,1000", help="small,large pair counts")
    parser.add_argument("--bf16-pairs", type=int, default=64, help="pairs for the bf16 row")
    parser.add_argument("--sweep-runs", type=int, default=1,
                        help="repeats of the sweep row (each baseline grid takes ~8 min)")
    parser.add_argument("--batch", type=int, default=8,
                        help="steerlab batch size when the extract row (which tunes it) is skipped")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = parse_args()
    load_before, started = os.getloadavg()[0], time.perf_counter()
    rows = [r for r in ROWS if r in args.only.split(",")]
    records = Bench(args).run(rows)
    records.append(environment(load_before, time.perf_counter() - started))
    write(records, partial=len(rows) < len(ROWS))


if __name__ == "__main__":
    main()
