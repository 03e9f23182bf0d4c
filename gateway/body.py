"""Request bodies into the wire models: strict JSON, every failure a 400 naming the field.

Parsing is pydantic's own JSON parser in strict mode, as OpenAI types its parameters: a string
is not a number (`"seed": "42"`), `false` is not `0` and `1.5` is not an integer. The parser
also refuses what Python's `json` lets through or chokes on: lone surrogates (`"\\ud800"`),
bytes that are not UTF-8, nesting deeper than its recursion limit (a 400, not a
RecursionError) and `NaN`. Numbers too large for a float become infinity, which every float
field refuses with the other out-of-range values.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from gateway.errors import CLIENT_CLOSED, APIError, clip
from gateway.workers import Workers

M = TypeVar("M", bound=BaseModel)


LARGE_BODY = 64 * 1024  # bytes: a body this big is parsed in a worker thread


async def parse_body(request: Request, model: type[M], workers: Workers | None = None) -> M:
    """The request's JSON body as `model`; a 400 envelope for anything else. A large body is
    parsed in `workers`: parsing a 4 MB body takes tens of milliseconds, which on the event
    loop would stall every other stream and /health for as long."""
    try:
        raw = await request.body()
    except ClientDisconnect as e:  # gone before its body arrived: a 499, not a server error
        raise APIError(CLIENT_CLOSED, "the client closed the connection during the body") from e
    if workers is not None and len(raw) > LARGE_BODY:
        return await workers.run(parse_json, raw, model)
    return parse_json(raw, model)


def parse_json(raw: bytes, model: type[M]) -> M:
    """`raw` as `model`, strictly typed; raises APIError(400) naming the first bad field."""
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as e:
        raise _bad_body(e) from e


def _bad_body(err: ValidationError) -> APIError:
    first = err.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        detail = first.get("ctx", {}).get("error", first["msg"])
        return APIError(400, f"the body is not valid JSON: {clip(str(detail))}")
    if not first["loc"]:
        return APIError(400, "the body must be a JSON object")
    return APIError.from_validation_error(err)
