"""`python -m actors`: run the arq worker with settings from the environment.

It keeps running through Redis outages (actors/lifecycle.py).

`python -m actors --check` is the liveness probe (exit 0 when a worker on this queue
refreshed its health key within the last few seconds). Any failure exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from arq.worker import check_health

from actors.lifecycle import run_actors
from actors.outcomes import set_job_log_levels
from actors.worker import build_worker_settings
from config import load_settings
from config.settings import SettingsError
from vidwiz.logs import configure_logging

log = logging.getLogger("actors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="health check: is a worker alive on this queue?")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        worker_settings = build_worker_settings(settings)
    except SettingsError as exc:
        print(f"actors: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, "actors")
    set_job_log_levels(per_job_info=settings.actor_job_logs)
    if args.check:
        return check_health(worker_settings)
    try:
        asyncio.run(run_actors(worker_settings))
    except Exception:
        log.exception("actor worker stopped on an error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
