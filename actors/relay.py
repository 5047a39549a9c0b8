"""`relay_outbox()`: deliver pending outbox rows (AI-note requests) and mark them sent.

A row is claimed by pushing its `next_attempt_at` past a lease in one statement
(PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite serialises writers), so concurrent relays in
several actor processes never send the same row in the normal path. It is marked `sent`
only after the delivery accepted it; a failure counts an attempt, records the error and
backs off exponentially; nothing is ever dropped. A worker killed between SQS accepting
and the row being marked re-sends after the lease: at-least-once, as API.md D6 allows.
Only a row its delivery can never handle (`Rejected`, e.g. an unparseable timestamp) ends
`failed`, with the reason in `last_error`.

Delivery is a strategy: SQS (API.md §3.3 step 4 body, unchanged for the Lambda) whenever
SQS_AI_NOTE_QUEUE_URL is set, else the built-in AI-note writer (actors/ai_notes.py) when an
LLM provider is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from vidwiz.db import utcnow
from vidwiz.notes.models import AI_NOTE, OutboxMessage, OutboxStatus
from vidwiz.storage import aws_client_kwargs

log = logging.getLogger(__name__)

PENDING, SENT, FAILED = OutboxStatus.PENDING, OutboxStatus.SENT, OutboxStatus.FAILED
BATCH_SIZE = 10  # SQS SendMessageBatch's limit
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
DEFAULT_JOB_TIMEOUT = 30.0


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


class SqsDelivery:
    name = "sqs"

    def __init__(self, client, queue_url: str, *, timeout: float):
        self.client = client
        self.queue_url = queue_url
        self.timeout = timeout

    async def deliver(self, messages: Sequence[ClaimedMessage]) -> dict[int, str | None]:
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
async def open_delivery(
    settings: Settings, *, job_timeout: float, ai_notes: Delivery | None = None
) -> AsyncIterator[Delivery | None]:
    """SQS when SQS_AI_NOTE_QUEUE_URL is set (the external path wins), else `ai_notes` (the
    built-in writer, given when an LLM provider is configured), else None."""
    if not settings.sqs_ai_note_queue_url:
        yield ai_notes
        return
    import aioboto3
    from aiobotocore.config import AioConfig

    # Bounded calls: a send must finish well inside the job timeout (and so the claim lease).
    call_timeout = max(1.0, job_timeout / 3)
    config = AioConfig(
        connect_timeout=min(5.0, call_timeout),
        read_timeout=call_timeout,
        retries={"mode": "standard", "total_max_attempts": 2},
    )
    async with aioboto3.Session().client("sqs", config=config, **aws_client_kwargs(settings)) as client:
        yield SqsDelivery(client, settings.sqs_ai_note_queue_url, timeout=call_timeout)


async def relay_outbox(ctx: dict[str, Any]) -> dict[str, Any]:
    delivery: Delivery | None = ctx.get("delivery")
    if delivery is None:
        if not ctx.get("relay_warned"):
            ctx["relay_warned"] = True
            log.warning(
                "neither SQS_AI_NOTE_QUEUE_URL nor an LLM provider is configured: AI-note requests stay pending"
            )
        return {"sent": 0, "failed": 0, "rejected": 0, "delivery": None}
    job_timeout = ctx.get("job_timeout", DEFAULT_JOB_TIMEOUT)
    lease = timedelta(seconds=job_timeout + 5)
    budget_ends = time.monotonic() + job_timeout / 2
    sent = failed = rejected = 0
    while time.monotonic() < budget_ends:
        async with ctx["sessions"]() as session:
            claimed = await claim_due(session, lease=lease, limit=BATCH_SIZE)
        if not claimed:
            break
        outcome = await delivery.deliver(claimed)
        async with ctx["sessions"]() as session:
            await record_outcome(session, claimed, outcome)
        sent += sum(1 for error in outcome.values() if error is None)
        failed += sum(1 for error in outcome.values() if isinstance(error, str))
        rejected += sum(1 for error in outcome.values() if isinstance(error, Rejected))
    if failed:
        log.warning("outbox: %d message(s) not accepted by %s; retrying with backoff", failed, delivery.name)
    if rejected:
        log.warning("outbox: %d message(s) rejected by %s for good (see outbox.last_error)", rejected, delivery.name)
    await schedule_next_run(ctx)
    return {"sent": sent, "failed": failed, "rejected": rejected, "delivery": delivery.name}


async def claim_due(
    session: AsyncSession, *, lease: timedelta, limit: int, now: datetime | None = None
) -> list[ClaimedMessage]:
    """Lease up to `limit` due pending AI-note rows (one statement) and commit."""
    now = now or utcnow()
    due = (
        select(OutboxMessage.id)
        .where(OutboxMessage.kind == AI_NOTE, OutboxMessage.status == PENDING, OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if session.bind.dialect.name == "postgresql":
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
    await session.commit()
    return sorted((ClaimedMessage(*row) for row in rows), key=lambda m: m.id)


async def record_outcome(session: AsyncSession, claimed: Sequence[ClaimedMessage], outcome: Outcome) -> None:
    """Mark accepted rows sent and rejected ones failed; give the others an attempt, the error
    and a backoff. Commits."""
    now = utcnow()
    for message in claimed:
        error = outcome.get(message.id, "no delivery outcome")
        still_pending = (OutboxMessage.id == message.id, OutboxMessage.status == PENDING)
        if error is None:
            values = {"status": SENT, "sent_at": now, "attempts": OutboxMessage.attempts + 1, "last_error": None}
        elif isinstance(error, Rejected):
            values = {"status": FAILED, "attempts": OutboxMessage.attempts + 1, "last_error": error.reason[:2000]}
        else:
            values = {
                "attempts": OutboxMessage.attempts + 1,
                "last_error": error[:2000],
                "next_attempt_at": now + timedelta(seconds=backoff_seconds(message.attempts + 1)),
            }
        await session.execute(
            update(OutboxMessage).where(*still_pending).values(**values).execution_options(synchronize_session=False)
        )
    await session.commit()


def backoff_seconds(attempts: int) -> float:
    """2 s, 4 s, 8 s … capped at 5 min, with ±10 % jitter so retries of many rows spread out."""
    base = min(BACKOFF_BASE * 2 ** max(attempts - 1, 0), BACKOFF_CAP)
    return base * random.uniform(0.9, 1.1)


async def next_attempt_at(sessions: async_sessionmaker[AsyncSession]) -> datetime | None:
    async with sessions() as session:
        return await session.scalar(
            select(func.min(OutboxMessage.next_attempt_at)).where(OutboxMessage.status == PENDING)
        )


async def schedule_next_run(ctx: dict[str, Any]) -> None:
    """Enqueue a relay for when the earliest pending row is due (retry backoff, expired leases).

    The job id names the due second, so relays that agree on it enqueue one job. The sweeper
    re-drives anyway, should Redis lose this job.
    """
    when = await next_attempt_at(ctx["sessions"])
    if when is None:
        return
    when = when.replace(tzinfo=UTC)
    due_second = int(when.timestamp()) + 1
    defer_until = datetime.fromtimestamp(due_second, UTC)
    if defer_until <= datetime.now(UTC):
        job_id, defer_until = None, None  # already due (this run's budget ran out): go again now
    else:
        # arq's job ids are global to the Redis: name the queue so deployments never collide.
        job_id = f"{ctx['keys'].arq_queue}:relay_outbox:{due_second}"
    try:
        await ctx["redis"].enqueue_job(
            "relay_outbox", _job_id=job_id, _queue_name=ctx["keys"].arq_queue, _defer_until=defer_until
        )
    except RedisError as exc:
        log.warning("could not schedule the next outbox relay (the sweeper will): %s", exc)
