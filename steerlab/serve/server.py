"""The state the routes share, and the work of a generation request.

:class:`Server` holds the model, the vectors, the scheduler and the default steering, and
checks a request against them: its model, its steering, its sampling, its token budget, its
prompts; :meth:`Server.generate` runs it, whole or streamed.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel
from steerlab.model.prompts import prompt_ids
from steerlab.scoring.generate import GREEDY, GenerationRow, Sampling
from steerlab.serve.config import MAX_STOPS, ServerConfig
from steerlab.serve.errors import APIError, bad_request, error_body
from steerlab.serve.registry import VectorRegistry
from steerlab.serve.scheduler import Scheduler
from steerlab.serve.schema import ChatCompletionRequest, CompletionRequest, GenerationRequest
from steerlab.serve.steering import (
    SteeringRequest,
    parse_steering,
    parse_steering_json,
    resolve_steering,
)
from steerlab.serve.stream import Prompt, Run, sse, usage
from steerlab.steering.spec import SteeringSpec


class Server:
    """State shared by the routes: the model, vectors, scheduler and default steering."""

    def __init__(self, lm: LoadedModel, registry: VectorRegistry, config: ServerConfig):
        if lm.tokenizer is None:
            raise SteerlabError("serving needs a model with a tokenizer")
        self.lm = lm
        self.registry = registry
        self.config = config
        self.n_layers = lm.n_layers
        self.hidden_size = lm.hidden_size
        self.vocab = len(lm.tokenizer)
        self.context = _context_length(lm)
        self.created = int(time.time())
        resolve_steering(config.default_steering, registry, self.n_layers, self.hidden_size)
        self.default_steering = config.default_steering
        self.scheduler = Scheduler(lm, max_batch=config.max_batch, max_queue=config.max_queue,
                                   max_cohorts=config.max_cohorts,
                                   batch_wait_s=config.batch_wait_s)

    # ---- pieces of a generation request ---------------------------------------------------
    def check_model(self, name: str | None) -> None:
        if name is not None and name not in (self.config.model_name, self.lm.model_id):
            raise APIError(404, f"model {name!r} is not served here; this server serves "
                           f"{self.config.model_name!r}", param="model", code="model_not_found")

    def steering(self, req: GenerationRequest) -> tuple[SteeringRequest, list[SteeringSpec]]:
        """The steering of a request: its own field, vllm_xargs.steering, or the default."""
        try:
            return self._steering(req)
        except SteerlabError as exc:
            raise bad_request(str(exc), "steering") from None

    def _steering(self, req: GenerationRequest) -> tuple[SteeringRequest, list[SteeringSpec]]:
        given = "steering" in req.model_fields_set
        xargs = req.vllm_xargs or {}
        if "steering" in xargs:
            if given:
                raise bad_request("give steering or vllm_xargs.steering, not both", "steering")
            value = xargs["steering"]
            request = (parse_steering_json(value, "vllm_xargs.steering")
                       if isinstance(value, str) else
                       parse_steering(value, "vllm_xargs.steering"))
        elif given:
            request = parse_steering(req.steering, "steering")
        else:
            request = self.default_steering
        specs = resolve_steering(request, self.registry, self.n_layers, self.hidden_size)
        return request, specs

    def sampling(self, req: GenerationRequest, choice: int) -> Sampling:
        temperature = 1.0 if req.temperature is None else req.temperature
        if temperature == 0:
            return GREEDY
        top_k = req.top_k if req.top_k is not None and req.top_k > 0 else 0
        seed = req.seed if req.seed is not None else secrets.randbits(31)
        return Sampling(temperature, 1.0 if req.top_p is None else req.top_p, top_k,
                        seed + choice)

    def budget(self, prompts: Sequence[Prompt], default: int, asked: int | None,
               param: str) -> int:
        """The new-token budget of each choice, every limit checked."""
        longest = max(len(p.ids) for p in prompts)
        if longest > self.config.max_prompt_tokens:
            raise bad_request(f"the prompt has {longest} tokens; this server accepts at most "
                              f"{self.config.max_prompt_tokens}", param, "context_length_exceeded")
        if asked is not None and asked > self.config.max_tokens:
            raise bad_request(f"max_tokens is {asked}; this server allows at most "
                              f"{self.config.max_tokens}", "max_tokens")
        room = self.context - longest if self.context else None
        if room is not None and room < 1:
            raise bad_request(f"the prompt has {longest} tokens, the model's context is "
                              f"{self.context}", param, "context_length_exceeded")
        if asked is None:
            return max(1, min(default, room) if room is not None else default)
        if room is not None and asked > room:
            raise bad_request(f"{longest} prompt tokens + max_tokens {asked} exceed the model's "
                              f"context of {self.context}", "max_tokens", "context_length_exceeded")
        return asked

    def check_common(self, req: GenerationRequest, n_prompts: int) -> list[str]:
        for param, why in req.unsupported():
            raise bad_request(why, param)
        if n_prompts * req.n > self.config.max_batch:
            raise bad_request(f"{n_prompts * req.n} choices in one request; at most "
                              f"{self.config.max_batch} (the batch size)", "n")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stop) > MAX_STOPS:
            raise bad_request(f"at most {MAX_STOPS} stop strings, got {len(stop)}", "stop")
        if req.stream_options is not None and not req.stream:
            raise bad_request("stream_options needs stream: true", "stream_options")
        return [s for s in stop if s]

    async def generate(self, request: Request, req: GenerationRequest, prompts: Sequence[Prompt],
                       max_tokens: int, stop: list[str], kind: Literal["chat", "text"]) -> Any:
        steering, specs = self.steering(req)
        stop_ids = frozenset[int]() if req.ignore_eos else None
        rows = [GenerationRow(p.ids, max_tokens, self.sampling(req, j), specs,
                              p.instruction_length, stop_ids)
                for p in prompts for j in range(req.n)]
        run = Run(self.scheduler, self.lm.tokenizer, rows, stop)
        ident = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        applied = steering.public() if steering.vectors else None
        prompt_tokens = sum(len(p.ids) for p in prompts)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            body = sse(self.config.model_name, run, ident, created, kind, applied,
                       prompt_tokens, include_usage)
            return StreamingResponse(body, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache",
                                              "X-Accel-Buffering": "no"},
                                     background=BackgroundTask(run.close))
        texts = [""] * len(rows)
        async for index, delta, _ in run.events(request):
            texts[index] += delta
        if any(f is None for f in run.finish):  # the client went away
            return JSONResponse(error_body("client disconnected"), status_code=499)
        choices = []
        for i, text in enumerate(texts):
            if kind == "chat":
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "logprobs": None, "finish_reason": run.finish[i]})
            else:
                choices.append({"index": i, "text": text, "logprobs": None,
                                "finish_reason": run.finish[i]})
        return {"id": ident, "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": created, "model": self.config.model_name, "choices": choices,
                "usage": usage(prompt_tokens, sum(run.tokens)), "steering": applied,
                "system_fingerprint": None}

    # ---- prompts --------------------------------------------------------------------------
    def chat_prompt(self, req: ChatCompletionRequest) -> Prompt:
        messages = []
        for i, message in enumerate(req.messages):
            role = "system" if message.role == "developer" else message.role
            content = message.content
            if isinstance(content, list):
                parts = []
                for j, part in enumerate(content):
                    if part.type != "text" or part.text is None:
                        raise bad_request(f"messages.{i}.content.{j}: only text parts are "
                                          f"supported, got type {part.type!r}",
                                          f"messages.{i}.content")
                    parts.append(part.text)
                content = "".join(parts)
            messages.append({"role": role, "content": content if content is not None else ""})
        try:
            ids, instr = prompt_ids(self.lm.tokenizer, messages, chat=True)
        except SteerlabError as exc:
            raise bad_request(f"messages: {exc}", "messages") from None
        return Prompt(ids, instr)

    def text_prompts(self, req: CompletionRequest) -> list[Prompt]:
        value = req.prompt
        items: list[str | list[int]]
        if isinstance(value, str):
            items = [value]
        elif value and all(isinstance(x, int) for x in value):
            items = [list(value)]  # type: ignore[arg-type]
        else:
            items = list(value)  # type: ignore[arg-type]
        if not items:
            raise bad_request("prompt is empty", "prompt")
        prompts = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                try:
                    ids, instr = prompt_ids(self.lm.tokenizer, item, chat=False)
                except SteerlabError as exc:
                    raise bad_request(f"prompt {i}: {exc}", "prompt") from None
            else:
                ids = list(item)
                if not ids:
                    raise bad_request(f"prompt {i} has no tokens", "prompt")
                bad = [t for t in ids if not 0 <= t < self.vocab]
                if bad:
                    raise bad_request(f"prompt {i}: token id(s) {bad[:5]} out of range for a "
                                      f"vocabulary of {self.vocab}", "prompt")
                instr = len(ids)
            prompts.append(Prompt(ids, instr))
        return prompts


def _context_length(lm: LoadedModel) -> int | None:
    config = getattr(lm.model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
