"""GET/PATCH /v2/users/me (docs/api.md §3.1): the profile shape, name rules, ai_notes_enabled inside
profile_data, no-op and unknown fields, type errors, and auth precedence over body errors."""

from __future__ import annotations

import re
import time
from datetime import datetime

import jwt
import pytest

from tests.conftest import SECRET_KEY, assert_error, auth
from vidwiz.models import User

PROFILE_KEYS = {
    "id",
    "email",
    "name",
    "profile_image_url",
    "ai_notes_enabled",
    "token_exists",
    "long_term_token",
    "created_at",
}


def profile(body: dict) -> dict:
    """The Profile fields of docs/api.md §3.1 (additions beside them, like `wiz_quota`, are allowed)."""
    assert PROFILE_KEYS <= set(body), body
    return {key: body[key] for key in PROFILE_KEYS}


async def insert_user(factory, **fields) -> int:
    """The user row these tests read back (its email and name are asserted below)."""
    return await factory.user_row(**{"email": "me@example.com", "name": "Me Myself", **fields})


async def stored(sessions, user_id: int) -> User:
    async with sessions() as session:
        return await session.get(User, user_id)


def token_for(user_id: int) -> dict[str, str]:
    return auth(
        jwt.encode(
            {
                "user_id": user_id,
                "email": "me@example.com",
                "name": "Me",
                "profile_image_url": None,
                "exp": int(time.time()) + 600,
            },
            SECRET_KEY,
            algorithm="HS256",
        )
    )


async def test_get_me_profile_shape(client, factory):
    user_id = await insert_user(
        factory, profile_image_url="https://img/x.png", created_at=datetime(2025, 1, 31, 9, 23, 17, 123456)
    )
    resp = await client.get("/v2/users/me", headers=token_for(user_id))
    assert resp.status == 200
    assert profile(await resp.json()) == {
        "id": user_id,
        "email": "me@example.com",
        "name": "Me Myself",
        "profile_image_url": "https://img/x.png",
        "ai_notes_enabled": False,
        "token_exists": False,
        "long_term_token": None,
        "created_at": "2025-01-31T09:23:17+0000",
    }


async def test_registered_user_profile(client, factory):
    token, user_id = await factory.user(email="fresh@example.com", name="Fresh User")
    body = profile(await (await client.get("/v2/users/me", headers=auth(token))).json())
    assert (body["id"], body["email"], body["name"], body["ai_notes_enabled"]) == (
        user_id,
        "fresh@example.com",
        "Fresh User",
        False,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000", body["created_at"])
    created = datetime.strptime(body["created_at"], "%Y-%m-%dT%H:%M:%S%z")
    assert abs(created.timestamp() - time.time()) < 300  # stored as UTC (D4)


async def test_patch_name_is_trimmed(client, sessions, factory):
    user_id = await insert_user(factory)
    headers = token_for(user_id)
    for sent, kept in (("  New Name  ", "New Name"), ("ab", "ab"), ("   " + "n" * 100 + "   ", "n" * 100)):
        resp = await client.patch("/v2/users/me", headers=headers, json={"name": sent})
        assert resp.status == 200
        body = profile(await resp.json())
        assert body["name"] == kept
        assert (await stored(sessions, user_id)).name == kept


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "Value error, Name must be at least 2 characters long"),
        ("   ", "Value error, Name must be at least 2 characters long"),
        (" a ", "Value error, Name must be at least 2 characters long"),
        ("n" * 101, "Value error, Name must be less than 100 characters"),
    ],
)
async def test_patch_name_rules(client, sessions, name, message, factory):
    user_id = await insert_user(factory)
    resp = await client.patch("/v2/users/me", headers=token_for(user_id), json={"name": name})
    body = await resp.json()
    assert resp.status == 422
    assert_error(body, "VALIDATION_ERROR", "Request validation failed")
    assert body["error"]["details"] == [{"field": "body.name", "message": message, "type": "value_error"}]
    assert (await stored(sessions, user_id)).name == "Me Myself"


