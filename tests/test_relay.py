"""The outbox relay against a real SQS API (moto server): exact bodies, nothing lost when SQS
is down, nothing marked sent that SQS did not accept, D6 notes relayed once the transcript
arrives, concurrent relays sending each row once."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from actors.readiness import video_changed
from actors.relay import BATCH_SIZE, claim_due, open_delivery, record_outcome, relay_outbox
from tests.conftest import auth
from tests.moto import AWS_ENV, moto_endpoint, sqs  # noqa: F401 - moto server and SQS client fixtures
from tests.test_readiness import actor_ctx, add_note  # noqa: F401 - shared fixture
from vidwiz.db import utcnow
from vidwiz.models import OutboxMessage, Video

A = "aaaaaaaaaaa"


@pytest.fixture
async def queue_url(sqs, test_id):
    return (await sqs.create_queue(QueueName=f"ai-notes-{test_id}"))["QueueUrl"]


@pytest.fixture
def env(env, moto_endpoint, queue_url):  # noqa: F811
    return {**env, **AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint, "SQS_AI_NOTE_QUEUE_URL": queue_url}


@pytest.fixture
async def relay_ctx(actor_ctx, settings):
    async with open_delivery(settings, job_timeout=actor_ctx["job_timeout"]) as delivery:
        actor_ctx["delivery"] = delivery
        yield actor_ctx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def receive_all(sqs, queue_url) -> list[str]:
    bodies: list[str] = []
    while True:
        response = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = response.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


async def enable_ai_notes(client, token) -> None:
    resp = await client.patch("/v2/users/me", json={"ai_notes_enabled": True}, headers=auth(token))
    assert resp.status == 200, await resp.text()


async def add_outbox_rows(sessions, count: int, video_id: str = A) -> list[int]:
    async with sessions() as session:
        if await session.scalar(select(Video).where(Video.video_id == video_id)) is None:
            session.add(Video(video_id=video_id, transcript_available=True))
            await session.flush()
        rows = [
            OutboxMessage(
                kind="ai_note",
                note_id=1000 + i,
                body={"id": 1000 + i, "video_id": video_id, "timestamp": f"0:{i:02d}", "user_id": 7},
            )
            for i in range(count)
        ]
        session.add_all(rows)
        await session.commit()
        return [row.id for row in rows]


async def outbox(sessions) -> list[OutboxMessage]:
    async with sessions() as session:
        return list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def make_everything_due(sessions) -> None:
    async with sessions() as session:
        await session.execute(update(OutboxMessage).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        await session.commit()


# -- delivery ---------------------------------------------------------------------------------------


async def test_note_created_with_transcript_is_delivered_with_the_exact_body(
    client, make_user, sessions, relay_ctx, sqs, queue_url
):
    token, user_id = await make_user()
    await enable_ai_notes(client, token)
    await add_note(client, token, A)  # creates the video; no transcript yet
    async with sessions() as session:
        await session.execute(update(Video).values(transcript_available=True))
        await session.commit()
    note = await add_note(client, token, A, timestamp="01:02", text="   ")  # blank text -> AI note requested

    result = await relay_outbox(relay_ctx)
    assert result["sent"] >= 1 and result["failed"] == 0
    bodies = await receive_all(sqs, queue_url)
    expected = f'{{"id": {note["id"]}, "video_id": "{A}", "timestamp": "01:02", "user_id": {user_id}}}'
    assert expected in bodies
    rows = {row.note_id: row for row in await outbox(sessions)}
    assert rows[note["id"]].status == "sent" and rows[note["id"]].sent_at is not None
    assert rows[note["id"]].attempts == 1 and rows[note["id"]].last_error is None


async def test_many_rows_are_batched_and_each_sent_once(sessions, relay_ctx, sqs, queue_url):
    ids = await add_outbox_rows(sessions, 2 * BATCH_SIZE + 3)
    result = await relay_outbox(relay_ctx)
    assert result == {"sent": len(ids), "failed": 0, "rejected": 0, "delivery": "sqs"}
    bodies = await receive_all(sqs, queue_url)
    assert sorted(json.loads(body)["id"] for body in bodies) == [1000 + i for i in range(len(ids))]
    assert bodies[0] == json.dumps(json.loads(bodies[0]))  # default separators, key order kept
    assert list(json.loads(bodies[0])) == ["id", "video_id", "timestamp", "user_id"]
    assert {row.status for row in await outbox(sessions)} == {"sent"}
    assert await relay_outbox(relay_ctx) == {"sent": 0, "failed": 0, "rejected": 0, "delivery": "sqs"}


async def test_sqs_down_keeps_rows_pending_with_backoff_until_it_comes_back(
    sessions, settings, relay_ctx, sqs, queue_url
):
    await add_outbox_rows(sessions, 3)
    dead = replace(settings, aws_endpoint_url=f"http://127.0.0.1:{free_port()}")
    async with open_delivery(dead, job_timeout=3.0) as unreachable:
        down_ctx = {**relay_ctx, "delivery": unreachable}
        result = await relay_outbox(down_ctx)
    assert result["sent"] == 0 and result["failed"] == 3
    rows = await outbox(sessions)
    assert {row.status for row in rows} == {"pending"}
    assert all(row.attempts == 1 and row.last_error and row.next_attempt_at > utcnow() for row in rows)
    # Not due yet: a relay now does nothing, and still marks nothing.
    assert (await relay_outbox(relay_ctx))["sent"] == 0

    await make_everything_due(sessions)
    async with open_delivery(dead, job_timeout=3.0) as unreachable:
        await relay_outbox({**relay_ctx, "delivery": unreachable})
    rows = await outbox(sessions)
    assert all(row.attempts == 2 and row.status == "pending" for row in rows)
    gap = [row.next_attempt_at - utcnow() for row in rows]
    assert all(timedelta(seconds=2) < g <= timedelta(seconds=5) for g in gap)  # 4 s ± jitter: backoff doubled

    await make_everything_due(sessions)  # SQS is back (the real endpoint)
    assert (await relay_outbox(relay_ctx))["sent"] == 3
    assert len(await receive_all(sqs, queue_url)) == 3
    rows = await outbox(sessions)
    assert all(row.status == "sent" and row.attempts == 3 and row.last_error is None for row in rows)


async def test_a_refusing_queue_marks_nothing_sent(sessions, settings, relay_ctx, sqs):
    await add_outbox_rows(sessions, 2)
    missing = replace(settings, sqs_ai_note_queue_url=settings.sqs_ai_note_queue_url + "-missing")
    async with open_delivery(missing, job_timeout=3.0) as refusing:
        result = await relay_outbox({**relay_ctx, "delivery": refusing})
    assert result["failed"] == 2
    rows = await outbox(sessions)
    assert all(row.status == "pending" and "NonExistentQueue" in row.last_error for row in rows)


async def test_partial_acceptance_marks_only_the_accepted_rows(sessions):
    first, second = await add_outbox_rows(sessions, 2)
    async with sessions() as session:
        claimed = await claim_due(session, lease=timedelta(seconds=30), limit=10)
    assert [m.id for m in claimed] == [first, second]
    async with sessions() as session:  # leased: a concurrent relay gets nothing
        assert await claim_due(session, lease=timedelta(seconds=30), limit=10) == []
    async with sessions() as session:
        await record_outcome(session, claimed, {first: None, second: "Throttled: slow down"})
    rows = {row.id: row for row in await outbox(sessions)}
    assert rows[first].status == "sent"
    assert rows[second].status == "pending" and rows[second].last_error == "Throttled: slow down"


async def test_concurrent_relays_send_each_row_once(sessions, relay_ctx, sqs, queue_url):
    count = 5 * BATCH_SIZE
    await add_outbox_rows(sessions, count)
    results = await asyncio.gather(*(relay_outbox(relay_ctx) for _ in range(4)))
    assert sum(r["sent"] for r in results) == count
    bodies = await receive_all(sqs, queue_url)
    assert len(bodies) == count and len(set(bodies)) == count


async def test_without_sqs_rows_stay_pending(sessions, actor_ctx):
    await add_outbox_rows(sessions, 1)
    assert await relay_outbox(actor_ctx) == {"sent": 0, "failed": 0, "rejected": 0, "delivery": None}
    assert [(row.status, row.attempts) for row in await outbox(sessions)] == [("pending", 0)]


# -- D6: AI notes that waited for the transcript ---------------------------------------------------


async def test_notes_created_before_the_transcript_are_relayed_after_video_changed(
    client, make_user, sessions, relay_ctx, sqs, queue_url
):
    wants, wants_id = await make_user()
    does_not, _ = await make_user()
    await enable_ai_notes(client, wants)
    first = await add_note(client, wants, A, timestamp="0:10")
    second = await add_note(client, wants, A, timestamp="0:20")
    await add_note(client, wants, A, timestamp="0:30", text="written by hand")
    await add_note(client, does_not, A, timestamp="0:40")
    assert await outbox(sessions) == []  # no transcript yet: nothing requested

    result = await video_changed(relay_ctx, A)  # e.g. metadata arrived: still no transcript
    assert result["ai_notes_queued"] == 0
    async with sessions() as session:
        await session.execute(update(Video).values(transcript_available=True))
        await session.commit()
    assert (await video_changed(relay_ctx, A))["ai_notes_queued"] == 2
    assert (await video_changed(relay_ctx, A))["ai_notes_queued"] == 0  # idempotent: no second row
    rows = await outbox(sessions)
    assert [row.note_id for row in rows] == [first["id"], second["id"]]

    assert (await relay_outbox(relay_ctx))["sent"] == 2
    assert sorted(await receive_all(sqs, queue_url)) == sorted(
        json.dumps({"id": note["id"], "video_id": A, "timestamp": note["timestamp"], "user_id": wants_id})
        for note in (first, second)
    )
    assert (await video_changed(relay_ctx, A))["ai_notes_queued"] == 0  # sent rows count too


async def test_concurrent_video_changed_jobs_write_one_row_per_note(client, make_user, sessions, actor_ctx):
    token, _ = await make_user()
    await enable_ai_notes(client, token)
    for second in range(5):
        await add_note(client, token, A, timestamp=f"0:{second:02d}")
    async with sessions() as session:
        await session.execute(update(Video).values(transcript_available=True))
        await session.commit()
    results = await asyncio.gather(*(video_changed(actor_ctx, A) for _ in range(4)))
    assert sum(r["ai_notes_queued"] for r in results) == 5
    rows = await outbox(sessions)
    assert len(rows) == len({row.note_id for row in rows}) == 5
