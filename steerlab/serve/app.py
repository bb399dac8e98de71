"""The OpenAI-compatible HTTP API (FastAPI): routes, request schema, errors.

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
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from steerlab.errors import SteerlabError
from steerlab.model.load import LoadedModel, as_loaded
from steerlab.model.prompts import prompt_ids
from steerlab.scoring.generate import GREEDY, GenerationRow, Sampling
from steerlab.serve.registry import VectorRegistry
from steerlab.serve.scheduler import (
    Event,
    FinishEvent,
    Job,
    QueueFull,
    Scheduler,
    SchedulerStopped,
    Sink,
    TokenEvent,
)
from steerlab.serve.steering import (
    UNSTEERED,
    SteeringRequest,
    parse_steering,
    parse_steering_json,
    resolve_steering,
)
from steerlab.serve.text import TextStream
from steerlab.steering.spec import SteeringSpec

log = logging.getLogger("steerlab.serve")

#: Largest request body accepted (bytes); longer prompts are refused by token count anyway.
MAX_BODY_BYTES = 8 * 2**20
#: Most stop strings per request (OpenAI allows 4).
MAX_STOPS = 4


@dataclass
class ServerConfig:
    """How the server runs: its model name, key, default steering and limits.

    ``max_tokens`` caps the new tokens one choice may ask for (and is the chat default),
    ``max_prompt_tokens`` the prompt, ``max_batch`` the rows generating at once, ``max_queue``
    the requests waiting (429 past it).

    Example:
        >>> ServerConfig(model_name="smollm2-135m", api_key="KEY").max_batch
        16
    """

    model_name: str
    api_key: str | None = None
    default_steering: SteeringRequest = field(default_factory=lambda: UNSTEERED)
    max_batch: int = 16
    max_queue: int = 64
    max_tokens: int = 512
    max_prompt_tokens: int = 4096
    max_cohorts: int = 4
    batch_wait_s: float = 0.03

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_tokens", "max_prompt_tokens", "max_cohorts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SteerlabError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) \
                or self.max_queue < 0:
            raise SteerlabError(f"max_queue must be an integer >= 0, got {self.max_queue!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise SteerlabError("the API key is empty")


# ---- errors ----------------------------------------------------------------------------------
class APIError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object.

    Example:
        >>> error_body("bad", param="n")["error"]["param"]
        'n'
    """
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


# ---- request schema --------------------------------------------------------------------------
class _Open(BaseModel):
    """OpenAI request objects: unknown fields are accepted and ignored (clients send many)."""

    model_config = ConfigDict(extra="allow")


class StreamOptions(_Open):
    include_usage: bool = False


class ContentPart(_Open):
    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(_Open):
    role: StrictStr
    content: StrictStr | list[ContentPart] | None = None


class _Generation(_Open):
    model: StrictStr | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1, description="0 or -1: off (extension)")
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = Field(default=False, description="keep generating past the model's "
                             "end-of-sequence token (vLLM's extension; for benchmarks)")
    steering: Any = Field(default=None, description="{'vectors': [...]}; null: unsteered; "
                          "absent: the server default")
    vllm_xargs: dict[str, Any] | None = None

    def unsupported(self) -> list[tuple[str, str]]:
        """(param, why) for options this server would otherwise silently ignore."""
        out = []
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                out.append((name, f"{name} is not supported"))
        if self.logit_bias:
            out.append(("logit_bias", "logit_bias is not supported"))
        return out


class ChatCompletionRequest(_Generation):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[tuple[str, str]]:
        out = super().unsupported()
        if self.logprobs or self.top_logprobs:
            out.append(("logprobs", "logprobs are not supported"))
        if self.tools:
            out.append(("tools", "tools are not supported"))
        if self.tool_choice not in (None, "none", "auto"):
            out.append(("tool_choice", "tool_choice is not supported"))
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            out.append(("response_format", "only response_format type 'text' is supported"))
        return out


