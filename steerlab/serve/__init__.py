"""OpenAI-compatible serving with a different steering vector per request.

``create_app`` builds the FastAPI app (``steerlab.serve.app``); one worker thread owns the
model and batches rows with per-row steering (``steerlab.serve.scheduler``); vectors are
named at start-up (``steerlab.serve.registry``); a request's ``steering`` field becomes
``SteeringSpec`` s (``steerlab.serve.steering``). The command line is ``steerlab serve``.

Example:
    >>> import steerlab                                                     # doctest: +SKIP
    >>> from steerlab.serve import ServerConfig, VectorRegistry, create_app, run
    >>> lm = steerlab.load_model("smollm2-135m")                            # doctest: +SKIP
    >>> reg = VectorRegistry.from_paths({"optimism": "opt.safetensors"}, lm)  # doctest: +SKIP
    >>> run(create_app(lm, reg, ServerConfig(model_name="smollm2-135m")))   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from steerlab.serve.app import ServerConfig, create_app
from steerlab.serve.registry import VectorRegistry, parse_vector_option
from steerlab.serve.scheduler import Job, QueueFull, Scheduler
from steerlab.serve.steering import SteeringRequest, parse_steering_json, resolve_steering

__all__ = ["Job", "QueueFull", "Scheduler", "ServerConfig", "SteeringRequest", "VectorRegistry",
           "background", "create_app", "parse_steering_json", "parse_vector_option",
           "resolve_steering", "run"]


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (bound to 127.0.0.1 unless told).

    Example:
        >>> run(create_app(lm), port=8001)                                  # doctest: +SKIP
    """
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


@contextlib.contextmanager
def background(app: Any, host: str = "127.0.0.1", port: int = 0,
               startup_timeout: float = 60.0, log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yields its base URL, stops on exit.

    ``port=0`` takes a free port. For notebooks, tests and benchmarks.

    Example:
        >>> with background(create_app(lm)) as url:                      # doctest: +SKIP
        ...     OpenAI(base_url=f"{url}/v1", api_key="none").models.list()
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="steerlab-serve-http", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {host}:{bound}")
            time.sleep(0.02)
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
