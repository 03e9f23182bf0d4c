"""One error type for the API and the OpenAI error envelope that carries it to clients."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batching.params import ParamError

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection first"
MAX_ECHO_CHARS = 100  # the longest client string an error message repeats

# OpenAI's SDKs pick their exception class from the status code; `type` is for humans and logs.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    CLIENT_CLOSED: "client_closed_request",
    503: "service_unavailable",
}

StatusCounter = Callable[[str, int], None]  # (path, status) -> count it in the metrics


class APIError(Exception):
    """An error answered with the OpenAI envelope: status, message and the offending param."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        is_counted: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.is_counted = is_counted  # a request trace recorded this status already

    @classmethod
    def from_param_error(cls, err: ParamError) -> APIError:
        """A 400 naming the sampling parameter that is out of range."""
        return cls(400, str(err), param=err.param)

    @classmethod
    def from_validation_error(cls, err: ValidationError) -> APIError:
        """A 400 naming the first field pydantic refused, e.g. `messages.0.role`."""
        first = err.errors(include_url=False, include_input=False)[0]
        param = clip(".".join(str(part) for part in first["loc"])) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return cls(400, message, param=param)

    def envelope(self) -> dict[str, Any]:
        """The body: {"error": {"message", "type", "param", "code"}}."""
        error_type = _TYPES.get(self.status, "server_error" if self.status >= 500 else "error")
        return {
            "error": {
                "message": self.message,
                "type": error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        """This error as an HTTP response."""
        return JSONResponse(self.envelope(), status_code=self.status, headers=self.headers)


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` cut to `limit` characters: errors never echo a megabyte back."""
    return text if len(text) <= limit else text[:limit] + "..."


def exception_handlers(count: StatusCounter) -> dict[Any, Callable[..., Any]]:
    """Handlers turning every exception into the envelope; `count` records the status."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        if not exc.is_counted:
            count(request.url.path, exc.status)
        return exc.response()

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"no route {request.method} {clip(request.url.path)}"
            return APIError(404, message, code="not_found").response()
        headers = dict(exc.headers or {})
        return APIError(exc.status_code, str(exc.detail), headers=headers).response()

    return {APIError: on_api_error, HTTPException: on_http_error}


class CatchAll:
    """Outermost middleware: an unexpected exception becomes a 500 envelope, logged once.

    Starlette's own handler for `Exception` answers and then re-raises, so the server logs
    the traceback a second time; this one logs it once, under a request id that the client
    gets too (the `X-Request-Id` header and the message), and never re-raises.
    """

    def __init__(self, app: ASGIApp, count: StatusCounter) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_started = False

        async def tracked_send(message: Message) -> None:
            nonlocal is_started
            is_started = is_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            request_id = f"req-{uuid.uuid4().hex[:16]}"
            log.exception(
                "unhandled error on %s %s [%s]", scope["method"], scope["path"], request_id
            )
            if is_started:
                return  # the answer is under way: the server ends the connection
            self.count(scope["path"], 500)
            error = APIError(
                500,
                f"internal server error (request id {request_id})",
                code="internal_error",
                headers={"X-Request-Id": request_id},
            )
            await error.response()(scope, receive, send)
