"""The OpenAPI document: complete (every route), valid, and served only in local/staging."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from tests.conftest import assert_error
from vidwiz.app import create_app


@pytest.fixture
def env(env):
    return {**env, "ENVIRONMENT": "local"}


def _registered_operations(app: web.Application) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route, without HEAD twins and static docs assets."""
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD" or isinstance(route.resource, web.StaticResource):
            continue
        info = route.resource.get_info()
        path = info.get("path") or info["formatter"]
        out.add((route.method.lower(), re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)))
    return out


async def test_every_route_is_documented_and_the_document_validates(client):
    resp = await client.get("/v2/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    spec = await resp.json()
    validate(spec)
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}
    registered = _registered_operations(client.app)
    assert registered - documented == set()
    assert documented == registered
    assert len(registered) > 30  # the whole API, not an accident of an empty router


async def test_operations_describe_auth_errors_and_the_envelope(client):
    spec = await (await client.get("/v2/openapi.json")).json()
    assert set(spec["components"]["securitySchemes"]) == {"bearerJWT", "longTermToken", "guestSession", "adminToken"}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op["responses"]["default"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            for status, response in op["responses"].items():
                if status != "default" and int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            schemes = {name for requirement in op["security"] for name in requirement}
            if path.startswith("/v2/internal/") and path != "/v2/internal/queue/ui":
                assert schemes == {"adminToken"}, (method, path)
                assert {"401", "403"} <= set(op["responses"]), (method, path)
            elif schemes:
                assert "401" in op["responses"], (method, path)
    note_create = spec["paths"]["/v2/videos/{video_id}/notes"]["post"]
    assert note_create["security"] == [{"bearerJWT": []}, {"longTermToken": []}]
    stream = spec["paths"]["/v2/videos/{video_id}/stream"]["get"]
    assert stream["security"] == [{"bearerJWT": []}, {"guestSession": []}]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert "204" in spec["paths"]["/v2/internal/tasks"]["get"]["responses"]


async def test_docs_page_renders_in_local(client):
    resp = await client.get("/v2/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert "swagger-ui" in page and "/v2/openapi.json" in page
    asset = await client.get("/v2/docs/static/swagger-ui-bundle.js")
    assert asset.status == 200
    assert "SwaggerUIBundle" in await asset.text()


async def test_docs_served_in_staging(aiohttp_client, settings, redis, engine):
    staging = await aiohttp_client(create_app(replace(settings, environment="staging"), redis=redis, engine=engine))
    assert (await staging.get("/v2/openapi.json")).status == 200
    assert (await staging.get("/v2/docs")).status == 200


@pytest.mark.parametrize("environment", ["production", "test"])
async def test_docs_absent_elsewhere(aiohttp_client, settings, redis, engine, environment):
    other = await aiohttp_client(create_app(replace(settings, environment=environment), redis=redis, engine=engine))
    for path in ("/v2/openapi.json", "/v2/docs", "/v2/docs/static/swagger-ui-bundle.js"):
        resp = await other.get(path)
        assert resp.status == 404, path
        assert_error(await resp.json(), "NOT_FOUND")
