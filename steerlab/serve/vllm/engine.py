"""Generation rows on vLLM: the ``--engine vllm`` backend of the studies that generate text.

:class:`VLLMBackend` implements :class:`steerlab.scoring.generate.GenerationBackend`: inside
``with generation_backend(VLLMBackend(...))`` every :func:`~steerlab.scoring.generate.run_rows`
(so ``generate``, ``generate_ids`` and the studies built on them: OOD, sentiment, defence,
demo) runs on one persistent vLLM engine in the vLLM venv, steered by the plugin. Each row's
:class:`~steerlab.steering.spec.SteeringSpec` s become a ``steering`` object over vectors the
backend saves (content-named safetensors) and serves; the engine starts on the first call and
restarts only when a later call brings a vector it does not serve. Greedy rows give the same
tokens as steerlab's own loop (tested); sampled rows use vLLM's sampler (seeded per row), the
same distribution but other draws. Conditional (CAST) steering is refused in one line.

Example:
    >>> from steerlab.scoring.generate import generate_ids, generation_backend
    >>> with VLLMBackend("smollm2-135m") as backend, \\
    ...         generation_backend(backend):                              # doctest: +SKIP
    ...     ids = generate_ids(lm, [[1, 2, 3]], spec, max_new_tokens=8)
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.scoring.generate import GenerationRow
from steerlab.serve.vllm.batch import ENGINE_DEFAULTS, engine_env, root_cause, vllm_python
from steerlab.serve.vllm.plugin import VECTORS_ENV
from steerlab.steering.spec import SteeringSpec
from steerlab.util.io import atomic_write, sha256_file
from steerlab.vector import SteeringVector


def steering_entry(spec: SteeringSpec, name: str) -> dict[str, Any]:
    """The ``steering.vectors`` entry that asks the plugin for what ``spec`` does.

    Example:
        >>> import torch
        >>> v = SteeringVector.from_directions({2: torch.ones(4)})
        >>> steering_entry(SteeringSpec(v, layers=[2], coefficient=3.0), "v1")
        {'name': 'v1', 'layers': [2], 'coefficient': 3.0, 'positions': 'all', 'operator': 'add'}
    """
    if spec.condition is not None:
        raise SteerlabError("conditional (CAST) steering is not supported on the vLLM engine; "
                            "use --engine transformers")
    entry: dict[str, Any] = {"name": name}
    if spec.layers is not None:
        entry["layers"] = (list(spec.layers) if isinstance(spec.layers, list | tuple)
                           else spec.layers)
    if spec.coefficient is not None:
        entry["coefficient"] = float(spec.coefficient)
    if spec.strength is not None:
        entry["strength"] = float(spec.strength)
    entry |= {"positions": spec.positions, "operator": spec.operator}
    if spec.preserve_norm:
        entry["preserve_norm"] = True
    return entry


class VLLMBackend:
    """One persistent vLLM engine (in its venv) that generates steerlab's rows.

    ``model_id`` is the model as steerlab loaded it (``LoadedModel.model_id``: an alias, a
    directory or a hub id); vLLM loads the alias's cache directory, the directory or the hub id
    itself. Only rows generated for that model come here; ``engine`` adds ``vllm.LLM`` options.
    """

    name = "vLLM"

    def __init__(self, model_id: str, engine: dict[str, Any] | None = None,
                 timeout: float = 1800.0):
        from steerlab.model.aliases import ALIASES, alias_dir

        self.model_id = model_id
        if model_id in ALIASES:
            self.model_dir = str(alias_dir(model_id))
        else:
            local = Path(model_id).expanduser()
            self.model_dir = str(local) if local.is_dir() else model_id
        if self.model_dir.endswith(".gguf"):
            raise SteerlabError("the vLLM engine loads a model directory or hub id, not a "
                                ".gguf file")
        self.engine = {**ENGINE_DEFAULTS, "max_model_len": 4096, **(engine or {})}
        self.timeout = timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="steerlab-vllm-engine-")
        self._root = Path(self._tmp.name)
        self._names: dict[int, tuple[SteeringVector, str]] = {}  # id(vector) → (vector, name)
        self._files: dict[str, Path] = {}
        self._served: set[str] = set()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._jobs = 0

    def serves(self, model: Any) -> bool:
        """Whether rows generated for ``model`` run here (the model this engine loaded)."""
        return getattr(model, "model_id", None) == self.model_id

    # ---- rows → requests --------------------------------------------------------------------
    def _vector_name(self, vector: SteeringVector) -> str:
        known = self._names.get(id(vector))
        if known is not None and known[0] is vector:
            return known[1]
        staged = self._root / f"staged-{len(self._names)}.safetensors"
        vector.save(staged)
        name = "v" + sha256_file(staged)[:16]
        path = self._root / f"{name}.safetensors"
        staged.replace(path)
        self._files[name] = path
        self._names[id(vector)] = (vector, name)
        return name

    def request(self, row: GenerationRow) -> dict[str, Any]:
        """The batch-job request of one row (its steering as the plugin's schema)."""
        vectors = [steering_entry(spec, self._vector_name(spec.vector)) for spec in row.steering]
        sampling = row.sampling
        out: dict[str, Any] = {
            "prompt_token_ids": list(row.prompt), "max_tokens": row.max_new_tokens,
            "temperature": float(sampling.temperature), "steering":
                {"vectors": vectors} if vectors else None}
        if not sampling.greedy:
            out |= {"top_p": float(sampling.top_p), "top_k": int(sampling.top_k),
                    "seed": int(sampling.seed)}
        if row.stop is not None:
            out |= {"ignore_eos": True, "stop_token_ids": sorted(row.stop)}
        else:
            out["ignore_eos"] = False
        return out

    # ---- the engine process -------------------------------------------------------------------
    def _start(self) -> None:
        self.close_engine()
        env = engine_env(os.environ)
        env[VECTORS_ENV] = ",".join(f"{n}={p}" for n, p in sorted(self._files.items()))
        self._log = open(self._root / "engine.log", "ab")  # noqa: SIM115 (closed in close)
        config = self._root / "engine.json"
        atomic_write(config, json.dumps({"model": self.model_dir, "engine": self.engine}))
        self._proc = subprocess.Popen(
            [str(vllm_python()), "-m", "steerlab.serve.vllm.batch", "--serve", str(config)],
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=self._root, start_new_session=True)
        self._served = set(self._files)

    def run(self, rows: Sequence[GenerationRow]) -> list[list[int]]:
        """Each row's new token ids (stop id excluded), generated on the engine."""
        requests = [self.request(row) for row in rows]
        if self._proc is None or self._proc.poll() is not None or \
                not set(self._files) <= self._served:
            self._start()
        assert self._proc is not None and self._proc.stdin is not None
        self._jobs += 1
        job, out = self._root / f"job-{self._jobs}.json", self._root / f"out-{self._jobs}.json"
        atomic_write(job, json.dumps({"phases": [requests]}))
        self._proc.stdin.write((json.dumps({"job": str(job), "out": str(out)}) + "\n").encode())
        self._proc.stdin.flush()
        deadline = time.monotonic() + self.timeout
        while not out.exists():
            if self._proc.poll() is not None:
                log = (self._root / "engine.log").read_text(errors="replace")
                raise SteerlabError(f"the vLLM engine stopped (exit {self._proc.returncode}): "
                                    f"{root_cause(log)}")
            if time.monotonic() > deadline:
                raise SteerlabError(f"the vLLM engine gave no answer in {self.timeout:.0f} s")
            time.sleep(0.05)
        result = json.loads(out.read_text())
        if "error" in result:
            raise SteerlabError(f"vLLM: {result['error']}")
        return [list(o["new_ids"]) for o in result["phases"][0]]

    def close_engine(self) -> None:
        """Stop the engine process (a later :meth:`run` starts a new one)."""
        if self._proc is not None:
            if self._proc.poll() is None and self._proc.stdin is not None:
                self._proc.stdin.close()
                try:
                    self._proc.wait(60)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(30)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop the engine and remove the served vector files."""
        self.close_engine()
        self._tmp.cleanup()

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
