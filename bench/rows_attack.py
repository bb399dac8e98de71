"""Rows: adversarial suffix search (``steerlab.attack``) vs nanoGCG 0.3, and its memory.

* **iterations/s** at equal candidates per step, SmolLM2-135M, the same objective: GCG on the
  mean cross-entropy of a target answer after a chat prompt (``steerlab.attack.answer``; in
  nanoGCG that is its target loss), 20-token suffix, top-k 256, one token swapped per
  candidate, the same start (``" x" × 20``), unsteered on both sides (nanoGCG cannot steer).
  nanoGCG runs with ``use_prefix_cache=False`` — its only mode that works under transformers
  5, and here it runs under transformers 4 anyway because it pins ``transformers<=4.47.1``:
  it lives in its own venv (``bench/.venv-nanogcg``, made on first use: the on-disk torch
  2.13.0 CPU first, then ``nanogcg==0.3.0`` with transformers < 5) as a long-lived worker
  (this file run with ``--nanogcg-worker``), like the repeng row. Steady-state seconds per
  iteration are medians of the gaps between consecutive iterations (nanoGCG: between its
  token-gradient calls; steerlab: its step records), so set-up is excluded on both sides.
* **objective after equal wall time**: steerlab searches for as long as nanoGCG's whole run
  took (``time_limit``); both best suffixes are re-scored by steerlab's forward (the same
  numbers nanoGCG computes: checked in the note) and compared as target cross-entropy (lower
  is better; ratio = nanoGCG's ÷ steerlab's).
* **peak memory of one iteration** vs candidates 64 / 128 / 256, fresh process each (this file
  run with ``--memory-worker B``): peak RSS during one search iteration over the RSS before it
  (the kernel's peak mark reset first), with steerlab's automatic candidate batches.

Example:
    $ .venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); import rows_attack; \\
          print(rows_attack.attack_rows(None, 'smollm2-135m', runs=1, steps=4, width=64))"
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
VENV = HERE / ".venv-nanogcg"
PYTHON = VENV / "bin" / "python"
CONSTRAINTS = "torch==2.13.0\ntransformers<5\n"
SUFFIX_LEN, TOPK = 20, 256


# ---- the nanoGCG side (runs inside bench/.venv-nanogcg, transformers 4) ------------------------

def ensure_venv() -> None:
    """Create ``bench/.venv-nanogcg``: torch 2.13.0 (CPU, on disk) first, then nanoGCG."""
    if PYTHON.exists():
        return
    pip = [str(VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(CONSTRAINTS)
    try:
        subprocess.run([*pip, "-c", handle.name, "nanogcg==0.3.0", "transformers<5"],
                       check=True)
    finally:
        Path(handle.name).unlink()


def patched_copy(model_dir: Path, out: Path) -> Path:
    """Symlink the model files into ``out`` with configs readable by transformers 4
    (``TokenizersBackend`` → ``PreTrainedTokenizerFast``; ``rope_parameters`` → ``rope_theta``,
    else transformers 4 silently uses 10000)."""
    for item in model_dir.iterdir():
        if item.name not in ("config.json", "tokenizer_config.json"):
            (out / item.name).symlink_to(item)
    config = json.loads((model_dir / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    (out / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    if tok_config.get("tokenizer_class") == "TokenizersBackend":
        tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return out


def _answer(payload: dict[str, Any]) -> None:
    print("@@" + json.dumps(payload), flush=True)


def _nanogcg_ids(tokenizer: Any, question: str, target: str) -> dict[str, list[int]]:
    """The ids nanoGCG 0.3 builds (its ``GCG.run`` template handling, repeated here)."""
    messages = [{"role": "user", "content": question + "{optim_str}"}]
    template = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if tokenizer.bos_token and template.startswith(tokenizer.bos_token):
        template = template.replace(tokenizer.bos_token, "")
    before, after = template.split("{optim_str}")
    return {"before": tokenizer(before)["input_ids"],
            "after": tokenizer(after, add_special_tokens=False)["input_ids"],
            "target": tokenizer(target, add_special_tokens=False)["input_ids"]}


def nanogcg_worker(model_dir: Path, inputs_path: Path) -> None:
    """Serve ``run`` commands: one nanoGCG attack each, timed; answers ``@@``-prefixed JSON."""
    import nanogcg.gcg as ngcg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    inputs = json.loads(inputs_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        directory = patched_copy(model_dir, Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        if not tokenizer.chat_template and (model_dir / "chat_template.jinja").exists():
            tokenizer.chat_template = (model_dir / "chat_template.jinja").read_text()
        # SmolLM2's BOS is <|im_start|> and its tokenizer adds none: nanoGCG's "remove the BOS
        # string" would delete every <|im_start|> of the template. Without a BOS it keeps the
        # prompt intact (and checked equal to steerlab's ids below).
        tokenizer.bos_token = None
        model = AutoModelForCausalLM.from_pretrained(str(directory), torch_dtype=torch.float32)
        model.eval()
        ids = _nanogcg_ids(tokenizer, inputs["question"], inputs["target"])
        init_ids = tokenizer(inputs["init"], add_special_tokens=False)["input_ids"]
        _answer({"ready": True, "same_ids": ids == inputs["ids"] and init_ids == inputs["init_ids"],
                 "threads": torch.get_num_threads(),
                 "rope_theta": float(getattr(model.config, "rope_theta", 0.0))})
        stamps: list[float] = []
        widths: list[int] = []
        grad_fn = ngcg.GCG.compute_token_gradient
        filter_fn = ngcg.filter_ids

        def timed_grad(self: Any, optim_ids: Any) -> Any:
            stamps.append(time.perf_counter())
            return grad_fn(self, optim_ids)

        def counted_filter(sampled: Any, tok: Any) -> Any:
            kept = filter_fn(sampled, tok)
            widths.append(int(kept.shape[0]))
            return kept

        ngcg.GCG.compute_token_gradient = timed_grad
        ngcg.filter_ids = counted_filter
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] != "run":
                _answer({"bye": True})
                return
            if command.get("threads"):
                torch.set_num_threads(int(command["threads"]))
            stamps.clear()
            widths.clear()
            config = ngcg.GCGConfig(num_steps=command["steps"], search_width=command["width"],
                                    topk=command["topk"], seed=command["seed"],
                                    optim_str_init=inputs["init"], use_prefix_cache=False,
                                    verbosity="WARNING")
            gcg = ngcg.GCG(model, tokenizer, config)
            start = time.perf_counter()
            result = gcg.run(inputs["question"], inputs["target"])
            seconds = time.perf_counter() - start
            best_ids = tokenizer(result.best_string, add_special_tokens=False)["input_ids"]
            _answer({"seconds": seconds, "step_s": [b - a for a, b in itertools.pairwise(stamps)],
                     "widths": widths, "losses": result.losses, "best_loss": result.best_loss,
                     "best_string": result.best_string, "best_ids": best_ids})


class Worker:
    """The nanoGCG subprocess: JSON commands in, ``@@``-prefixed JSON answers out."""

    def __init__(self, model_dir: Path, inputs: Path) -> None:
        self.proc = subprocess.Popen([str(PYTHON), str(Path(__file__).resolve()),
                                      "--nanogcg-worker", str(model_dir), str(inputs)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return dict(json.loads(line[2:]))
        raise RuntimeError(f"nanoGCG worker exited ({self.proc.wait()})")

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.ask(cmd="quit")
        self.proc.wait(timeout=60)


# ---- the steerlab side ---------------------------------------------------------------------

def _item() -> Any:
    import steerlab

    return steerlab.load_dataset("caa:refusal", split="test").open_answers().items[0]


def _gaps(seconds: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(seconds)]


def speed_rows(lm: Any, alias: str, runs: int, steps: int, width: int,
               threads: int | None = None) -> list[dict[str, Any]]:
    """iterations/s at ``width`` candidates per step, and the objective after equal time.

    ``threads``: torch threads on both sides (default: torch's own); 1 is steadier on a busy
    machine, where many small forwards suffer most from oversubscribed threads."""
    import torch
    from common import record

    from steerlab.attack import allowed_tokens, answer, evaluate, gcg, initial_suffix, search
    from steerlab.model.aliases import alias_dir

    ensure_venv()
    item = _item()
    obj = answer(lm, item)
    tok = lm.tokenizer
    init_ids = initial_suffix(tok, SUFFIX_LEN, allowed_tokens(tok, lm.model.get_input_embeddings()
                                                              .weight.shape[0]))
    init = tok.decode(init_ids)
    ids = {"before": list(obj.prompt.before), "after": list(obj.prompt.after),
           "target": list(obj.prompt.target)}
    mine_s, theirs_s, mine_loss, theirs_loss, notes = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs.json"
        inputs.write_text(json.dumps({"question": item.question, "target": item.not_matching,
                                      "init": init, "init_ids": init_ids, "ids": ids}))
        worker = Worker(alias_dir(alias), inputs)
        try:
            before_threads = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            for run in range(runs):
                theirs = worker.ask(cmd="run", steps=steps, width=width, topk=TOPK, seed=run,
                                    threads=threads)
                cfg = gcg(suffix_length=SUFFIX_LEN, iterations=100_000, children=width,
                          topk=TOPK, seed=run, init=tuple(init_ids),
                          time_limit=theirs["seconds"])
                mine = search(lm, obj, None, cfg, progress=False)
                mine_gaps = _gaps([s.seconds for s in mine.steps])
                mine_s.append(statistics.median(mine_gaps) if mine_gaps else mine.seconds)
                theirs_s.append(statistics.median(theirs["step_s"]) if theirs["step_s"]
                                else theirs["seconds"] / steps)
                (their_value,), _ = evaluate(lm, obj, None, [theirs["best_ids"]])
                mine_loss.append(-mine.objective)
                theirs_loss.append(-their_value)
                notes.append({"their_loss": theirs["best_loss"], "their_rescored": -their_value,
                              "their_widths": statistics.mean(theirs["widths"] or [0]),
                              "their_seconds": theirs["seconds"], "mine_steps": mine.iterations,
                              "mine_candidates": statistics.mean(s.candidates
                                                                 for s in mine.steps),
                              "mine_loss": -mine.objective, "mine_xent": mine.xent})
        finally:
            torch.set_num_threads(before_threads)
            worker.close()
    ready = worker.ready
    first = notes[0]
    common_note = (f"{alias}, unsteered, target = the non-refusing answer of CAA refusal test "
                   f"item 0 ({len(obj.prompt.target)} tokens), prompt {len(obj.prompt.before)} + "
                   f"{SUFFIX_LEN} + {len(obj.prompt.after)} tokens, top-k {TOPK}, torch threads "
                   f"{threads or ready['threads']}, {width} "
                   f"candidates drawn per step (kept after filtering: nanoGCG "
                   f"{first['their_widths']:.0f}, steerlab {first['mine_candidates']:.0f}); "
                   f"same token ids on both sides: {ready['same_ids']}; rope_theta "
                   f"{ready['rope_theta']:.0f} in nanoGCG")
    speed = record(f"GCG iterations/s, {width} candidates, {SUFFIX_LEN}-token suffix",
                   [1 / s for s in mine_s], "nanoGCG 0.3 (use_prefix_cache=False)",
                   [1 / s for s in theirs_s], 2.0,
                   f"{common_note}; steady-state median seconds per iteration: steerlab "
                   f"{statistics.median(mine_s):.2f}, nanoGCG {statistics.median(theirs_s):.2f}; "
                   "values are iterations/s", higher_is_better=True)
    quality = record(f"target cross-entropy after equal wall time ({steps} nanoGCG steps)",
                     mine_loss, "nanoGCG 0.3 (use_prefix_cache=False)", theirs_loss, 1.0,
                     f"{common_note}; wall time {first['their_seconds']:.0f}s each; steerlab ran "
                     f"{first['mine_steps']} iterations in it; nanoGCG's own best loss "
                     f"{first['their_loss']:.4f} vs steerlab's re-scoring of its best suffix "
                     f"{first['their_rescored']:.4f}; values are losses (lower is better), "
                     "ratio = nanoGCG ÷ steerlab")
    return [speed, quality]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory_worker(alias: str, width: int) -> None:
    """One search iteration at ``width`` candidates in this fresh process; prints JSON."""
    import resource

    import steerlab
    from steerlab.attack import allowed_tokens, answer, gcg, search

    lm = steerlab.load_model(alias)
    obj = answer(lm, _item())
    allowed_tokens(lm.tokenizer, lm.model.get_input_embeddings().weight.shape[0])
    search(lm, obj, None, gcg(suffix_length=SUFFIX_LEN, iterations=1, children=8, topk=TOPK),
           progress=False)  # warm: every allocator pool and cache seen once
    before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    start = time.perf_counter()
    res = search(lm, obj, None, gcg(suffix_length=SUFFIX_LEN, iterations=1, children=width,
                                    topk=TOPK), progress=False)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"width": width, "peak_mb": peak / 1024, "before_mb": before / 1024,
                      "reset": reset, "seconds": seconds,
                      "candidates": res.steps[0].candidates if res.steps else 0}))


def memory_rows(alias: str, widths: tuple[int, ...] = (64, 128, 256)) -> list[dict[str, Any]]:
    """Peak RSS of one iteration per candidate count (fresh processes), relative to 64."""
    from common import record

    from steerlab.attack.runner import LOGIT_BUDGET

    runs = {}
    for width in widths:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-worker",
                              alias, str(width)], check=True, capture_output=True,
                             text=True).stdout
        runs[width] = json.loads(out.strip().splitlines()[-1])
    base = runs[widths[0]]
    records = []
    for width in widths:
        r = runs[width]
        rec = record(f"peak RSS of one GCG iteration, {width} candidates (MB)",
                     [r["peak_mb"]], f"{widths[0]} candidates", [base["peak_mb"]], 0.0,
                     f"{alias}, answer objective, {SUFFIX_LEN}-token suffix, fresh process; peak "
                     f"during one iteration (VmHWM after a reset, reset={r['reset']}) = "
                     f"{r['peak_mb']:.0f} MB, {r['peak_mb'] - r['before_mb']:.0f} MB over the "
                     f"{r['before_mb']:.0f} MB before it; {r['candidates']} candidates in "
                     f"{r['seconds']:.1f}s; automatic batches (fp32 logits ≤ "
                     f"{LOGIT_BUDGET >> 20} MiB each); report only; 'steerlab_s'/'baseline_s' "
                     "hold MB here")
        rec["peak_over_before_mb"] = r["peak_mb"] - r["before_mb"]
        records.append(rec)
    return records


def attack_rows(lm: Any, alias: str, runs: int = 1, steps: int = 4, width: int = 64,
                threads: int | None = 1) -> list[dict[str, Any]]:
    """All rows of this file (``lm``: the loaded model, or None to load ``alias``)."""
    if lm is None:
        import steerlab

        lm = steerlab.load_model(alias)
    return [*speed_rows(lm, alias, runs, steps, width, threads), *memory_rows(alias)]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--nanogcg-worker"]:
        nanogcg_worker(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["--memory-worker"]:
        sys.path.insert(0, str(HERE))
        memory_worker(sys.argv[2], int(sys.argv[3]))
    else:
        sys.path.insert(0, str(HERE))
        print(json.dumps(attack_rows(None, sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"),
                         indent=2))
