"""`sweep()` (arq cron): the safety net behind every event-driven path.

- stale in-progress tasks: fail the ones out of attempts, wake pollers for the rest (D7);
- outbox rows that are due but have no relay job (lost enqueue, crashed worker): re-drive;
- sent outbox rows older than the retention: prune.
"""

from __future__ import annotations

import logging
from typing import Any

from actors.resources import resources
from vidwiz.db import utcnow
from vidwiz.notes.outbox import count_due, prune_sent
from vidwiz.tasks.service import sweep_stale_tasks

log = logging.getLogger(__name__)


async def sweep(ctx: dict[str, Any]) -> dict[str, Any]:
    res = resources(ctx)
    async with res.units() as work:
        tasks = await sweep_stale_tasks(work.session, work.effects)
    now = utcnow()
    async with res.units() as work:
        due = await count_due(work.session, now)
        pruned = await prune_sent(work.session, now)
        if due and res.delivery is not None:
            work.effects.wake_relay()  # wakes the relay
    if tasks["failed"] or pruned:
        log.info("sweep: %s task(s) failed for good, %d sent outbox row(s) pruned", tasks["failed"], pruned)
    return {"tasks": tasks, "outbox_due": due, "outbox_pruned": pruned}
