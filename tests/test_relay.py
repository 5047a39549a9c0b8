"""The outbox relay against a real SQS API (moto server): exact bodies, nothing lost when SQS
is down, nothing marked sent that SQS did not accept, D6 notes relayed once the transcript
arrives, concurrent relays sending each row once."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta

import pytest

from actors.readiness import video_changed
from actors.relay import relay_outbox
from tests.conftest import closed_port, make_outbox_due, outbox_rows, with_resources
from tests.moto import AWS_ENV, receive_all
from vidwiz.db import utcnow
from vidwiz.notes.outbox import BATCH_SIZE, claim_due, open_sqs_delivery, record_outcome

A = "aaaaaaaaaaa"


@pytest.fixture
def env(env, moto_endpoint, sqs_queue_url):
    return {**env, **AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint, "SQS_AI_NOTE_QUEUE_URL": sqs_queue_url}


# -- delivery ---------------------------------------------------------------------------------------


async def test_note_created_with_transcript_is_delivered_with_the_exact_body(
    client, factory, sessions, actor_ctx, sqs, sqs_queue_url
):
    token, user_id = await factory.user()
    await factory.enable_ai_notes(token)
    await factory.note(token, A)  # creates the video; no transcript yet
    await factory.set_video(A, transcript_available=True)
    note = await factory.note(token, A, timestamp="01:02", text="   ")  # blank text -> AI note requested

    result = await relay_outbox(actor_ctx)
    assert result["sent"] >= 1 and result["failed"] == 0
    bodies = await receive_all(sqs, sqs_queue_url)
    expected = f'{{"id": {note["id"]}, "video_id": "{A}", "timestamp": "01:02", "user_id": {user_id}}}'
    assert expected in bodies
    rows = {row.note_id: row for row in await outbox_rows(sessions)}
    assert rows[note["id"]].status == "sent" and rows[note["id"]].sent_at is not None
    assert rows[note["id"]].attempts == 1 and rows[note["id"]].last_error is None


async def test_many_rows_are_batched_and_each_sent_once(sessions, actor_ctx, sqs, sqs_queue_url, factory):
    ids = await factory.outbox_rows(2 * BATCH_SIZE + 3, A)
    result = await relay_outbox(actor_ctx)
    assert result == {"sent": len(ids), "failed": 0, "rejected": 0, "delivery": "sqs"}
    bodies = await receive_all(sqs, sqs_queue_url)
    assert sorted(json.loads(body)["id"] for body in bodies) == [1000 + i for i in range(len(ids))]
    assert bodies[0] == json.dumps(json.loads(bodies[0]))  # default separators, key order kept
    assert list(json.loads(bodies[0])) == ["id", "video_id", "timestamp", "user_id"]
    assert {row.status for row in await outbox_rows(sessions)} == {"sent"}
    assert await relay_outbox(actor_ctx) == {"sent": 0, "failed": 0, "rejected": 0, "delivery": "sqs"}


async def test_sqs_down_keeps_rows_pending_with_backoff_until_it_comes_back(
    sessions, settings, actor_ctx, sqs, sqs_queue_url, factory
):
    await factory.outbox_rows(3, A)
    dead = replace(settings, aws_endpoint_url=f"http://127.0.0.1:{closed_port()}")
    async with open_sqs_delivery(dead, job_timeout=3.0) as unreachable:
        result = await relay_outbox(with_resources(actor_ctx, delivery=unreachable))
    assert result["sent"] == 0 and result["failed"] == 3
    rows = await outbox_rows(sessions)
    assert {row.status for row in rows} == {"pending"}
    assert all(row.attempts == 1 and row.last_error and row.next_attempt_at > utcnow() for row in rows)
    # Not due yet: a relay now does nothing, and still marks nothing.
    assert (await relay_outbox(actor_ctx))["sent"] == 0

    await make_outbox_due(sessions)
    async with open_sqs_delivery(dead, job_timeout=3.0) as unreachable:
        await relay_outbox(with_resources(actor_ctx, delivery=unreachable))
    rows = await outbox_rows(sessions)
    assert all(row.attempts == 2 and row.status == "pending" for row in rows)
    gap = [row.next_attempt_at - utcnow() for row in rows]
    assert all(timedelta(seconds=2) < g <= timedelta(seconds=5) for g in gap)  # 4 s ± jitter: backoff doubled

    await make_outbox_due(sessions)  # SQS is back (the real endpoint)
    assert (await relay_outbox(actor_ctx))["sent"] == 3
    assert len(await receive_all(sqs, sqs_queue_url)) == 3
    rows = await outbox_rows(sessions)
    assert all(row.status == "sent" and row.attempts == 3 and row.last_error is None for row in rows)


async def test_a_refusing_queue_marks_nothing_sent(sessions, settings, actor_ctx, sqs, factory):
    await factory.outbox_rows(2, A)
    missing = replace(settings, sqs_ai_note_queue_url=settings.sqs_ai_note_queue_url + "-missing")
    async with open_sqs_delivery(missing, job_timeout=3.0) as refusing:
        result = await relay_outbox(with_resources(actor_ctx, delivery=refusing))
    assert result["failed"] == 2
    rows = await outbox_rows(sessions)
    assert all(row.status == "pending" and "NonExistentQueue" in row.last_error for row in rows)


async def test_partial_acceptance_marks_only_the_accepted_rows(sessions, factory, units):
    first, second = await factory.outbox_rows(2, A)
    async with units() as work:
        claimed = await claim_due(work.session, lease=timedelta(seconds=30), limit=10)
    assert [m.id for m in claimed] == [first, second]
    async with units() as work:  # leased: a concurrent relay gets nothing
        assert await claim_due(work.session, lease=timedelta(seconds=30), limit=10) == []
    async with units() as work:
        await record_outcome(work.session, claimed, {first: None, second: "Throttled: slow down"})
    rows = {row.id: row for row in await outbox_rows(sessions)}
    assert rows[first].status == "sent"
    assert rows[second].status == "pending" and rows[second].last_error == "Throttled: slow down"


async def test_concurrent_relays_send_each_row_once(sessions, actor_ctx, sqs, sqs_queue_url, factory):
    count = 5 * BATCH_SIZE
    await factory.outbox_rows(count, A)
    results = await asyncio.gather(*(relay_outbox(actor_ctx) for _ in range(4)))
    assert sum(r["sent"] for r in results) == count
    bodies = await receive_all(sqs, sqs_queue_url)
    assert len(bodies) == count and len(set(bodies)) == count


async def test_without_sqs_rows_stay_pending(sessions, actor_ctx, factory):
    await factory.outbox_rows(1, A)
    assert await relay_outbox(with_resources(actor_ctx, delivery=None)) == {
        "sent": 0,
        "failed": 0,
        "rejected": 0,
        "delivery": None,
    }
    assert [(row.status, row.attempts) for row in await outbox_rows(sessions)] == [("pending", 0)]


# -- D6: AI notes that waited for the transcript ---------------------------------------------------


async def test_notes_created_before_the_transcript_are_relayed_after_video_changed(
    client, factory, sessions, actor_ctx, sqs, sqs_queue_url
):
    wants, wants_id = await factory.user()
    does_not, _ = await factory.user()
    await factory.enable_ai_notes(wants)
    first = await factory.note(wants, A, timestamp="0:10")
    second = await factory.note(wants, A, timestamp="0:20")
    await factory.note(wants, A, timestamp="0:30", text="written by hand")
    await factory.note(does_not, A, timestamp="0:40")
    assert await outbox_rows(sessions) == []  # no transcript yet: nothing requested

    result = await video_changed(actor_ctx, A)  # e.g. metadata arrived: still no transcript
    assert result["ai_notes_queued"] == 0
    await factory.set_video(A, transcript_available=True)
    assert (await video_changed(actor_ctx, A))["ai_notes_queued"] == 2
    assert (await video_changed(actor_ctx, A))["ai_notes_queued"] == 0  # idempotent: no second row
    rows = await outbox_rows(sessions)
    assert [row.note_id for row in rows] == [first["id"], second["id"]]

    assert (await relay_outbox(actor_ctx))["sent"] == 2
    assert sorted(await receive_all(sqs, sqs_queue_url)) == sorted(
        json.dumps({"id": note["id"], "video_id": A, "timestamp": note["timestamp"], "user_id": wants_id})
        for note in (first, second)
    )
    assert (await video_changed(actor_ctx, A))["ai_notes_queued"] == 0  # sent rows count too


async def test_concurrent_video_changed_jobs_write_one_row_per_note(client, factory, sessions, actor_ctx):
    token, _ = await factory.user()
    await factory.enable_ai_notes(token)
    for second in range(5):
        await factory.note(token, A, timestamp=f"0:{second:02d}")
    await factory.set_video(A, transcript_available=True)
    results = await asyncio.gather(*(video_changed(actor_ctx, A) for _ in range(4)))
    assert sum(r["ai_notes_queued"] for r in results) == 5
    rows = await outbox_rows(sessions)
    assert len(rows) == len({row.note_id for row in rows}) == 5
