"""GET /openapi.json: the API as an OpenAPI 3.1 document that real answers conform to."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from gateway.routes import routes
from tests.gateway.fake_engine import running_app

pytestmark = pytest.mark.anyio
CHAT = "/v1/chat/completions"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def check(document: dict[str, Any], name: str, instance: Any) -> None:
    """Validate `instance` against the document's component schema `name`."""
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:doc", resource)
    schema = {"$ref": f"urn:doc#/components/schemas/{name}"}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(instance)


async def test_the_document_lists_every_route_with_its_method() -> None:
    async with running_app() as (client, _, _):
        r = await client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    document = r.json()
    assert document["openapi"].startswith("3.1")
    for route in routes():
        assert isinstance(route, Route)
        if route.path == "/openapi.json":
            continue
        path = route.path.replace("{model:path}", "{model}")
        assert path in document["paths"], path
        assert {m.lower() for m in route.methods or ()} - {"head"} == set(document["paths"][path])
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    assert "securitySchemes" not in document["components"]


async def test_real_answers_conform_to_the_document() -> None:
    async with running_app() as (client, _, _):
        document = (await client.get("/openapi.json")).json()
        completion = await client.post("/v1/completions", json={"prompt": "x", "logprobs": 1})
        chat = await client.post(CHAT, json={"messages": [{"role": "user", "content": "x"}]})
        models = await client.get("/v1/models")
        error = await client.post("/v1/completions", json={"prompt": "x", "top_p": 0})
        health = await client.get("/health")
    check(document, "CompletionResponse", completion.json())
    check(document, "ChatCompletionResponse", chat.json())
    check(document, "ModelList", models.json())
    check(document, "ErrorResponse", error.json())
    check(document, "Health", health.json())
    check(document, "CompletionRequest", {"prompt": [[1, 2]], "n": 2})
    with pytest.raises(jsonschema.ValidationError):
        check(document, "ChatCompletionRequest", {"messages": "hi"})
    operation = document["paths"]["/v1/completions"]["post"]
    assert {"400", "401", "413", "415", "429", "503"} <= set(operation["responses"])


async def test_with_an_api_key_the_api_routes_need_the_bearer_scheme() -> None:
    async with running_app(api_key="k") as (client, _, _):
        r = await client.get("/openapi.json")  # the document itself stays open
    document = r.json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/v1/models"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in document["paths"]["/health"]["get"]
