"""Exact daily Wiz quotas (docs/api.md §4.2, D10): atomic admission, rebuilt
from the table after a Redis loss, failed turns given back, reconciled by the quota actor."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from actors.quota import reconcile_quotas
from tests.conftest import assert_error, auth, messages_of, send_message
from tests.standins import Reply
from vidwiz.auth.identity import Viewer
from vidwiz.context import KEYS, REDIS, SESSIONS, SETTINGS
from vidwiz.conversations.quota import RECONCILE_IDLE_SECONDS, DailyQuota, Day
from vidwiz.db import utcnow
from vidwiz.models import Message

USER_LIMIT = 5
GUEST_LIMIT = 2
VIDEO = "dQw4w9WgXcQ"
TRANSCRIPT = [{"text": "Knead for ten minutes", "offset": 75.2, "duration": 3.0}]
GUEST = {"X-Guest-Session-ID": "0b6a3f2e-guest-a"}
OTHER_GUEST = {"X-Guest-Session-ID": "0b6a3f2e-guest-b"}


@pytest.fixture
def env(env, llm_standin, request):
    """A test may add settings with `@pytest.mark.parametrize("env", [{...}], indirect=True)`."""
    env.update(llm_standin.env("gemini"))
    env.update({"WIZ_USER_DAILY_QUOTA": str(USER_LIMIT), "WIZ_GUEST_DAILY_QUOTA": str(GUEST_LIMIT)})
    env.update(getattr(request, "param", {}))
    return env


def counter_key(client, viewer: Viewer) -> str:
    return client.app[KEYS].quota(viewer.key, Day.of(utcnow()).label)


async def flush_prefix(client) -> None:
    redis, prefix = client.app[REDIS], client.app[SETTINGS].redis_key_prefix
    keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis.delete(*keys)


def assert_limit_error(body, message: str) -> None:
    assert_error(body, "RATE_LIMIT_EXCEEDED", message)
    details = body["error"]["details"]
    assert set(details) == {"reset_in_seconds"} and isinstance(details["reset_in_seconds"], int)
    assert 0 < details["reset_in_seconds"] <= 86400


async def test_user_quota_reached(client, sessions, factory):
    token, user_id = await factory.user()
    conversation_id = await factory.ready_conversation(auth(token), VIDEO, TRANSCRIPT)
    for turn in range(1, USER_LIMIT + 1):
        resp, frames = await send_message(client, conversation_id, f"q{turn}", auth(token))
        assert frames[-1] == "[DONE]"
        assert (resp.headers["X-Quota-Used"], resp.headers["X-Quota-Remaining"]) == (str(turn), str(USER_LIMIT - turn))

    resp, body = await send_message(client, conversation_id, "one more", auth(token))
    assert resp.status == 429
    assert_limit_error(body, f"Daily limit reached ({USER_LIMIT} messages/day)")
    assert (resp.headers["X-Quota-Limit"], resp.headers["X-Quota-Used"], resp.headers["X-Quota-Remaining"]) == (
        str(USER_LIMIT),
        str(USER_LIMIT),
        "0",
    )
    assert len([m for m in await messages_of(sessions, conversation_id) if m.role == "user"]) == USER_LIMIT

    me = await (await client.get("/v2/users/me", headers=auth(token))).json()
    assert set(me) == {
        "id",
        "email",
        "name",
        "profile_image_url",
        "ai_notes_enabled",
        "token_exists",
        "long_term_token",
        "created_at",
        "wiz_quota",
    }
    quota = me["wiz_quota"]
    assert (quota["limit"], quota["used"], quota["remaining"]) == (USER_LIMIT, USER_LIMIT, 0)
    assert 0 < quota["reset_in_seconds"] <= 86400
    # A second conversation shares the same daily budget.
    other = (await factory.conversation(auth(token), VIDEO))["id"]
    resp, body = await send_message(client, other, "elsewhere", auth(token))
    assert resp.status == 429


async def test_guest_quota_reached_and_independent_of_users(client, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    for _ in range(GUEST_LIMIT):
        resp, frames = await send_message(client, conversation_id, "hi", GUEST)
        assert frames[-1] == "[DONE]"
    resp, body = await send_message(client, conversation_id, "hi", GUEST)
    assert resp.status == 429
    assert_limit_error(body, f"Daily limit reached ({GUEST_LIMIT} guest messages/day)")

    # Another guest and a user are counted apart.
    other = (await factory.conversation(OTHER_GUEST, VIDEO))["id"]
    resp, frames = await send_message(client, other, "hi", OTHER_GUEST)
    assert frames[-1] == "[DONE]"
    token, _ = await factory.user()
    mine = (await factory.conversation(auth(token), VIDEO))["id"]
    resp, frames = await send_message(client, mine, "hi", auth(token))
    assert frames[-1] == "[DONE]" and resp.headers["X-Quota-Used"] == "1"
    me = await (await client.get("/v2/users/me", headers=auth(token))).json()
    assert me["wiz_quota"]["used"] == 1


async def test_concurrent_messages_admit_exactly_the_limit(client, sessions, factory, llm_standin):
    token, user_id = await factory.user()
    conversations = [(await factory.conversation(auth(token), VIDEO))["id"] for _ in range(4)]
    await factory.transcript(VIDEO, TRANSCRIPT)
    llm_standin.default = Reply(chunks=["a", "b"], delay=0.01)  # admitted turns overlap the others

    results = await asyncio.gather(
        *(send_message(client, conversations[index % 4], f"q{index}", auth(token)) for index in range(20))
    )
    statuses = sorted(resp.status for resp, _ in results)
    assert statuses == [200] * USER_LIMIT + [429] * (20 - USER_LIMIT)
    assert all(frames[-1] == "[DONE]" for resp, frames in results if resp.status == 200)
    async with sessions() as session:
        stored = await session.scalar(select(func.count(Message.id)).where(Message.role == "user"))
    assert stored == USER_LIMIT
    assert int(await client.app[REDIS].hget(counter_key(client, Viewer(user_id=user_id)), "used")) == USER_LIMIT


def guest(n: int, **headers: str) -> dict[str, str]:
    return {"X-Guest-Session-ID": f"fresh-guest-{n}", **headers}


def address_counter_key(client, address: str) -> str:
    return client.app[KEYS].quota(f"address:{address}", Day.of(utcnow()).label)


@pytest.mark.parametrize("env", [{"WIZ_GUEST_ADDRESS_DAILY_QUOTA": "5"}], indirect=True)
async def test_new_guest_ids_from_one_address_share_its_daily_cap(client, sessions, factory, actor_ctx):
    conversations = [(await factory.conversation(guest(n), VIDEO))["id"] for n in range(7)]
    await factory.transcript(VIDEO, TRANSCRIPT)
    results = await asyncio.gather(*(send_message(client, c, "hi", guest(n)) for n, c in enumerate(conversations)))
    assert sorted(resp.status for resp, _ in results) == [200] * 5 + [429] * 2
    for resp, body in results:
        if resp.status == 429:
            assert_limit_error(body, "Daily limit reached (5 guest messages/day from this address)")
            assert (resp.headers["X-Quota-Limit"], resp.headers["X-Quota-Used"], resp.headers["X-Quota-Remaining"]) == (
                "5",
                "5",
                "0",
            )
            assert int(resp.headers["X-Quota-Reset"]) == body["error"]["details"]["reset_in_seconds"]
        else:  # admitted: each guest's own quota
            assert body[-1] == "[DONE]" and resp.headers["X-Quota-Used"] == "1"
    async with sessions() as session:
        assert await session.scalar(select(func.count(Message.id)).where(Message.role == "user")) == 5
    # Without TRUSTED_PROXIES a forged X-Forwarded-For does not escape.
    resp, body = await send_message(client, conversations[6], "hi", guest(6, **{"X-Forwarded-For": "198.51.100.1"}))
    assert resp.status == 429
    # Users are not capped by their address.
    token, _ = await factory.user()
    resp, frames = await send_message(client, (await factory.conversation(auth(token), VIDEO))["id"], "hi", auth(token))
    assert frames[-1] == "[DONE]"
    # The reconciler has no table count for an address: it leaves the counter alone.
    await reconcile_quotas(actor_ctx)
    assert int(await client.app[REDIS].hget(address_counter_key(client, "127.0.0.1"), "used")) == 5


@pytest.mark.parametrize("env", [{"WIZ_GUEST_ADDRESS_DAILY_QUOTA": "2"}], indirect=True)
async def test_turns_that_do_not_count_give_the_address_reservation_back(client, llm_standin, factory):
    first = (await factory.conversation(guest(0), VIDEO))["id"]
    for _ in range(3):  # transcript pending: 202, not counted
        resp, body = await send_message(client, first, "early", guest(0))
        assert resp.status == 202, body
    await factory.transcript(VIDEO, TRANSCRIPT)
    llm_standin.queue(Reply(fail_before=True), Reply(fail_before=True), Reply(chunks=[]))
    for last_frame in ['{"error": "Processing error"}'] * 2 + ["[DONE]"]:  # failed or empty: not counted
        resp, frames = await send_message(client, first, "fails", guest(0))
        assert frames == [last_frame]
    resp, frames = await send_message(client, first, "works", guest(0))
    assert frames[-1] == "[DONE]"
    second = (await factory.conversation(guest(1), VIDEO))["id"]
    resp, frames = await send_message(client, second, "works", guest(1))
    assert frames[-1] == "[DONE]"
    resp, body = await send_message(client, (await factory.conversation(guest(2), VIDEO))["id"], "refused", guest(2))
    assert resp.status == 429
    assert_limit_error(body, "Daily limit reached (2 guest messages/day from this address)")


@pytest.mark.parametrize(
    "env", [{"WIZ_GUEST_ADDRESS_DAILY_QUOTA": "1", "TRUSTED_PROXIES": "127.0.0.1,::1"}], indirect=True
)
async def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_cap(client, factory):
    conversations = [(await factory.conversation(guest(n), VIDEO))["id"] for n in range(4)]
    await factory.transcript(VIDEO, TRANSCRIPT)

    async def status(n: int, forwarded: str) -> int:
        resp, _ = await send_message(client, conversations[n], "hi", guest(n, **{"X-Forwarded-For": forwarded}))
        return resp.status

    assert await status(0, "203.0.113.1") == 200
    assert await status(1, "198.51.100.9, 203.0.113.1") == 429  # the left hop is the client's to invent
    assert await status(2, "203.0.113.2") == 200
    assert await status(3, "2001:db8::1") == 200


async def test_quota_survives_a_redis_flush(client, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    resp, frames = await send_message(client, conversation_id, "first", GUEST)
    assert frames[-1] == "[DONE]"
    await flush_prefix(client)
    # Rebuilt from the table: one used, one left.
    resp, frames = await send_message(client, conversation_id, "second", GUEST)
    assert frames[-1] == "[DONE]" and resp.headers["X-Quota-Used"] == "2"
    await flush_prefix(client)
    resp, body = await send_message(client, conversation_id, "third", GUEST)
    assert resp.status == 429
    assert_limit_error(body, f"Daily limit reached ({GUEST_LIMIT} guest messages/day)")
    assert (
        int(
            await client.app[REDIS].hget(
                counter_key(client, Viewer(guest_session_id=GUEST["X-Guest-Session-ID"])), "used"
            )
        )
        == GUEST_LIMIT
    )


async def test_counter_expires_at_the_next_utc_midnight(client, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    resp, _ = await send_message(client, conversation_id, "hi", GUEST)
    ttl = await client.app[REDIS].ttl(counter_key(client, Viewer(guest_session_id=GUEST["X-Guest-Session-ID"])))
    reset = int(resp.headers["X-Quota-Reset"])
    assert 0 < ttl <= 86400 and abs(ttl - reset) <= 2


async def test_yesterdays_messages_do_not_count(client, sessions, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    yesterday = Day.of(utcnow()).start - timedelta(seconds=1)
    async with sessions() as session:
        for _ in range(GUEST_LIMIT):
            session.add(Message(conversation_id=conversation_id, role="user", content="old", created_at=yesterday))
        await session.commit()
    resp, frames = await send_message(client, conversation_id, "today", GUEST)
    assert frames[-1] == "[DONE]" and resp.headers["X-Quota-Used"] == "1"


async def test_failed_turns_give_their_reservation_back(client, sessions, llm_standin, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    llm_standin.queue(Reply(fail_before=True), Reply(chunks=[]), Reply(fail_before=True), Reply(fail_before=True))
    for last_frame in ['{"error": "Processing error"}', "[DONE]"] + ['{"error": "Processing error"}'] * 2:
        resp, frames = await send_message(client, conversation_id, "fails", GUEST)
        assert frames == [last_frame]  # failed, or empty (nothing saved): neither counts
    for turn in range(1, GUEST_LIMIT + 1):
        resp, frames = await send_message(client, conversation_id, "works", GUEST)
        assert frames[-1] == "[DONE]" and resp.headers["X-Quota-Used"] == str(turn)
    resp, _ = await send_message(client, conversation_id, "refused", GUEST)
    assert resp.status == 429
    # Rebuilt from the table, failed turns still do not count.
    await flush_prefix(client)
    quota = DailyQuota(client.app[REDIS], client.app[KEYS], client.app[SETTINGS])
    async with sessions() as session:
        usage = await quota.usage(session, Viewer(guest_session_id=GUEST["X-Guest-Session-ID"]))
    assert (usage.used, usage.remaining) == (GUEST_LIMIT, 0)


async def test_a_turn_that_sent_content_counts(client, llm_standin, factory):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    llm_standin.queue(Reply(chunks=["partial", " never"], fail_after=1))
    resp, frames = await send_message(client, conversation_id, "go", GUEST)
    assert frames == ['{"content": "partial"}', '{"error": "Processing error"}']
    resp, frames = await send_message(client, conversation_id, "go", GUEST)
    assert resp.headers["X-Quota-Used"] == "2"


async def test_reconcile_quotas(client, factory, actor_ctx):
    conversation_id = await factory.ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    await send_message(client, conversation_id, "one", GUEST)
    redis, keys = client.app[REDIS], client.app[KEYS]
    key = counter_key(client, Viewer(guest_session_id=GUEST["X-Guest-Session-ID"]))
    ctx = actor_ctx
    now = int((utcnow() - datetime(1970, 1, 1)).total_seconds())

    # A reservation leaked long ago (a crashed process): lowered back to the table.
    await redis.hset(key, mapping={"used": 2, "touched": now - RECONCILE_IDLE_SECONDS - 5})
    assert await reconcile_quotas(ctx) == 1
    assert int(await redis.hget(key, "used")) == 1
    # Recent activity may be an admission still in flight: left alone.
    await redis.hset(key, mapping={"used": 2, "touched": now})
    assert await reconcile_quotas(ctx) == 0
    assert int(await redis.hget(key, "used")) == 2
    # Below the table is always wrong: raised at once.
    await redis.hset(key, mapping={"used": 0, "touched": now})
    assert await reconcile_quotas(ctx) == 1
    assert int(await redis.hget(key, "used")) == 1
    # Foreign keys under the prefix are skipped; yesterday's counters are not touched.
    await redis.hset(keys.quota("robot:1", Day.of(utcnow()).label), "used", 3)
    yesterday_key = keys.quota("guest:x", Day.of(utcnow() - timedelta(days=1)).label)
    await redis.hset(yesterday_key, "used", 9)
    assert await reconcile_quotas(ctx) == 0
    assert int(await redis.hget(yesterday_key, "used")) == 9


def test_day_window():
    day = Day.of(datetime(2025, 1, 31, 23, 59, 30, 500))
    assert day.label == "2025-01-31"
    assert (day.start, day.end) == (datetime(2025, 1, 31), datetime(2025, 2, 1))
    assert day.reset_in_seconds == 29


async def test_redis_down_refuses_chat_clearly(make_client, factory):
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    client = await make_client(redis=dead)
    sessions = client.app[SESSIONS]
    conversation_id = await factory.on(client).ready_conversation(GUEST, VIDEO, TRANSCRIPT)
    resp, body = await send_message(client, conversation_id, "hi", GUEST)
    assert resp.status == 503
    assert_error(body, "SERVICE_UNAVAILABLE", "Wiz chat is temporarily unavailable")
    assert await messages_of(sessions, conversation_id) == []
    # The profile still answers, counting from the table.
    creds = {"email": "down@example.com", "password": "password123"}
    await client.post("/v2/auth/register", json={**creds, "name": "Down"})
    token = (await (await client.post("/v2/auth/login", json=creds)).json())["token"]
    me = await client.get("/v2/users/me", headers=auth(token))
    assert me.status == 200 and (await me.json())["wiz_quota"]["used"] == 0
    await dead.aclose()
