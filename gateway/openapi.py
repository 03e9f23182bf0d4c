"""The OpenAPI 3.1 document of the API (GET /openapi.json), generated from the wire models.

Bodies and responses are the pydantic models of protocol.py, as JSON Schema; every route
lists the statuses it can answer with OpenAI's error envelope, so that a schema-driven fuzzer
(schemathesis, in .ci/run) can hold the server to it.
"""

from __future__ import annotations

import functools
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    GenerateRequest,
    GenerateResponse,
    ModelCard,
    ModelList,
    WorkerLoad,
    WorkerModelInfo,
    WorkerServerInfo,
)

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: every status other than 200."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "loading", "draining", "error"]
    error: str | None = None


_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (CompletionRequest, "validation"),
    (ChatCompletionRequest, "validation"),
    (GenerateRequest, "validation"),
    (CompletionResponse, "serialization"),
    (ChatCompletionResponse, "serialization"),
    (ChatCompletionChunk, "serialization"),
    (GenerateResponse, "serialization"),
    (ModelList, "serialization"),
    (ModelCard, "serialization"),
    (ErrorResponse, "serialization"),
    (Health, "serialization"),
    (WorkerLoad, "serialization"),
    (WorkerModelInfo, "serialization"),
    (WorkerServerInfo, "serialization"),
]
_API_ERRORS = {
    "400": "invalid request (the envelope's param names the field)",
    "401": "missing or wrong API key",
    "404": "unknown model",
    "413": "body too large",
    "415": "the body is not declared application/json",
    "429": "the server is full; retry after Retry-After seconds",
    "500": "the engine failed (the message says how)",
    "503": "loading or shutting down; retry after Retry-After seconds",
}


@functools.cache
def openapi_json(has_api_key: bool) -> bytes:
    """The document as JSON bytes, built once per process."""
    try:
        package_version = version("llm-gateway")
    except PackageNotFoundError:  # running from a source tree that was never installed
        package_version = "0"
    document = openapi_document("llm-gateway", package_version, has_api_key)
    return json.dumps(document, separators=(",", ":")).encode()


_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "a chunk (the response object with deltas), an error envelope, "
            "or the last event: [DONE]",
        },
        "event": {"type": "string"},
    },
}


def openapi_document(title: str, version: str, has_api_key: bool) -> dict[str, Any]:
    """The whole document; `has_api_key` adds the bearer scheme to the API routes."""
    _, schemas = models_json_schema(_MODELS, ref_template=REF)
    post = {
        "/v1/completions": _post("Create a completion", CompletionRequest, CompletionResponse),
        "/v1/chat/completions": _post(
            "Create a chat completion", ChatCompletionRequest, ChatCompletionResponse
        ),
        "/generate/": _post("Generate (legacy)", GenerateRequest, GenerateResponse, stream=False),
    }
    paths: dict[str, Any] = {
        **post,
        "/v1/models": {"get": _get("List the models", ModelList)},
        "/v1/models/{model}": {"get": _model_card()},
        "/health": {"get": _health()},
        "/metrics": {"get": _metrics()},
        # what routers in front of several gateways poll (gateway/worker.py); no key needed
        "/get_load": {"get": _worker("Running plus waiting requests", WorkerLoad)},
        "/get_model_info": {"get": _worker("The served model", WorkerModelInfo)},
        "/get_server_info": {"get": _worker("The engine's settings", WorkerServerInfo)},
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas["$defs"]},
    }
    if has_api_key:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, item in paths.items():
            if path.startswith(("/v1/", "/generate")):
                for operation in item.values():
                    operation["security"] = [{"bearer": []}]
    return document


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _errors(*statuses: str) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": _ref(ErrorResponse)}}}
    return {status: {"description": _API_ERRORS[status], **error} for status in statuses}


def _post(
    summary: str, body: type[BaseModel], answer: type[BaseModel], stream: bool = True
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(answer)}}
    if stream:  # stream=true: Server-Sent Events; OpenAPI 3.1's schema describes one event
        content["text/event-stream"] = {"schema": _EVENT}
    request = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    responses = {"200": {"description": "the answer", "content": content}}
    responses |= _errors(*_API_ERRORS)
    return {"post": {"summary": summary, "requestBody": request, "responses": responses}}


def _get(summary: str, answer: type[BaseModel]) -> dict[str, Any]:
    ok = {"description": summary, "content": {"application/json": {"schema": _ref(answer)}}}
    return {"summary": summary, "responses": {"200": ok, **_errors("401", "503")}}


def _worker(summary: str, answer: type[BaseModel]) -> dict[str, Any]:
    ok = {"description": summary, "content": {"application/json": {"schema": _ref(answer)}}}
    return {"summary": summary, "responses": {"200": ok, **_errors("503")}}


def _model_card() -> dict[str, Any]:
    operation = _get("One model", ModelCard)
    operation["parameters"] = [
        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    operation["responses"] |= _errors("404")
    return operation


def _health() -> dict[str, Any]:
    content = {"application/json": {"schema": _ref(Health)}}
    return {
        "summary": "200 once the model is loaded; 503 while loading, draining or failed",
        "responses": {
            "200": {"description": "serving", "content": content},
            "503": {"description": "not serving", "content": content},
        },
    }


def _metrics() -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "summary": "Prometheus metrics",
        "responses": {
            "200": {"description": "the exposition text", "content": text},
            **_errors("503"),
        },
    }