class CompletionRequest(_Generation):
    """``POST /v1/completions``."""

    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: StrictStr | None = None

    def unsupported(self) -> list[tuple[str, str]]:
        out = super().unsupported()
        if self.echo:
            out.append(("echo", "echo is not supported"))
        if self.logprobs is not None:
            out.append(("logprobs", "logprobs are not supported"))
        if self.best_of not in (None, 1):
            out.append(("best_of", "best_of is not supported"))
        if self.suffix:
            out.append(("suffix", "suffix is not supported"))
        return out


# ---- one request's rows while they generate ----------------------------------------------------
@dataclass
class _Prompt:
    ids: list[int]
    instruction_length: int


class _Run:
    """The jobs of one request and the text they stream, choice by choice."""

    def __init__(self, scheduler: Scheduler, tokenizer: Any, rows: Sequence[GenerationRow],
                 stop: Sequence[str]):
        self.scheduler = scheduler
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.streams = [TextStream(tokenizer, stop) for _ in rows]
        self.tokens = [0] * len(rows)
        self.finish: list[str | None] = [None] * len(rows)
        self.jobs: list[Job] = scheduler.submit_many(
            rows, [self._sink(loop, i) for i in range(len(rows))])

    def _sink(self, loop: asyncio.AbstractEventLoop, index: int) -> Sink:
        def sink(event: Event) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
        return sink

    def close(self) -> None:
        """Cancel every job still running (idempotent): frees their rows."""
        for job in self.jobs:
            if not job.done:
                self.scheduler.cancel(job)

    async def events(self, request: Request | None = None,
                     poll_s: float = 0.5) -> AsyncIterator[tuple[int, str, str | None]]:
        """``(choice, text delta, finish_reason or None)`` until every choice has finished.

        With ``request``, a client that has disconnected is noticed within ``poll_s``.
        """
        open_ = set(range(len(self.jobs)))
        loop = asyncio.get_running_loop()
        checked = loop.time()
        try:
            while open_:
                item: tuple[int, Event] | None = None
                with contextlib.suppress(TimeoutError):
                    item = await asyncio.wait_for(
                        self.queue.get(), poll_s if request is not None else None)
                if request is not None and loop.time() - checked >= poll_s:
                    checked = loop.time()
                    if await request.is_disconnected():
                        return
                if item is None:
                    continue
                index, event = item
                if index not in open_:
                    continue
                stream = self.streams[index]
                if isinstance(event, TokenEvent):
                    self.tokens[index] += 1
                    delta = stream.push(event.token)
                    if stream.stopped:  # a stop string: the row is done, free it now
                        self.scheduler.cancel(self.jobs[index])
                        open_.discard(index)
                        self.finish[index] = "stop"
                        yield index, delta, "stop"
                    elif delta:
                        yield index, delta, None
                    continue
                assert isinstance(event, FinishEvent)
                open_.discard(index)
                if event.reason == "error":
                    raise APIError(500, event.error or "generation failed",
                                   type="server_error")
                if event.reason == "cancelled":
                    raise APIError(503, "the request was cancelled: the server is stopping",
                                   type="server_error")
                self.finish[index] = event.reason
                yield index, stream.flush(), event.reason
        finally:
            self.close()


