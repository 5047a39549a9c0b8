"""`relay_outbox()`: deliver due AI-note requests and record how each went (the outbox's rules
are in vidwiz/notes/outbox.py). Runs until nothing is due or half its job time is spent, then
schedules itself for when the earliest pending row is due (retry backoff, expired leases).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from actors.resources import resources
from vidwiz.notes.outbox import BATCH_SIZE, Rejected, claim_due, next_attempt_at, record_outcome
from vidwiz.unit_of_work import Dispatcher, Job, UnitsOfWork

log = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 5


async def relay_outbox(ctx: dict[str, Any]) -> dict[str, Any]:
    res = resources(ctx)
    delivery = res.delivery
    if delivery is None:  # warned once at start-up (actors/resources.py)
        return {"sent": 0, "failed": 0, "rejected": 0, "delivery": None}
    lease = timedelta(seconds=res.job_timeout + LEASE_MARGIN_SECONDS)
    budget_ends = time.monotonic() + res.job_timeout / 2
    sent = failed = rejected = 0
    while time.monotonic() < budget_ends:
        async with res.units() as work:
            claimed = await claim_due(work.session, lease=lease, limit=BATCH_SIZE)
        if not claimed:
            break
        outcome = await delivery.deliver(claimed)
        async with res.units() as work:
            await record_outcome(work.session, claimed, outcome)
        sent += sum(1 for error in outcome.values() if error is None)
        failed += sum(1 for error in outcome.values() if isinstance(error, str))
        rejected += sum(1 for error in outcome.values() if isinstance(error, Rejected))
    if failed:
        log.warning("outbox: %d message(s) not accepted by %s; retrying with backoff", failed, delivery.name)
    if rejected:
        log.warning("outbox: %d message(s) rejected by %s for good (see outbox.last_error)", rejected, delivery.name)
    await schedule_next_run(res.units, res.dispatcher)
    return {"sent": sent, "failed": failed, "rejected": rejected, "delivery": delivery.name}


async def schedule_next_run(units: UnitsOfWork, dispatcher: Dispatcher) -> None:
    """Enqueue a relay for when the earliest pending row is due.

    The job id names the due second, so relays that agree on it enqueue one job. The sweeper
    re-drives anyway, should Redis lose this job.
    """
    async with units.sessions() as session:
        when = await next_attempt_at(session)
    if when is None:
        return
    due_second = int(when.replace(tzinfo=UTC).timestamp()) + 1
    defer_until: datetime | None = datetime.fromtimestamp(due_second, UTC)
    if defer_until is not None and defer_until <= datetime.now(UTC):
        await dispatcher.enqueue(Job.RELAY_OUTBOX)  # already due (this run's budget ran out): go again now
        return
    await dispatcher.enqueue(
        Job.RELAY_OUTBOX, job_id=dispatcher.job_id(Job.RELAY_OUTBOX, due_second), defer_until=defer_until
    )
