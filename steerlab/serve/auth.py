"""The ASGI guard in front of the app: the bearer token on ``/v1/*`` and the body-size cap."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse

from steerlab.serve.config import MAX_BODY_BYTES
from steerlab.serve.errors import APIError


class Guard:
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
