"""Conversations and the Wiz chat stream (docs/api.md §3.4, §4.2, D10) against the LLM stand-in,
so the real google-genai and openai SDKs run end to end."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select, update

from tests.conftest import assert_error, auth, eventually, messages_of, send_message
from tests.standins import Reply
from vidwiz.context import SESSIONS, TRANSCRIPTS
from vidwiz.db import utcnow
from vidwiz.models import Conversation, Message, Task, TaskStatus, Video
from vidwiz.tasks.service import FETCH_METADATA, FETCH_TRANSCRIPT

VIDEO = "dQw4w9WgXcQ"
TRANSCRIPT = [
    {"text": "Welcome to the bread class", "offset": 0.4, "duration": 2.0},
    {"text": "no offset here"},
    {"text": "Knead for ten minutes", "offset": 75.2, "duration": 3.0},
]
GUEST = {"X-Guest-Session-ID": "0b6a3f2e-guest-a"}
OTHER_GUEST = {"X-Guest-Session-ID": "0b6a3f2e-guest-b"}
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$")


@pytest.fixture
def chat_provider() -> str | None:
    """Which provider the app talks to (parametrize it to change; None: no provider)."""
    return "gemini"


@pytest.fixture
def env(env, llm_standin, chat_provider):
    if chat_provider:
        env.update(llm_standin.env(chat_provider))
    return env


# -- create / read ---------------------------------------------------------------------------------


async def test_create_conversation_for_user_and_guest(client, sessions, factory):
    token, user_id = await factory.user()
    resp = await client.post(
        "/v2/conversations", json={"video_id": f"https://youtu.be/{VIDEO}?t=3"}, headers=auth(token)
    )
    assert resp.status == 201
    body = await resp.json()
    assert set(body) == {"id", "video_id", "created_at", "updated_at"}
    assert body["video_id"] == VIDEO and DATETIME.match(body["created_at"]) and DATETIME.match(body["updated_at"])

    guest_id = (await factory.conversation(GUEST, VIDEO))["id"]
    assert guest_id != body["id"]
    async with sessions() as session:
        conversations = {c.id: c for c in await session.scalars(select(Conversation))}
        video = await session.scalar(select(Video).where(Video.video_id == VIDEO))
        tasks = sorted((t.task_type, t.status) for t in await session.scalars(select(Task)))
    assert conversations[body["id"]].user_id == user_id and conversations[body["id"]].guest_session_id is None
    assert (
        conversations[guest_id].guest_session_id == GUEST["X-Guest-Session-ID"]
        and conversations[guest_id].user_id is None
    )
    assert video.title is None and video.transcript_available is False
    # Both conversations wanted the fetch tasks; there is still one of each (D7).
    assert tasks == [(FETCH_METADATA, TaskStatus.PENDING), (FETCH_TRANSCRIPT, TaskStatus.PENDING)]


async def test_create_conversation_validation_and_auth(client, factory):
    token, _ = await factory.user()
    resp = await client.post("/v2/conversations", json={"video_id": VIDEO, "extra": 1}, headers=auth(token))
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, "VALIDATION_ERROR", "Request validation failed")
    assert body["error"]["details"] == [
        {"field": "body.extra", "message": "Extra inputs are not permitted", "type": "extra_forbidden"}
    ]

    resp = await client.post(
        "/v2/conversations", json={"video_id": "https://youtube.com/playlist?list=x"}, headers=GUEST
    )
    detail = (await resp.json())["error"]["details"][0]
    assert resp.status == 422 and detail["field"] == "body.video_id" and detail["type"] == "value_error"

    resp = await client.post("/v2/conversations", json={"video_id": VIDEO})
    assert resp.status == 401
    assert_error(await resp.json(), "UNAUTHORIZED", "Missing Auth or Guest ID")
    # Auth is checked before the body.
    resp = await client.post("/v2/conversations", json={})
    assert resp.status == 401


async def test_long_term_token_is_ignored_by_viewer_resolution(client, factory):
    token, _ = await factory.user()
    resp = await client.post("/v2/auth/tokens", headers=auth(token))
    long_term = (await resp.json())["token"]
    resp = await client.post("/v2/conversations", json={"video_id": VIDEO}, headers=auth(long_term))
    assert resp.status == 401
    assert_error(await resp.json(), "UNAUTHORIZED", "Missing Auth or Guest ID")
    # With a guest id it falls through to the guest.
    conversation_id = (await factory.conversation({**auth(long_term), **GUEST}, VIDEO))["id"]
    resp = await client.get(f"/v2/conversations/{conversation_id}", headers=GUEST)
    assert resp.status == 200


async def test_ownership_and_isolation(client, sessions, factory):
    alice, _ = await factory.user()
    bob, _ = await factory.user()
    alice_conversation = await factory.ready_conversation(auth(alice), VIDEO, TRANSCRIPT)
    guest_conversation = (await factory.conversation(GUEST, VIDEO))["id"]

    for path in (f"/v2/conversations/{alice_conversation}", f"/v2/conversations/{alice_conversation}/messages"):
        assert (await client.get(path, headers=auth(alice))).status == 200
        for headers in (auth(bob), GUEST, {**auth("not-a-jwt"), **GUEST}):
            resp = await client.get(path, headers=headers)
            assert resp.status == 404
            assert_error(await resp.json(), "NOT_FOUND", "Conversation not found")
    for path in (f"/v2/conversations/{guest_conversation}", f"/v2/conversations/{guest_conversation}/messages"):
        assert (await client.get(path, headers=GUEST)).status == 200
        # Another guest, or a user sending the same guest header (the JWT wins), sees nothing.
        for headers in (OTHER_GUEST, {**auth(alice), **GUEST}):
            assert (await client.get(path, headers=headers)).status == 404

    # Writing into someone else's conversation: 404 before anything else (body, quota).
    for headers in (auth(bob), GUEST):
        resp, body = await send_message(client, alice_conversation, "", headers)
        assert resp.status == 404
        assert_error(body, "NOT_FOUND", "Conversation not found")
    assert await messages_of(sessions, alice_conversation) == []


@pytest.mark.parametrize("path", ["0", "-1", "abc", "1.5", str(2**31)])
async def test_conversation_path_validation(client, path):
    resp = await client.get(f"/v2/conversations/{path}", headers=GUEST)
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, "VALIDATION_ERROR")
    assert body["error"]["details"][0]["field"] == "path.conversation_id"
    resp = await client.post(f"/v2/conversations/{path}/messages", json={"message": "hi"}, headers=GUEST)
    assert resp.status == 422


async def test_malformed_guest_id(client):
    for guest in ("x" * 300, "tab\there"):
        resp = await client.post("/v2/conversations", json={"video_id": VIDEO}, headers={"X-Guest-Session-ID": guest})
        assert resp.status == 422
        assert_error(await resp.json(), "VALIDATION_ERROR")
        resp = await client.get("/v2/conversations/1/messages", headers={"X-Guest-Session-ID": guest})
        assert resp.status == 422


# -- chat ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chat_provider", ["gemini", "openai"])
async def test_full_sse_frame_sequence(client, sessions, factory, llm_standin, chat_provider):
    token, _ = await factory.user()
    conversation_id = await factory.ready_conversation(auth(token), VIDEO, TRANSCRIPT)
    llm_standin.queue(Reply(chunks=["Knead", " it [1:15]", " — ok"]))

    resp, frames = await send_message(client, conversation_id, "  How long to knead?  ", auth(token))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert frames == ['{"content": "Knead"}', '{"content": " it [1:15]"}', '{"content": " \\u2014 ok"}', "[DONE]"]
    assert (resp.headers["X-Quota-Limit"], resp.headers["X-Quota-Used"], resp.headers["X-Quota-Remaining"]) == (
        "20",
        "1",
        "19",
    )
    assert 0 < int(resp.headers["X-Quota-Reset"]) <= 86400

    stored = await messages_of(sessions, conversation_id)
    assert [(m.role, m.content, m.metadata_) for m in stored] == [
        ("user", "How long to knead?", None),
        ("assistant", "Knead it [1:15] — ok", None),
    ]
    call = llm_standin.calls[-1]
    assert call.provider == chat_provider and call.stream
    assert call.last_user_text == "How long to knead?"
    assert call.max_tokens == 4096
    assert "Wiz" in call.system_text and "this video" in call.system_text
    assert "0:00 Welcome to the bread class\n1:15 Knead for ten minutes" in call.system_text
    assert "no offset here" not in call.system_text

    # The listing renders both messages; the next turn carries them as history.
    resp = await client.get(f"/v2/conversations/{conversation_id}/messages", headers=auth(token))
    listed = await resp.json()
    assert [(m["role"], m["content"], m["metadata"]) for m in listed] == [
        ("user", "How long to knead?", None),
        ("assistant", "Knead it [1:15] — ok", None),
    ]
    assert set(listed[0]) == {"id", "conversation_id", "role", "content", "metadata", "created_at"}
    resp, frames = await send_message(client, conversation_id, "And then?", auth(token))
    assert frames[-1] == "[DONE]"
    body = llm_standin.calls[-1].body
    if chat_provider == "gemini":
        turns = [(c["role"], c["parts"][0]["text"]) for c in body["contents"]]
        assert turns == [("user", "How long to knead?"), ("model", "Knead it [1:15] — ok"), ("user", "And then?")]
    else:
        turns = [(m["role"], m["content"]) for m in body["messages"][1:]]
        assert turns == [("user", "How long to knead?"), ("assistant", "Knead it [1:15] — ok"), ("user", "And then?")]


async def test_history_is_the_last_ten_messages(client, sessions, llm_standin, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    two_days_ago = utcnow() - timedelta(days=2)  # old turns: outside today's quota
    async with sessions() as session:
        for index in range(12):
            role = "user" if index % 2 == 0 else "assistant"
            session.add(
                Message(
                    conversation_id=conversation_id,
                    role=role,
                    content=f"m{index}",
                    created_at=two_days_ago + timedelta(seconds=index),
                )
            )
        await session.commit()
    resp, frames = await send_message(client, conversation_id, "newest", GUEST)
    assert frames[-1] == "[DONE]"
    contents = [c["parts"][0]["text"] for c in llm_standin.calls[-1].body["contents"]]
    assert contents == ["m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11", "newest"]


async def test_title_and_truncation_in_the_prompt(client, sessions, llm_standin, monkeypatch, factory):
    from vidwiz.conversations import service

    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    async with sessions() as session:
        await session.execute(update(Video).where(Video.video_id == VIDEO).values(title="Bread 101"))
        await session.commit()
    monkeypatch.setattr(service, "MAX_TRANSCRIPT_CHARS", 40)
    resp, frames = await send_message(client, conversation_id, "hi", GUEST)
    assert frames[-1] == "[DONE]"
    system = llm_standin.calls[-1].system_text
    assert 'the YouTube video "Bread 101"' in system
    assert "0:00 Welcome to the bread class" in system and "Knead" not in system
    assert "cut after 0:00" in system


async def test_202_while_the_transcript_is_missing_and_a_task_exists(client, sessions, redis, settings, factory):
    conversation_id = (await factory.conversation(GUEST, VIDEO))["id"]
    # The transcript task already ran and failed for good: a new one must be scheduled.
    async with sessions() as session:
        await session.execute(update(Task).values(status=TaskStatus.FAILED))
        await session.commit()
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{settings.redis_key_prefix}tasks:wakeup:{FETCH_TRANSCRIPT}")

    resp, body = await send_message(client, conversation_id, "hello?", GUEST)
    assert resp.status == 202
    assert body == {"status": "processing", "message": "Transcript processing"}
    assert resp.headers["X-Quota-Used"] == "0"  # the reservation was given back
    async with sessions() as session:
        active = list(await session.scalars(select(Task).where(Task.status == TaskStatus.PENDING)))
    assert sorted(t.task_type for t in active) == [FETCH_METADATA, FETCH_TRANSCRIPT]
    assert all(t.task_details == {"video_id": VIDEO} for t in active)
    assert await messages_of(sessions, conversation_id) == []
    # Workers waiting for transcript tasks were woken.
    await eventually(lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1), "a task wake-up")
    await pubsub.aclose()

    # Asking again does not duplicate the pending task.
    resp, _ = await send_message(client, conversation_id, "hello?", GUEST)
    assert resp.status == 202
    async with sessions() as session:
        pending = list(await session.scalars(select(Task).where(Task.status == TaskStatus.PENDING)))
    assert len(pending) == 2


async def test_video_missing_and_transcript_data_missing(client, sessions, factory):
    conversation_id = (await factory.conversation(GUEST, VIDEO))["id"]
    async with sessions() as session:
        await session.execute(update(Video).values(transcript_available=True))
        await session.commit()
    resp, body = await send_message(client, conversation_id, "hi", GUEST)
    assert resp.status == 404
    assert_error(body, "NOT_FOUND", "Transcript data missing")

    await client.app[TRANSCRIPTS].save(VIDEO, [])  # an empty transcript is no transcript
    resp, body = await send_message(client, conversation_id, "hi", GUEST)
    assert_error(body, "NOT_FOUND", "Transcript data missing")

    async with sessions() as session:
        session.add(Conversation(video_id="aaaaaaaaaaa", guest_session_id=GUEST["X-Guest-Session-ID"]))
        await session.commit()
        orphan = await session.scalar(select(Conversation.id).where(Conversation.video_id == "aaaaaaaaaaa"))
    resp, body = await send_message(client, orphan, "hi", GUEST)
    assert resp.status == 404
    assert_error(body, "NOT_FOUND", "Video not found")

    me = await client.get(f"/v2/conversations/{conversation_id}/messages", headers=GUEST)
    assert await me.json() == []
    # None of these refusals used the quota.
    resp, _ = await send_message(client, conversation_id, "hi", GUEST)
    assert resp.status == 404


@pytest.mark.parametrize("message", ["", "   ", "\n\t "])
async def test_empty_message_is_rejected(client, message, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    resp, body = await send_message(client, conversation_id, message, GUEST)
    assert resp.status == 422
    assert body["error"]["details"] == [
        {"field": "body.message", "message": "Value error, message cannot be empty", "type": "value_error"}
    ]


async def test_bad_message_bodies(client, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    url = f"/v2/conversations/{conversation_id}/messages"
    cases = [
        ({"message": "x" * 4001}, "body.message", "string_too_long"),
        ({}, "body.message", "missing"),
        ({"message": 5}, "body.message", "string_type"),
        ({"message": "hi", "model": "gpt-5"}, "body.model", "extra_forbidden"),
    ]
    for payload, field, kind in cases:
        resp = await client.post(url, json=payload, headers=GUEST)
        assert resp.status == 422, payload
        body = await resp.json()
        assert_error(body, "VALIDATION_ERROR", "Request validation failed")
        assert (body["error"]["details"][0]["field"], body["error"]["details"][0]["type"]) == (field, kind)
    resp = await client.post(url, data=b"{not json", headers={**GUEST, "Content-Type": "application/json"})
    assert resp.status == 422
    assert (await resp.json())["error"]["details"][0]["field"] == "body.0"
    # The limit counts the trimmed text.
    resp, frames = await send_message(client, conversation_id, "  " + "x" * 4000 + "  ", GUEST)
    assert resp.status == 200 and frames[-1] == "[DONE]"
    # Unknown conversation: 404 (ownership is checked before the body).
    resp = await client.post("/v2/conversations/999999/messages", json={}, headers=GUEST)
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Conversation not found")
    # No viewer at all: 401 first.
    resp = await client.post(url, json={"message": "hi"})
    assert resp.status == 401


@pytest.mark.parametrize("chat_provider", ["gemini", "openai"])
async def test_provider_error_mid_stream(client, sessions, llm_standin, chat_provider, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    llm_standin.queue(Reply(chunks=["one", " two", " three"], fail_after=2))
    resp, frames = await send_message(client, conversation_id, "go", GUEST)
    assert resp.status == 200
    assert frames == ['{"content": "one"}', '{"content": " two"}', '{"error": "Processing error"}']
    stored = await messages_of(sessions, conversation_id)
    # Content reached the client: the turn counts, the partial text is not kept.
    assert [(m.role, m.content, m.metadata_) for m in stored] == [("user", "go", None)]


@pytest.mark.parametrize("chat_provider", ["gemini", "openai"])
async def test_provider_error_before_first_token(client, sessions, llm_standin, chat_provider, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    llm_standin.queue(Reply(fail_before=True, status=503))
    resp, frames = await send_message(client, conversation_id, "go", GUEST)
    assert resp.status == 200
    assert frames == ['{"error": "Processing error"}']
    stored = await messages_of(sessions, conversation_id)
    assert [(m.role, m.content, m.metadata_) for m in stored] == [
        ("user", "go", {"status": "failed", "reason": "provider_error"})
    ]
    # The next turn does not see the failed message, and the failure did not count.
    resp, frames = await send_message(client, conversation_id, "again", GUEST)
    assert frames[-1] == "[DONE]" and resp.headers["X-Quota-Used"] == "1"
    call = llm_standin.calls[-1]
    assert "go" not in json.dumps(call.body.get("contents") or call.body.get("messages"))


@pytest.mark.parametrize("chat_provider", ["gemini", "openai"])
async def test_empty_reply_saves_nothing_ends_with_done_and_does_not_count(
    client, sessions, llm_standin, chat_provider, factory
):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    llm_standin.queue(Reply(chunks=[]))
    resp, frames = await send_message(client, conversation_id, "think hard", GUEST)
    assert frames == ["[DONE]"]  # docs/api.md §4.2: an empty reply saves nothing and still ends with [DONE]
    stored = await messages_of(sessions, conversation_id)
    assert [(m.role, m.metadata_) for m in stored] == [("user", {"status": "failed", "reason": "empty_reply"})]


@pytest.mark.parametrize("chat_provider", ["gemini", "openai"])
async def test_client_disconnect_cancels_the_provider_call(client, sessions, llm_standin, chat_provider, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    llm_standin.queue(Reply(chunks=["first", " second", " third"], hold_after=1))
    resp = await client.post(f"/v2/conversations/{conversation_id}/messages", json={"message": "go"}, headers=GUEST)
    assert resp.status == 200
    assert await resp.content.readline() == b'data: {"content": "first"}\n'
    resp.close()  # the client goes away mid-answer

    call = llm_standin.calls[-1]
    await eventually(
        lambda: call.disconnected, "the provider stream closed"
    )  # the server noticed and closed the provider stream
    assert call.disconnected and call.chunks_sent == 1
    llm_standin.release()
    stored = await messages_of(sessions, conversation_id)
    assert [(m.role, m.content, m.metadata_) for m in stored] == [("user", "go", None)]


@pytest.fixture
async def served(app):
    """The app served as `web.run_app` serves it. Unlike the test client's server, aiohttp
    does not cancel a handler there when its client disconnects: the stream must notice."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession(f"http://{host}:{port}") as http:
        yield http
    await runner.cleanup()


