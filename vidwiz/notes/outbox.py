"""The AI-note outbox: requests written in the note's own transaction (docs/api.md D5, D6), then
delivered by the relay actor, so none is lost whatever is down when the note is created.

A row is claimed by pushing its `next_attempt_at` past a lease in one statement
(PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite serialises writers), so concurrent relays in
several actor processes never send the same row in the normal path. It is marked `sent`
only after its delivery accepted it; a failure counts an attempt, records the error and
backs off exponentially; nothing is ever dropped. A worker killed between the delivery
accepting and the row being marked re-sends after the lease: at-least-once, as docs/api.md D6
allows. Only a row its delivery can never handle (`Rejected`, e.g. an unparseable
timestamp) ends `failed`, with the reason in `last_error`.

Delivery is a strategy: SQS (the docs/api.md §3.3 step 4 body, unchanged for the Lambda)
whenever SQS_AI_NOTE_QUEUE_URL is set, else the built-in AI-note writer
(vidwiz/notes/ai_writer.py) when an LLM provider is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from config import Settings
from vidwiz.db import dialect_name, rowcount, utcnow
from vidwiz.notes.models import AI_NOTE, Note, OutboxMessage, OutboxStatus
from vidwiz.notes.service import ai_note_body, eligible_for_ai_note
from vidwiz.storage import aws_client_kwargs
from vidwiz.videos.models import Video

BATCH_SIZE = 10  # SQS SendMessageBatch's limit
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
SENT_RETENTION = timedelta(days=7)
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    body: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Rejected:
    """A row its delivery can never handle: marked failed at once, not retried."""

    reason: str


# Per row: None = accepted, str = a transient error (retried with backoff), Rejected = final.
Outcome = dict[int, str | Rejected | None]


class Delivery(Protocol):
    """Delivers claimed rows and says, per row id, how it went."""

    name: str

    async def deliver(self, messages: Sequence[ClaimedMessage]) -> Outcome: ...


# -- writing requests -------------------------------------------------------------------------


async def request_waiting_ai_notes(session: AsyncSession, video_id: str) -> int:
    """Write an outbox row for every AI-note-eligible note of the video that has none yet (D6:
    notes created before the transcript existed). Does not commit; returns how many."""
    if not await _waiting_notes(session, video_id):
        return 0
    # A no-op UPDATE takes the row lock on PostgreSQL and the write lock on SQLite, so two
    # concurrent jobs for the same video cannot both see "no row yet" and write twins.
    await session.execute(
        update(Video)
        .where(Video.video_id == video_id)
        .values(updated_at=Video.updated_at)
        .execution_options(synchronize_session=False)
    )
    notes = await _waiting_notes(session, video_id)
    session.add_all(OutboxMessage(kind=AI_NOTE, note_id=note.id, body=ai_note_body(note)) for note in notes)
    return len(notes)


async def has_waiting_ai_notes(session: AsyncSession, video_id: str) -> bool:
    """Whether `request_waiting_ai_notes` would write anything: checked on a read session first,
    since a unit of work on SQLite takes the write lock at its first statement."""
    return bool(await _waiting_notes(session, video_id))


async def _waiting_notes(session: AsyncSession, video_id: str) -> list[Note]:
    already_requested = exists().where(OutboxMessage.note_id == Note.id, OutboxMessage.kind == AI_NOTE)
    notes = await session.scalars(
        eligible_for_ai_note(video_id).where(~already_requested).order_by(Note.created_at, Note.id)
    )
    return list(notes)


# -- relaying ---------------------------------------------------------------------------------


async def claim_due(
    session: AsyncSession, *, lease: timedelta, limit: int, now: datetime | None = None
) -> list[ClaimedMessage]:
    """Lease up to `limit` due pending AI-note rows (one statement). Does not commit."""
    now = now or utcnow()
    due = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.kind == AI_NOTE,
            OutboxMessage.status == OutboxStatus.PENDING,
            OutboxMessage.next_attempt_at <= now,
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if dialect_name(session) == "postgresql":
        due = due.with_for_update(skip_locked=True)
    rows = (
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=now + lease)
            .returning(OutboxMessage.id, OutboxMessage.body, OutboxMessage.attempts)
            .execution_options(synchronize_session=False)
        )
    ).all()
    return sorted((ClaimedMessage(*row) for row in rows), key=lambda m: m.id)


async def record_outcome(session: AsyncSession, claimed: Sequence[ClaimedMessage], outcome: Outcome) -> None:
    """Mark accepted rows sent and rejected ones failed; give the others an attempt, the error
    and a backoff. Does not commit."""
    now = utcnow()
    for message in claimed:
        error = outcome.get(message.id, "no delivery outcome")
        still_pending = (OutboxMessage.id == message.id, OutboxMessage.status == OutboxStatus.PENDING)
        values: dict[str, Any]
        if error is None:
            values = {
                "status": OutboxStatus.SENT,
                "sent_at": now,
                "attempts": OutboxMessage.attempts + 1,
                "last_error": None,
            }
        elif isinstance(error, Rejected):
            values = {
                "status": OutboxStatus.FAILED,
                "attempts": OutboxMessage.attempts + 1,
                "last_error": error.reason[:MAX_ERROR_CHARS],
            }
        else:
            values = {
                "attempts": OutboxMessage.attempts + 1,
                "last_error": error[:MAX_ERROR_CHARS],
                "next_attempt_at": now + timedelta(seconds=backoff_seconds(message.attempts + 1)),
            }
        await session.execute(
            update(OutboxMessage).where(*still_pending).values(**values).execution_options(synchronize_session=False)
        )


def backoff_seconds(attempts: int) -> float:
    """2 s, 4 s, 8 s … capped at 5 min, with ±10 % jitter so retries of many rows spread out."""
    # The exponent stops growing far past the cap: a row may be retried for days, and 2**1024 overflows a float.
    doubling: int = 2 ** min(max(attempts - 1, 0), 64)
    base = min(BACKOFF_BASE * doubling, BACKOFF_CAP)
    return base * random.uniform(0.9, 1.1)


async def next_attempt_at(session: AsyncSession) -> datetime | None:
    """When the earliest pending row is due (retry backoff, expired leases), if any."""
    return await session.scalar(
        select(func.min(OutboxMessage.next_attempt_at)).where(OutboxMessage.status == OutboxStatus.PENDING)
    )


# -- sweeping ---------------------------------------------------------------------------------


async def count_due(session: AsyncSession, now: datetime) -> int:
    """Pending rows whose time has come (a relay job may have been lost)."""
    due = await session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now)
    )
    return int(due or 0)


async def prune_sent(session: AsyncSession, now: datetime) -> int:
    """Delete sent rows older than the retention. Does not commit; returns how many."""
    result = await session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.SENT, OutboxMessage.sent_at < now - SENT_RETENTION)
        .execution_options(synchronize_session=False)
    )
    return int(rowcount(result) or 0)


# -- SQS ----------------------------------------------------------------------------------------


class SqsMessages(Protocol):
    """The call made on aioboto3's SQS client (which has no type information)."""

    async def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]: ...


