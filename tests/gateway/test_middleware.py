"""The guards in front of the API: the key, the content type, the body size."""

from __future__ import annotations

import pytest

from tests.gateway.fake_engine import running_app

pytestmark = pytest.mark.anyio
BODY = b'{"prompt": "x", "max_tokens": 2}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_auth_scheme_is_case_insensitive() -> None:
    async with running_app(api_key="k") as (client, _, _):
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            r = await client.get("/v1/models", headers={"Authorization": f"{scheme} k"})
            assert r.status_code == 200, scheme
        extra_spaces = await client.get("/v1/models", headers={"Authorization": "Bearer   k "})
        basic = await client.get("/v1/models", headers={"Authorization": "Basic k"})
        bare = await client.get("/v1/models", headers={"Authorization": "k"})
    assert extra_spaces.status_code == 200
    assert basic.status_code == bare.status_code == 401


async def test_a_401_names_the_bearer_scheme() -> None:
    async with running_app(api_key="k") as (client, _, _):
        r = await client.post("/v1/completions", content=BODY)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x", ""],
)
async def test_a_post_that_is_not_declared_json_is_a_415(content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with running_app() as (client, engine, _):
        for path in ("/v1/completions", "/v1/chat/completions", "/generate/"):
            r = await client.post(path, content=BODY, headers=headers)
            assert r.status_code == 415, (path, r.text)
            error = r.json()["error"]
            assert (
                error["code"] == "unsupported_media_type" and "application/json" in error["message"]
            )
    assert not engine.submitted


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_with_or_without_a_charset_is_accepted(content_type: str) -> None:
    async with running_app() as (client, _, _):
        r = await client.post(
            "/v1/completions", content=BODY, headers={"Content-Type": content_type}
        )
    assert r.status_code == 200, r.text


async def test_the_content_type_is_checked_after_the_key() -> None:
    async with running_app(api_key="k") as (client, _, _):
        r = await client.post(
            "/v1/completions", content=BODY, headers={"Content-Type": "text/plain"}
        )
    assert r.status_code == 401  # strangers learn nothing about the API


async def test_get_routes_need_no_content_type() -> None:
    async with running_app() as (client, _, _):
        assert (await client.get("/v1/models")).status_code == 200
        assert (await client.get("/health")).status_code == 200


async def test_a_post_to_a_get_route_is_a_405_whatever_its_content_type() -> None:
    async with running_app() as (client, _, _):
        r = await client.post("/v1/models", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 405 and r.headers["allow"]


async def test_a_50_mb_body_is_a_413_without_being_read() -> None:
    body = b'{"prompt": "' + b"x" * (50 * 2**20) + b'"}'
    async with running_app() as (client, engine, _):
        r = await client.post(
            "/v1/completions", content=body, headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert not engine.submitted