async def test_patch_ai_notes_enabled_keeps_other_profile_keys(client, sessions, factory):
    user_id = await insert_user(factory, profile_data={"theme": "dark", "ai_notes_enabled": False})
    headers = token_for(user_id)
    resp = await client.patch("/v2/users/me", headers=headers, json={"ai_notes_enabled": True})
    assert resp.status == 200
    body = await resp.json()
    assert body["ai_notes_enabled"] is True and body["name"] == "Me Myself"
    assert (await stored(sessions, user_id)).profile_data == {"theme": "dark", "ai_notes_enabled": True}

    resp = await client.patch("/v2/users/me", headers=headers, json={"ai_notes_enabled": False, "name": "Both Set"})
    body = await resp.json()
    assert (body["ai_notes_enabled"], body["name"]) == (False, "Both Set")
    assert (await stored(sessions, user_id)).profile_data == {"theme": "dark", "ai_notes_enabled": False}

    # Nulls mean "leave as is".
    resp = await client.patch("/v2/users/me", headers=headers, json={"ai_notes_enabled": None, "name": None})
    body = await resp.json()
    assert (body["ai_notes_enabled"], body["name"]) == (False, "Both Set")


async def test_patch_creates_profile_data_when_missing_or_not_an_object(client, sessions, factory):
    for initial in (None, ["legacy", "list"]):
        user_id = await insert_user(factory, email=f"p{len(str(initial))}@example.com", profile_data=initial)
        headers = token_for(user_id)
        assert (await (await client.get("/v2/users/me", headers=headers)).json())["ai_notes_enabled"] is False
        resp = await client.patch("/v2/users/me", headers=headers, json={"ai_notes_enabled": True})
        assert (await resp.json())["ai_notes_enabled"] is True
        assert (await stored(sessions, user_id)).profile_data == {"ai_notes_enabled": True}


async def test_patch_empty_object_is_a_no_op_and_unknown_fields_are_ignored(client, sessions, factory):
    user_id = await insert_user(factory, profile_data={"theme": "dark"}, long_term_token="stored-token")
    headers = token_for(user_id)
    before = profile(await (await client.get("/v2/users/me", headers=headers)).json())
    assert before["long_term_token"] == "stored-token" and before["token_exists"] is True
    for body in ({}, {"email": "hijack@example.com", "id": 99, "long_term_token": "x", "profile_data": {}}):
        resp = await client.patch("/v2/users/me", headers=headers, json=body)
        assert resp.status == 200
        assert profile(await resp.json()) == {**before, "long_term_token": None}
    user = await stored(sessions, user_id)
    assert (user.email, user.long_term_token, user.profile_data) == (
        "me@example.com",
        "stored-token",
        {"theme": "dark"},
    )


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"name": 123}, [("body.name", "string_type")]),
        ({"name": ["Li", "st"]}, [("body.name", "string_type")]),
        ({"ai_notes_enabled": "yes"}, [("body.ai_notes_enabled", "bool_parsing")]),
        ({"ai_notes_enabled": 1}, [("body.ai_notes_enabled", "bool_parsing")]),
        (
            {"name": {"x": 1}, "ai_notes_enabled": []},
            [("body.ai_notes_enabled", "bool_parsing"), ("body.name", "string_type")],
        ),
        (
            {"name": "x", "ai_notes_enabled": "on"},
            [("body.ai_notes_enabled", "bool_parsing"), ("body.name", "value_error")],
        ),
        ({"name": "Nul\u0000Name"}, [("body.name", "value_error")]),
        ({"name": "Lone \udc80 surrogate"}, [("body.name", "value_error")]),
    ],
)
async def test_patch_wrong_json_types_are_422(client, body, expected, factory):
    user_id = await insert_user(factory)
    resp = await client.patch("/v2/users/me", headers=token_for(user_id), json=body)
    payload = await resp.json()
    assert resp.status == 422
    assert_error(payload, "VALIDATION_ERROR", "Request validation failed")
    assert sorted((d["field"], d["type"]) for d in payload["error"]["details"]) == expected


async def test_patch_body_must_be_a_json_object(client, factory):
    headers = token_for(await insert_user(factory))
    for data, field, kind in (
        ("[]", "body", "dict_type"),
        ('"name"', "body", "dict_type"),
        ("", "body", "missing"),
        ("{name: 1}", "body.0", "json_invalid"),
    ):
        resp = await client.patch("/v2/users/me", headers={**headers, "Content-Type": "application/json"}, data=data)
        payload = await resp.json()
        assert resp.status == 422, payload
        assert [(d["field"], d["type"]) for d in payload["error"]["details"]] == [(field, kind)]


async def test_auth_errors_win_over_body_errors(client):
    for headers in ({}, auth("garbage")):
        resp = await client.patch("/v2/users/me", headers=headers, data="{not json")
        assert resp.status == 401
        assert_error(await resp.json(), "UNAUTHORIZED")