# ---- the application -------------------------------------------------------------------------
class _Server:
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

    def steering(self, req: _Generation) -> tuple[SteeringRequest, list[SteeringSpec]]:
        """The steering of a request: its own field, vllm_xargs.steering, or the default."""
        try:
            return self._steering(req)
        except SteerlabError as exc:
            raise _bad(str(exc), "steering") from None

    def _steering(self, req: _Generation) -> tuple[SteeringRequest, list[SteeringSpec]]:
        given = "steering" in req.model_fields_set
        xargs = req.vllm_xargs or {}
        if "steering" in xargs:
            if given:
                raise _bad("give steering or vllm_xargs.steering, not both", "steering")
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

    def sampling(self, req: _Generation, choice: int) -> Sampling:
        temperature = 1.0 if req.temperature is None else req.temperature
        if temperature == 0:
            return GREEDY
        top_k = req.top_k if req.top_k is not None and req.top_k > 0 else 0
        seed = req.seed if req.seed is not None else secrets.randbits(31)
        return Sampling(temperature, 1.0 if req.top_p is None else req.top_p, top_k,
                        seed + choice)

    def budget(self, prompts: Sequence[_Prompt], default: int, asked: int | None,
               param: str) -> int:
        """The new-token budget of each choice, every limit checked."""
        longest = max(len(p.ids) for p in prompts)
        if longest > self.config.max_prompt_tokens:
            raise _bad(f"the prompt has {longest} tokens; this server accepts at most "
                       f"{self.config.max_prompt_tokens}", param, "context_length_exceeded")
        if asked is not None and asked > self.config.max_tokens:
            raise _bad(f"max_tokens is {asked}; this server allows at most "
                       f"{self.config.max_tokens}", "max_tokens")
        room = self.context - longest if self.context else None
        if room is not None and room < 1:
            raise _bad(f"the prompt has {longest} tokens, the model's context is "
                       f"{self.context}", param, "context_length_exceeded")
        if asked is None:
            return max(1, min(default, room) if room is not None else default)
        if room is not None and asked > room:
            raise _bad(f"{longest} prompt tokens + max_tokens {asked} exceed the model's "
                       f"context of {self.context}", "max_tokens", "context_length_exceeded")
        return asked

    def check_common(self, req: _Generation, n_prompts: int) -> list[str]:
        for param, why in req.unsupported():
            raise _bad(why, param)
        if n_prompts * req.n > self.config.max_batch:
            raise _bad(f"{n_prompts * req.n} choices in one request; at most "
                       f"{self.config.max_batch} (the batch size)", "n")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stop) > MAX_STOPS:
            raise _bad(f"at most {MAX_STOPS} stop strings, got {len(stop)}", "stop")
        if req.stream_options is not None and not req.stream:
            raise _bad("stream_options needs stream: true", "stream_options")
        return [s for s in stop if s]

    async def generate(self, request: Request, req: _Generation, prompts: Sequence[_Prompt],
                       max_tokens: int, stop: list[str], kind: Literal["chat", "text"]) -> Any:
        steering, specs = self.steering(req)
        stop_ids = frozenset[int]() if req.ignore_eos else None
        rows = [GenerationRow(p.ids, max_tokens, self.sampling(req, j), specs,
                              p.instruction_length, stop_ids)
                for p in prompts for j in range(req.n)]
        run = _Run(self.scheduler, self.lm.tokenizer, rows, stop)
        ident = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        applied = steering.public() if steering.vectors else None
        prompt_tokens = sum(len(p.ids) for p in prompts)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            body = _sse(self, run, ident, created, kind, applied, prompt_tokens, include_usage)
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
                "usage": _usage(prompt_tokens, sum(run.tokens)), "steering": applied,
                "system_fingerprint": None}

    # ---- prompts --------------------------------------------------------------------------
    def chat_prompt(self, req: ChatCompletionRequest) -> _Prompt:
        messages = []
        for i, message in enumerate(req.messages):
            role = "system" if message.role == "developer" else message.role
            content = message.content
            if isinstance(content, list):
                parts = []
                for j, part in enumerate(content):
                    if part.type != "text" or part.text is None:
                        raise _bad(f"messages.{i}.content.{j}: only text parts are supported, "
                                   f"got type {part.type!r}", f"messages.{i}.content")
                    parts.append(part.text)
                content = "".join(parts)
            messages.append({"role": role, "content": content if content is not None else ""})
        try:
            ids, instr = prompt_ids(self.lm.tokenizer, messages, chat=True)
        except SteerlabError as exc:
            raise _bad(f"messages: {exc}", "messages") from None
        return _Prompt(ids, instr)

    def text_prompts(self, req: CompletionRequest) -> list[_Prompt]:
        value = req.prompt
        items: list[str | list[int]]
        if isinstance(value, str):
            items = [value]
        elif value and all(isinstance(x, int) for x in value):
            items = [list(value)]  # type: ignore[arg-type]
        else:
            items = list(value)  # type: ignore[arg-type]
        if not items:
            raise _bad("prompt is empty", "prompt")
        prompts = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                try:
                    ids, instr = prompt_ids(self.lm.tokenizer, item, chat=False)
                except SteerlabError as exc:
                    raise _bad(f"prompt {i}: {exc}", "prompt") from None
            else:
                ids = list(item)
                if not ids:
                    raise _bad(f"prompt {i} has no tokens", "prompt")
                bad = [t for t in ids if not 0 <= t < self.vocab]
                if bad:
                    raise _bad(f"prompt {i}: token id(s) {bad[:5]} out of range for a "
                               f"vocabulary of {self.vocab}", "prompt")
                instr = len(ids)
            prompts.append(_Prompt(ids, instr))
        return prompts


