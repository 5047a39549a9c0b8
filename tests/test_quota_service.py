"""Wiz quota admission as a service (vidwiz/conversations/quota.py), without HTTP: the limit per
viewer and per guest address, reservations given back, seeding from the messages table, and
Redis down. The chat endpoints' use of it is in test_quota.py."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from tests.conftest import closed_port
from vidwiz.auth.identity import Viewer
from vidwiz.conversations.quota import DailyQuota, Day, limit_for
from vidwiz.db import utcnow
from vidwiz.errors import RateLimited, ServiceUnavailable
from vidwiz.events import RedisKeys
from vidwiz.models import Conversation, Message

USER = Viewer(user_id=7)
GUEST = Viewer(guest_session_id="guest-a")
OTHER_GUEST = Viewer(guest_session_id="guest-b")
ADDRESS = "203.0.113.5"


@pytest.fixture
def limits(settings):
    return dataclasses.replace(
        settings, wiz_user_daily_quota=3, wiz_guest_daily_quota=2, wiz_guest_address_daily_quota=3
    )


@pytest.fixture
def quota(redis, limits) -> DailyQuota:
    return DailyQuota(redis, RedisKeys(limits.redis_key_prefix), limits)


async def reserve(quota: DailyQuota, db_sessions, viewer: Viewer, address: str = ADDRESS):
    async with db_sessions() as session:
        return await quota.reserve(session, viewer, address)


async def used(quota: DailyQuota, viewer: Viewer) -> int | None:
    raw = await quota.redis.hget(quota.keys.quota(viewer.key, Day.of(utcnow()).label), "used")
    return None if raw is None else int(raw)


async def add_messages(db_sessions, viewer: Viewer, *metadata, created_at=None) -> None:
    """User messages of the viewer's conversation; each `metadata` one message (None: a counted one)."""
    async with db_sessions() as session:
        conversation = Conversation(
            video_id="dQw4w9WgXcQ", user_id=viewer.user_id, guest_session_id=viewer.guest_session_id
        )
        session.add(conversation)
        await session.flush()
        for meta in metadata:
            message = Message(conversation_id=conversation.id, role="user", content="q", metadata_=meta)
            if created_at is not None:
                message.created_at = created_at
            session.add(message)
        await session.commit()


def test_each_kind_of_viewer_has_its_limit(limits):
    assert (limit_for(limits, USER), limit_for(limits, GUEST)) == (3, 2)


async def test_admits_up_to_the_limit_then_refuses_without_counting(quota, db_sessions):
    for turn in (1, 2, 3):
        reservation = await reserve(quota, db_sessions, USER)
        assert (reservation.usage.limit, reservation.usage.used, reservation.usage.remaining) == (3, turn, 3 - turn)
    with pytest.raises(RateLimited) as refused:
        await reserve(quota, db_sessions, USER)
    assert refused.value.message == "Daily limit reached (3 messages/day)"
    assert set(refused.value.details) == {"reset_in_seconds"}
    assert 0 < refused.value.details["reset_in_seconds"] <= 86400
    assert refused.value.headers["X-Quota-Used"] == "3" and refused.value.headers["X-Quota-Remaining"] == "0"
    assert await used(quota, USER) == 3  # a refusal leaves the counter as it was
    # Another viewer has a budget of its own.
    assert (await reserve(quota, db_sessions, Viewer(user_id=8))).usage.used == 1


async def test_concurrent_reservations_never_exceed_the_limit(quota, db_sessions):
    outcomes = await asyncio.gather(*(reserve(quota, db_sessions, USER) for _ in range(10)), return_exceptions=True)
    assert sum(not isinstance(outcome, Exception) for outcome in outcomes) == 3
    assert all(isinstance(outcome, RateLimited) for outcome in outcomes if isinstance(outcome, Exception))
    assert await used(quota, USER) == 3