class SqsDelivery:
    name = "sqs"

    def __init__(self, client: SqsMessages, queue_url: str, *, timeout: float) -> None:
        self.client = client
        self.queue_url = queue_url
        self.timeout = timeout

    async def deliver(self, messages: Sequence[ClaimedMessage]) -> Outcome:
        entries = [{"Id": str(m.id), "MessageBody": json.dumps(m.body)} for m in messages]
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (BotoCoreError, ClientError, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return {m.id: error for m in messages}
        accepted = {entry["Id"] for entry in response.get("Successful", [])}
        refused = {e["Id"]: f"{e.get('Code')}: {e.get('Message')}" for e in response.get("Failed", [])}
        return {
            m.id: None if str(m.id) in accepted else refused.get(str(m.id), "not acknowledged by SQS") for m in messages
        }


@contextlib.asynccontextmanager
async def open_sqs_delivery(settings: Settings, *, job_timeout: float) -> AsyncIterator[SqsDelivery]:
    """The SQS delivery of SQS_AI_NOTE_QUEUE_URL (which must be set), its calls bounded well
    inside the job timeout (and so the claim lease)."""
    import aioboto3
    from aiobotocore.config import AioConfig

    assert settings.sqs_ai_note_queue_url
    call_timeout = max(1.0, job_timeout / 3)
    config = AioConfig(
        connect_timeout=min(5.0, call_timeout),
        read_timeout=call_timeout,
        retries={"mode": "standard", "total_max_attempts": 2},
    )
    async with aioboto3.Session().client("sqs", config=config, **aws_client_kwargs(settings)) as client:
        yield SqsDelivery(client, settings.sqs_ai_note_queue_url, timeout=call_timeout)