def _context_length(lm: LoadedModel) -> int | None:
    config = getattr(lm.model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _data(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _sse(server: _Server, run: _Run, ident: str, created: int, kind: str,
               applied: dict[str, Any] | None, prompt_tokens: int,
               include_usage: bool) -> AsyncIterator[str]:
    """The server-sent events of one streamed request, ending with ``data: [DONE]``."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    base = {"id": ident, "object": obj, "created": created, "model": server.config.model_name}

    def chunk(index: int, text: str | None, finish: str | None,
              first: bool = False) -> dict[str, Any]:
        if kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else \
                ({"content": text} if text else {})
            choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None,
                      "finish_reason": finish}
        return {**base, "choices": [choice], "steering": applied}

    try:
        if kind == "chat":
            for i in range(len(run.jobs)):
                yield _data(chunk(i, None, None, first=True))
        async for index, delta, finish in run.events():
            if delta:
                yield _data(chunk(index, delta, None))
            if finish is not None:
                yield _data(chunk(index, "", finish))
        if include_usage:
            yield _data({**base, "choices": [],
                         "usage": _usage(prompt_tokens, sum(run.tokens))})
    except APIError as exc:
        yield _data(exc.body())
    finally:
        run.close()
    yield "data: [DONE]\n\n"


class _Guard:
    """ASGI middleware: the bearer token on ``/v1/*`` and a cap on body size."""

    def __init__(self, app: Any, api_key: str | None):
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        failure: APIError | None = None
        if self.key is not None and str(scope.get("path", "")).startswith("/v1"):
            scheme, _, token = headers.get("authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                     self.key):
                failure = APIError(401, "missing or wrong API key: send the header "
                                   "'Authorization: Bearer <key>'", code="invalid_api_key",
                                   headers={"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length", b"0")
        if failure is None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            failure = APIError(413, f"request body over {MAX_BODY_BYTES} bytes")
        if failure is not None:
            response = JSONResponse(failure.body(), status_code=failure.status,
                                    headers=failure.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


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
    server = _Server(lm, registry or VectorRegistry(), config)

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

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(QueueFull)
    async def _queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(error_body(str(exc), "rate_limit_error", None, "queue_full"),
                            status_code=429, headers={"Retry-After": "1"})

    @app.exception_handler(SchedulerStopped)
    async def _stopped(_request: Request, exc: SchedulerStopped) -> JSONResponse:
        return JSONResponse(error_body(str(exc), "server_error"), status_code=503)

    @app.exception_handler(SteerlabError)
    async def _steerlab_error(_request: Request, exc: SteerlabError) -> JSONResponse:
        return JSONResponse(error_body(str(exc)), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(exc), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error"),
                            status_code=500)

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
            raise _bad(f"body: not valid JSON ({exc})") from None
        try:
            steering = parse_steering(value, "steering")
            resolve_steering(steering, server.registry, server.n_layers, server.hidden_size)
        except SteerlabError as exc:
            raise _bad(str(exc), "steering") from None
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
            raise _bad("max_tokens and max_completion_tokens differ", "max_completion_tokens")
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

    app.add_middleware(_Guard, api_key=config.api_key)
    return app


def _validation_body(exc: RequestValidationError) -> dict[str, Any]:
    errors = list(exc.errors())
    if not errors:
        return error_body("invalid request")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error", "JSON decode error")
        return error_body(f"the body is not valid JSON: {why}", code="json_invalid")
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return error_body(f"{param or 'body'}: {first.get('msg', 'invalid')}{more}", param=param)
