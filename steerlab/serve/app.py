"""The OpenAI-compatible HTTP API (FastAPI): :func:`create_app` puts the pieces together.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (OpenAI's request and response
shapes, ``stream: true`` as server-sent events ending with ``data: [DONE]``, ``usage``
counts), ``GET /v1/models``, ``GET``/``PUT /v1/steering`` (the server default, applied to
requests without a ``steering`` field), ``GET /v1/steering/vectors`` and ``GET /health``.

A request steers with ``"steering": {"vectors": [{"name", "layers", "strength" |
"coefficient", "positions", "operator"}]}`` (see :mod:`steerlab.serve.steering`), or the same
object as a JSON string in ``vllm_xargs.steering``; ``"steering": null`` is explicitly
unsteered, and no field at all means the server default. Vectors are the ones the server was
started with (``--vector NAME=PATH``); requests never pass paths.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for every
bad request (bad JSON, unknown vector, layer out of range, strength and coefficient together,
bad sampling values, too many tokens, unsupported options), 401 without the ``--api-key``
bearer token, 404 for an unknown model, 429 when the queue is full.

The pieces: :mod:`~steerlab.serve.config` (:class:`ServerConfig`),
:mod:`~steerlab.serve.errors` (the error shape and handlers), :mod:`~steerlab.serve.schema`
(request bodies), :mod:`~steerlab.serve.stream` (scheduler events to text and SSE),
:mod:`~steerlab.serve.server` (shared state, request checks, generation),
:mod:`~steerlab.serve.auth` (API key and body cap) and :mod:`~steerlab.serve.routes`.

Example:
    >>> from fastapi.testclient import TestClient
    >>> from steerlab.model.load import as_loaded
    >>> from steerlab.testing.tiny import tiny_model, tiny_tokenizer
    >>> app = create_app(as_loaded(tiny_model("llama"), tiny_tokenizer()),
    ...                  config=ServerConfig(model_name="tiny"))
    >>> with TestClient(app) as client:
    ...     r = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
    >>> r.status_code, r.json()["usage"]["completion_tokens"] <= 2
    (200, True)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from steerlab.model.load import LoadedModel, as_loaded
from steerlab.serve.auth import Guard
from steerlab.serve.config import MAX_BODY_BYTES, MAX_STOPS, ServerConfig
from steerlab.serve.errors import APIError, add_error_handlers, error_body
from steerlab.serve.registry import VectorRegistry
from steerlab.serve.routes import add_routes
from steerlab.serve.schema import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ContentPart,
    StreamOptions,
)
from steerlab.serve.server import Server

__all__ = ["MAX_BODY_BYTES", "MAX_STOPS", "APIError", "ChatCompletionRequest", "ChatMessage",
           "CompletionRequest", "ContentPart", "ServerConfig", "StreamOptions", "create_app",
           "error_body"]


def create_app(model: LoadedModel | Any, registry: VectorRegistry | None = None,
               config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``model`` with ``registry``'s vectors.

    The generation worker starts with the app (its lifespan) and stops with it.

    Example:
        >>> app = create_app(lm, VectorRegistry.from_paths({"opt": "opt.safetensors"}, lm),
        ...                  ServerConfig(model_name="smollm2-135m"))           # doctest: +SKIP
        >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)       # doctest: +SKIP
    """
    lm = as_loaded(model)
    config = config or ServerConfig(model_name=lm.model_id)
    server = Server(lm, registry or VectorRegistry(), config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        server.scheduler.start()
        try:
            yield
        finally:
            await asyncio.to_thread(server.scheduler.stop)

    app = FastAPI(title="steerlab", summary="OpenAI-compatible serving with per-request "
                  "steering vectors", lifespan=lifespan)
    app.state.server = server
    add_error_handlers(app)
    add_routes(app, server)
    app.add_middleware(Guard, api_key=config.api_key)
    return app
