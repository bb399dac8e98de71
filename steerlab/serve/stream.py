"""The bridge from the scheduler's worker thread to one request's text, and its SSE stream.

:class:`Run` submits a request's rows and turns their token events into text deltas per
choice (stop strings, finish reasons, a client that went away); :func:`sse` frames them as
OpenAI's server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from steerlab.scoring.generate import GenerationRow
from steerlab.serve.errors import APIError
from steerlab.serve.scheduler import Event, FinishEvent, Job, Scheduler, Sink, TokenEvent
from steerlab.serve.text import TextStream


@dataclass
class Prompt:
    """One prompt's token ids and the length of its instruction part."""

    ids: list[int]
    instruction_length: int


class Run:
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


def usage(prompt: int, completion: int) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _data(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def sse(model_name: str, run: Run, ident: str, created: int, kind: str,
               applied: dict[str, Any] | None, prompt_tokens: int,
               include_usage: bool) -> AsyncIterator[str]:
    """The server-sent events of one streamed request, ending with ``data: [DONE]``."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    base = {"id": ident, "object": obj, "created": created, "model": model_name}

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
                         "usage": usage(prompt_tokens, sum(run.tokens))})
    except APIError as exc:
        yield _data(exc.body())
    finally:
        run.close()
    yield "data: [DONE]\n\n"
