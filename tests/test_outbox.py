"""The outbox rules as a service (vidwiz/notes/outbox.py), without HTTP or a delivery: which rows
a relay claims and for how long, how each outcome is recorded, the retry backoff, and the
sweeper's count and pruning. The relay against SQS is in test_relay.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from vidwiz.db import utcnow
from vidwiz.models import OutboxMessage
from vidwiz.notes.outbox import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    MAX_ERROR_CHARS,
    SENT_RETENTION,
    ClaimedMessage,
    Rejected,
    backoff_seconds,
    claim_due,
    count_due,
    next_attempt_at,
    prune_sent,
    record_outcome,
)

LEASE = timedelta(seconds=30)


async def rows(db_sessions) -> dict[int, OutboxMessage]:
    async with db_sessions() as session:
        return {row.id: row for row in await session.scalars(select(OutboxMessage))}


async def claim(units, limit: int = 10, now: datetime | None = None) -> list[ClaimedMessage]:
    async with units() as work:
        return await claim_due(work.session, lease=LEASE, limit=limit, now=now)


async def record(units, claimed, outcome) -> None:
    async with units() as work:
        await record_outcome(work.session, claimed, outcome)


# -- backoff ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attempts, base", [(0, BACKOFF_BASE), (1, 2.0), (2, 4.0), (3, 8.0), (8, 256.0), (9, BACKOFF_CAP), (50, BACKOFF_CAP)]
)
def test_backoff_doubles_per_attempt_up_to_the_cap_with_jitter(attempts, base):
    delays = [backoff_seconds(attempts) for _ in range(200)]
    assert all(0.9 * base <= delay <= 1.1 * base for delay in delays)
    assert len(set(delays)) > 1  # jittered: retries of many rows spread out


# -- claiming ---------------------------------------------------------------------------------------


async def test_a_claim_leases_the_due_pending_rows_oldest_first(units, db_sessions, db_factory):
    later = await db_factory.outbox_row(due_in=-5)
    earliest = await db_factory.outbox_row(due_in=-60)
    await db_factory.outbox_row(due_in=60)  # not due yet
    await db_factory.outbox_row(status="sent", sent_at=utcnow())
    await db_factory.outbox_row(status="failed")
    await db_factory.outbox_row(kind="something_else")
    before = utcnow()
    claimed = await claim(units)
    assert sorted(m.id for m in claimed) == sorted([earliest, later])
    assert {m.id: (m.body, m.attempts) for m in claimed} == {earliest: ({"id": 1}, 0), later: ({"id": 1}, 0)}
    leased = await rows(db_sessions)
    assert all(leased[m.id].next_attempt_at >= before + LEASE for m in claimed)
    assert await claim(units) == []  # leased: a concurrent relay gets nothing


async def test_a_claim_takes_at_most_its_limit_in_due_order(units, db_factory):
    ids = [await db_factory.outbox_row(due_in=-60 + n) for n in range(5)]
    assert [m.id for m in await claim(units, limit=2)] == ids[:2]
    assert [m.id for m in await claim(units, limit=2)] == ids[2:4]


async def test_an_expired_lease_is_due_again(units, db_factory):
    row_id = await db_factory.outbox_row()
    [claimed] = await claim(units)
    assert await claim(units, now=utcnow() + LEASE - timedelta(seconds=1)) == []
    [again] = await claim(units, now=utcnow() + LEASE + timedelta(seconds=1))  # the relay died mid-delivery
    assert again.id == claimed.id == row_id


# -- outcomes ---------------------------------------------------------------------------------------


async def test_each_outcome_is_recorded(units, db_sessions, db_factory):
    accepted, transient, rejected, forgotten = [await db_factory.outbox_row(attempts=2) for _ in range(4)]
    claimed = await claim(units)
    before = utcnow()
    await record(units, claimed, {accepted: None, transient: "Throttled: slow down", rejected: Rejected("bad id")})
    after = utcnow()
    stored = await rows(db_sessions)

    sent = stored[accepted]
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 3, None)
    assert before <= sent.sent_at <= after

    retried = stored[transient]
    assert (retried.status, retried.attempts, retried.last_error) == ("pending", 3, "Throttled: slow down")
    # The third attempt failed: 8 s ± 10 % from now.
    assert before + timedelta(seconds=7.2) <= retried.next_attempt_at <= after + timedelta(seconds=8.8)

    failed = stored[rejected]
    assert (failed.status, failed.attempts, failed.last_error, failed.sent_at) == ("failed", 3, "bad id", None)

    # A row its delivery said nothing about counts as a failed attempt, never as sent.
    missing = stored[forgotten]
    assert (missing.status, missing.attempts, missing.last_error) == ("pending", 3, "no delivery outcome")


async def test_the_backoff_grows_with_each_failed_attempt(units, db_sessions, db_factory):
    row_id = await db_factory.outbox_row()
    for attempts, base in ((1, 2.0), (2, 4.0), (3, 8.0)):
        [claimed] = await claim(units, now=utcnow() + timedelta(minutes=attempts))  # due again by then
        before = utcnow()
        await record(units, [claimed], {row_id: "SQS down"})
        row = (await rows(db_sessions))[row_id]
        assert row.attempts == attempts and row.status == "pending"
        delay = (row.next_attempt_at - before).total_seconds()
        assert 0.9 * base - 1 <= delay <= 1.1 * base + 1, (attempts, delay)


async def test_long_errors_are_cut_and_finished_rows_are_left_alone(units, db_sessions, db_factory):
    first, second = await db_factory.outbox_row(), await db_factory.outbox_row()
    claimed = await claim(units)
    async with db_sessions() as session:  # finished meanwhile (e.g. by another relay whose lease ran out)
        (await session.get(OutboxMessage, second)).status = "sent"
        await session.commit()
    await record(units, claimed, {first: "x" * (MAX_ERROR_CHARS + 50), second: "late failure"})
    stored = await rows(db_sessions)
    assert stored[first].last_error == "x" * MAX_ERROR_CHARS
    assert (stored[second].status, stored[second].attempts, stored[second].last_error) == ("sent", 0, None)


# -- scheduling and sweeping ------------------------------------------------------------------------


async def test_the_next_attempt_is_the_earliest_pending_one(units, db_sessions, db_factory):
    async with db_sessions() as session:
        assert await next_attempt_at(session) is None
    await db_factory.outbox_row(due_in=120)
    soonest = await db_factory.outbox_row(due_in=30)
    await db_factory.outbox_row(due_in=5, status="sent", sent_at=utcnow())
    async with db_sessions() as session:
        assert await next_attempt_at(session) == (await rows(db_sessions))[soonest].next_attempt_at


async def test_the_sweeper_counts_due_rows_and_prunes_old_sent_ones(units, db_sessions, db_factory):
    now = utcnow()
    await db_factory.outbox_row(due_in=-5)
    await db_factory.outbox_row(due_in=60)
    old = await db_factory.outbox_row(status="sent", sent_at=now - SENT_RETENTION - timedelta(minutes=1))
    recent = await db_factory.outbox_row(status="sent", sent_at=now - SENT_RETENTION + timedelta(minutes=1))
    failed = await db_factory.outbox_row(status="failed", due_in=-3600)
    async with units() as work:
        assert await count_due(work.session, now) == 1
        assert await prune_sent(work.session, now) == 1
    remaining = await rows(db_sessions)
    assert old not in remaining and {recent, failed} <= set(remaining)
