"""`sweep()` (arq cron): the safety net behind every event-driven path.

- stale in-progress tasks: fail the ones out of attempts, wake pollers for the rest (D7);
- outbox rows that are due but have no relay job (lost enqueue, crashed worker): re-drive;
- sent outbox rows older than the retention: prune.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select

from actors.relay import PENDING, SENT
from vidwiz.db import utcnow
from vidwiz.events import enqueue_job
from vidwiz.notes.models import OutboxMessage
from vidwiz.tasks.service import sweep_stale_tasks

log = logging.getLogger(__name__)

SENT_RETENTION = timedelta(days=7)


async def sweep(ctx: dict[str, Any]) -> dict[str, Any]:
    sessions, keys = ctx["sessions"], ctx["keys"]
    async with sessions() as session:
        tasks = await sweep_stale_tasks(session, ctx["redis"], keys)
    now = utcnow()
    async with sessions() as session:
        due = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.status == PENDING, OutboxMessage.next_attempt_at <= now)
        )
        pruned = (
            await session.execute(
                delete(OutboxMessage)
                .where(OutboxMessage.status == SENT, OutboxMessage.sent_at < now - SENT_RETENTION)
                .execution_options(synchronize_session=False)
            )
        ).rowcount
        await session.commit()
    if due and ctx.get("delivery") is not None:
        await enqueue_job(ctx["redis"], keys, "relay_outbox")
    if tasks.get("failed") or pruned:
        log.info("sweep: %s task(s) failed for good, %d sent outbox row(s) pruned", tasks.get("failed"), pruned)
    return {"tasks": tasks, "outbox_due": due or 0, "outbox_pruned": pruned}
