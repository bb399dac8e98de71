"""Errors in OpenAI's shape: :class:`APIError`, :func:`error_body` and the app's handlers.

Every failure answers ``{"error": {"message", "type", "param", "code"}}``: 400 for bad requests
(validation included), 429 when the queue is full, 503 once the scheduler has stopped, 500 for
anything unexpected.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from steerlab.errors import SteerlabError
from steerlab.serve.scheduler import QueueFull, SchedulerStopped

log = logging.getLogger("steerlab.serve")


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


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 :class:`APIError` (``invalid_request_error``)."""
    return APIError(400, message, param=param, code=code)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error ``app`` raises in OpenAI's shape (see the module docstring)."""
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
        return JSONResponse(validation_body(exc), status_code=400)

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


def validation_body(exc: RequestValidationError) -> dict[str, Any]:
    """The 400 body of a request FastAPI could not validate: its first error, located."""
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
