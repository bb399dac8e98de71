"""vLLM's OpenAI server with steerlab's request surface: the ``steering`` field and the vector list.

vLLM's own per-request channel is ``vllm_xargs`` (values must be scalars, so the steering object
travels as a JSON string). This endpoint plugin (entry point ``vllm.endpoint_plugins:
steerlab``; vLLM loads endpoint plugins only when ``VLLM_PLUGINS`` names them, which
``steerlab serve --engine vllm`` does) lets a client send exactly what it sends to
``steerlab serve``:

* ``"steering": {...}`` in a chat or text completion body is moved to
  ``vllm_xargs.steering`` before vLLM reads the body (``"steering": null`` is explicitly
  unsteered; both forms at once are a 400); a request without either gets the server default
  (``STEERLAB_DEFAULT_STEERING``, a JSON object, if set). The plugin's front-end check then
  validates it like ``steerlab serve`` does (400 with the reason).
* ``GET /v1/steering/vectors`` lists the served vectors (names, layers, hidden size, sha256),
  the same as ``steerlab serve``.

Example:
    >>> body = rewrite_body(b'{"prompt": "Hi", "steering": {"vectors": [{"name": "a"}]}}')
    >>> json.loads(body)["vllm_xargs"]
    {'steering': '{"vectors": [{"name": "a"}]}'}
"""

from __future__ import annotations

import json
import os
from typing import Any

from steerlab.errors import SteerlabError

#: The routes whose JSON body may carry a ``steering`` field.
GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")
#: A JSON steering object applied to requests that carry none.
DEFAULT_ENV = "STEERLAB_DEFAULT_STEERING"


def rewrite_body(body: bytes, default: str | None = None) -> bytes:
    """``body`` with its ``steering`` field moved into ``vllm_xargs.steering`` (a JSON string).

    Bodies that are not a JSON object pass through unchanged (vLLM answers them). Raises
    :class:`~steerlab.errors.SteerlabError` when both forms are given.

    Example:
        >>> rewrite_body(b'{"prompt": "Hi", "steering": null}')
        b'{"prompt": "Hi"}'
        >>> json.loads(rewrite_body(b'{"prompt": "Hi"}', default='{"vectors": []}'))
        {'prompt': 'Hi', 'vllm_xargs': {'steering': '{"vectors": []}'}}
    """
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body
    if not isinstance(data, dict):
        return body
    xargs = data.get("vllm_xargs")
    has_xargs = isinstance(xargs, dict) and "steering" in xargs
    if "steering" in data:
        if has_xargs:
            raise SteerlabError("give steering or vllm_xargs.steering, not both")
        value = data.pop("steering")
        if value is not None:
            data["vllm_xargs"] = {**(xargs if isinstance(xargs, dict) else {}),
                                  "steering": json.dumps(value)}
    elif not has_xargs and default:
        data["vllm_xargs"] = {**(xargs if isinstance(xargs, dict) else {}),
                              "steering": default}
    else:
        return body
    return json.dumps(data).encode()


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "BadRequestError",
                                 "param": "steering", "code": 400}}).encode()


class SteeringFieldMiddleware:
    """ASGI middleware: rewrite generation bodies with :func:`rewrite_body` (400 on conflict)."""

    def __init__(self, app: Any):
        self.app = app
        self.default = os.environ.get(DEFAULT_ENV) or None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or \
                scope.get("path") not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            body = rewrite_body(b"".join(chunks), self.default)
        except SteerlabError as exc:
            payload = _error(str(exc))
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, replay, send)


class SteeringEndpoints:
    """The ``vllm.endpoint_plugins`` entry: the middleware above and the vector list route."""

    name = "steerlab"
    required_tasks = None

    def attach_router(self, app: Any) -> None:
        from steerlab.serve.vllm.plugin import served_registry, vector_paths

        app.add_middleware(SteeringFieldMiddleware)

        @app.get("/v1/steering/vectors")
        async def steering_vectors() -> dict[str, Any]:
            """The vectors requests may name: layers, hidden size, sha256 of the file."""
            data = served_registry().describe() if vector_paths() else []
            return {"object": "list", "data": data}

    async def init_state(self, engine_client: Any, state: Any, args: Any) -> None:
        return None
