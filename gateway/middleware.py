"""ASGI middleware in front of the API: the API key, the content type and the body size.

POST bodies must be declared `application/json`: a web page can make a browser send a
"simple" cross-origin POST (text/plain, form types) without a CORS preflight, but never a
JSON one, so a server on localhost cannot be driven from any page its user opens.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import APIError, StatusCounter

PROTECTED_PREFIXES = ("/v1/", "/generate")  # /health and /metrics stay open, as in vLLM
JSON_BODY_PATHS = ("/v1/completions", "/v1/chat/completions", "/generate/")


class ApiGuard:
    """401 without the right `Authorization: Bearer KEY`; 415 for a POST that is not JSON;
    413 for a body over the limit."""

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
        is_guarded = (
            self.api_key and scope["method"] != "OPTIONS" and path.startswith(PROTECTED_PREFIXES)
        )
        if is_guarded and not self._is_authorized(headers.get(b"authorization", b"")):
            return APIError(
                401,
                "Incorrect or missing API key",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        is_json = _is_json(headers.get(b"content-type", b""))
        if scope["method"] == "POST" and path in JSON_BODY_PATHS and not is_json:
            message = "the body must be JSON, sent with 'Content-Type: application/json'"
            return APIError(415, message, code="unsupported_media_type")
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return self._too_large()
        return None

    def _is_authorized(self, header: bytes) -> bool:
        """`Bearer KEY`, the scheme in any case (RFC 7235), compared in constant time."""
        scheme, _, token = header.decode("latin-1").strip().partition(" ")
        expected = (self.api_key or "").encode()
        is_key = hmac.compare_digest(token.strip().encode("latin-1"), expected)
        return scheme.lower() == "bearer" and is_key

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


def _is_json(content_type: bytes) -> bool:
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json"
