"""ASGI middleware in front of the API: the API key and the body size limit."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError, StatusCounter

PROTECTED_PREFIXES = ("/v1/", "/generate")  # /health and /metrics stay open, as in vLLM


class ApiGuard:
    """401 without the right `Authorization: Bearer KEY`; 413 for a body over the limit."""

    def __init__(
        self, app: ASGIApp, api_key: str | None, max_body_bytes: int, count: StatusCounter
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._check(scope)
        if error is not None:
            self.count(scope["path"], error.status)
            await error.response()(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _check(self, scope: Scope) -> APIError | None:
        headers = dict(scope["headers"])
        path: str = scope["path"]
        if self.api_key and scope["method"] != "OPTIONS" and path.startswith(PROTECTED_PREFIXES):
            given = headers.get(b"authorization", b"").decode("latin-1")
            expected = f"Bearer {self.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return APIError(401, "Incorrect or missing API key", code="invalid_api_key")
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> APIError:
        message = f"the request body is larger than {self.max_body_bytes} bytes"
        return APIError(413, message, code="request_too_large")

    def _limited(self, receive: Receive) -> Receive:
        """Count the body as it arrives: a chunked body has no Content-Length to check."""
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()  # raised inside the route: the handler answers 413
            return message

        return limited_receive
