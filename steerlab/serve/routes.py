"""The HTTP routes: health, models, the steering default and vectors, and the completions."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request

from steerlab.errors import SteerlabError
from steerlab.serve.errors import bad_request
from steerlab.serve.schema import ChatCompletionRequest, CompletionRequest
from steerlab.serve.server import Server
from steerlab.serve.steering import parse_steering, resolve_steering


def add_routes(app: FastAPI, server: Server) -> None:
    """Add the API's routes to ``app``, all served by ``server``."""
    config, lm = server.config, server.lm

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and the scheduler's counts (no key needed)."""
        return {"status": "ok" if server.scheduler.running else "stopped",
                **server.scheduler.stats()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The one served model, OpenAI's list shape."""
        return {"object": "list", "data": [{
            "id": config.model_name, "object": "model", "created": server.created,
            "owned_by": "steerlab", "root": lm.model_id, "max_model_len": server.context,
            "steering_vectors": server.registry.names}]}

    @app.get("/v1/steering/vectors")
    async def vectors() -> dict[str, Any]:
        """The vectors requests may name: layers, hidden size, sha256 of the file."""
        return {"object": "list", "data": server.registry.describe()}

    @app.get("/v1/steering")
    async def get_steering() -> dict[str, Any]:
        """The server default: applied to requests that have no ``steering`` field."""
        return server.default_steering.public()

    async def put_steering(request: Request) -> dict[str, Any]:
        """Replace the server default (``{"vectors": []}`` or ``null`` clears it)."""
        raw = await request.body()
        try:
            value = json.loads(raw) if raw.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad_request(f"body: not valid JSON ({exc})") from None
        try:
            steering = parse_steering(value, "steering")
            resolve_steering(steering, server.registry, server.n_layers, server.hidden_size)
        except SteerlabError as exc:
            raise bad_request(str(exc), "steering") from None
        server.default_steering = steering
        return steering.public()

    app.add_api_route("/v1/steering", put_steering, methods=["PUT", "POST"])

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        """OpenAI chat completions (``stream`` supported), steered per request."""
        server.check_model(req.model)
        stop = server.check_common(req, 1)
        if req.max_tokens is not None and req.max_completion_tokens is not None \
                and req.max_tokens != req.max_completion_tokens:
            raise bad_request("max_tokens and max_completion_tokens differ",
                              "max_completion_tokens")
        prompt = server.chat_prompt(req)
        asked = req.max_completion_tokens or req.max_tokens
        max_tokens = server.budget([prompt], config.max_tokens, asked, "messages")
        return await server.generate(request, req, [prompt], max_tokens, stop, "chat")

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        """OpenAI (legacy) text completions: no chat template (``stream`` supported)."""
        server.check_model(req.model)
        prompts = server.text_prompts(req)
        stop = server.check_common(req, len(prompts))
        max_tokens = server.budget(prompts, min(16, config.max_tokens), req.max_tokens,
                                   "prompt")
        return await server.generate(request, req, prompts, max_tokens, stop, "text")

