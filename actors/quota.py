"""`reconcile_quotas()` (arq cron every few minutes): bring today's Wiz quota counters in Redis
back in line with the messages table.

Counters drift only through crashes (a reservation taken by a process that died before
storing or giving back its message) or a counter rebuilt while admissions were in
flight. The rules that keep this safe under live traffic are in
vidwiz/conversations/quota.py (`DailyQuota.reconcile`).
"""

from __future__ import annotations

import logging
from typing import Any

from actors.resources import resources
from vidwiz.conversations.quota import DailyQuota

log = logging.getLogger(__name__)


async def reconcile_quotas(ctx: dict[str, Any]) -> int:
    """Returns how many counters were corrected."""
    res = resources(ctx)
    quota = DailyQuota(res.dispatcher.redis, res.keys, res.settings)
    async with res.sessions() as session:
        changed = await quota.reconcile(session)
    if changed:
        log.info("reconcile_quotas: corrected %d counter(s)", changed)
    return changed