async def test_a_released_reservation_is_given_back(quota, db_sessions):
    first = await reserve(quota, db_sessions, USER)
    await reserve(quota, db_sessions, USER)
    assert (await quota.release(first)).used == 1
    assert (await reserve(quota, db_sessions, USER)).usage.used == 2
    await reserve(quota, db_sessions, USER)
    with pytest.raises(RateLimited):
        await reserve(quota, db_sessions, USER)


async def test_a_release_after_the_counter_is_gone_changes_nothing(quota, db_sessions):
    reservation = await reserve(quota, db_sessions, USER)
    await quota.redis.delete(*reservation.keys)  # a new day, or Redis lost its data
    assert (await quota.release(reservation)).used == 0
    assert await used(quota, USER) is None  # not recreated (nor negative)


async def test_a_missing_counter_is_seeded_from_todays_counted_messages(quota, db_sessions):
    yesterday = Day.of(utcnow()).start - timedelta(seconds=1)
    await add_messages(db_sessions, USER, None, {"status": "failed", "reason": "provider_error"})
    await add_messages(db_sessions, USER, None, None, created_at=yesterday)
    await add_messages(db_sessions, Viewer(user_id=8), None, None)
    # One counted message today (failed turns and yesterday's do not count, nor other users').
    assert (await reserve(quota, db_sessions, USER)).usage.used == 2
    assert await used(quota, USER) == 2
    await reserve(quota, db_sessions, USER)
    with pytest.raises(RateLimited):
        await reserve(quota, db_sessions, USER)


async def test_usage_reads_the_counter_or_else_the_table(quota, db_sessions):
    await add_messages(db_sessions, GUEST, None)
    async with db_sessions() as session:
        assert (await quota.usage(session, GUEST)).used == 1  # no counter yet: the table
    await reserve(quota, db_sessions, GUEST)
    async with db_sessions() as session:
        usage = await quota.usage(session, GUEST)
    assert (usage.limit, usage.used, usage.remaining) == (2, 2, 0)


async def test_guests_also_share_a_cap_per_address(quota, db_sessions):
    guests = [Viewer(guest_session_id=f"fresh-{n}") for n in range(4)]
    reservations = [await reserve(quota, db_sessions, guest) for guest in guests[:3]]
    with pytest.raises(RateLimited) as refused:
        await reserve(quota, db_sessions, guests[3])
    assert refused.value.message == "Daily limit reached (3 guest messages/day from this address)"
    assert (refused.value.headers["X-Quota-Limit"], refused.value.headers["X-Quota-Used"]) == ("3", "3")
    assert await used(quota, guests[3]) == 0  # seeded, but its own budget untouched
    # Another address, and users, are not capped by it.
    assert (await reserve(quota, db_sessions, guests[3], "198.51.100.7")).usage.used == 1
    assert (await reserve(quota, db_sessions, USER)).usage.used == 1
    # A release gives the address its reservation back too.
    await quota.release(reservations[0])
    assert (await reserve(quota, db_sessions, OTHER_GUEST)).usage.used == 1


async def test_the_guest_limit_is_checked_before_the_address_cap(quota, db_sessions):
    for _ in range(2):
        await reserve(quota, db_sessions, GUEST)
    with pytest.raises(RateLimited) as refused:
        await reserve(quota, db_sessions, GUEST)
    assert refused.value.message == "Daily limit reached (2 guest messages/day)"
    # The refused admission did not use the address's budget: one more guest still fits.
    assert (await reserve(quota, db_sessions, OTHER_GUEST)).usage.used == 1


async def test_redis_down_refuses_admission_and_usage_counts_the_table(limits, db_sessions):
    dead = aioredis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
    quota = DailyQuota(dead, RedisKeys(limits.redis_key_prefix), limits)
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            await reserve(quota, db_sessions, USER)
        assert refused.value.message == "Wiz chat is temporarily unavailable"
        await add_messages(db_sessions, USER, None)
        async with db_sessions() as session:
            assert (await quota.usage(session, USER)).used == 1
    finally:
        await dead.aclose()