async def test_disconnect_is_noticed_while_the_model_is_silent(served, app, llm_standin):
    resp = await served.post("/v2/conversations", json={"video_id": VIDEO}, headers=GUEST)
    conversation_id = (await resp.json())["id"]
    await app[TRANSCRIPTS].save(VIDEO, TRANSCRIPT)
    async with app[SESSIONS]() as session:
        await session.execute(update(Video).values(transcript_available=True))
        await session.commit()
    llm_standin.queue(Reply(chunks=["first", " second"], hold_after=1))

    resp = await served.post(f"/v2/conversations/{conversation_id}/messages", json={"message": "go"}, headers=GUEST)
    assert await resp.content.readline() == b'data: {"content": "first"}\n'
    resp.close()
    call = llm_standin.calls[-1]
    await eventually(lambda: call.disconnected, "the provider stream closed")
    assert call.disconnected and call.chunks_sent == 1
    llm_standin.release()
    stored = await messages_of(app[SESSIONS], conversation_id)
    assert [(m.role, m.content) for m in stored] == [("user", "go")]


@pytest.mark.parametrize("chat_provider", [None])
async def test_no_provider_configured(client, sessions, llm_standin, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    resp, body = await send_message(client, conversation_id, "hi", GUEST)
    assert resp.status == 500  # the reference's answer (docs/api.md §4.2 step 6)
    assert_error(body, "INTERNAL_ERROR", "Gemini API key not configured")
    assert await messages_of(sessions, conversation_id) == []
    assert llm_standin.calls == []


@pytest.fixture
def gemini_without_key(env):
    env["LLM_PROVIDER"] = "gemini"
    return env


@pytest.mark.parametrize("chat_provider", [None])
async def test_provider_chosen_without_key(gemini_without_key, client, sessions, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    resp, body = await send_message(client, conversation_id, "hi", GUEST)
    assert resp.status == 500
    assert_error(body, "INTERNAL_ERROR", "Gemini API key not configured")
    assert await messages_of(sessions, conversation_id) == []
