"""`vidwiz-worker` / `python -m vidwiz.worker`: command line, logging and signals.

Exit status: 0 after a graceful stop (SIGTERM/SIGINT) or --max-tasks; 1 when the worker
cannot go on (admin token rejected, poll refused); 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from vidwiz.worker.client import TASK_KINDS, WorkerConfig, WorkerError, log, run_worker
from vidwiz.worker.fetchers import Fetcher, FetcherUnavailable, make_fetcher

# A server bound to every interface is reached locally through the loopback address.
WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


def default_api_url(environ: Mapping[str, str]) -> str:
    host = environ.get("HOST", "127.0.0.1")
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{environ.get('PORT', '5000')}"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidwiz-worker",
        description="Fetch transcripts and metadata for VidWiz tasks through /v2/internal (docs/api.md §5).",
    )
    add = parser.add_argument
    add("--api-url", default=default_api_url(environ), help="VidWiz API base URL (default: http://$HOST:$PORT)")
    add("--admin-token", default=environ.get("ADMIN_TOKEN"), help="internal API token (default: $ADMIN_TOKEN)")
    add("--type", choices=(*TASK_KINDS, "all"), default="all", help="task type to work on (default: all)")
    add(
        "--fetcher",
        choices=("youtube", "dir"),
        default=environ.get("WORKER_FETCHER") or "youtube",
        help="where data comes from (default: $WORKER_FETCHER or youtube)",
    )
    add(
        "--from-dir",
        type=Path,
        default=Path(environ["WORKER_DIR"]) if environ.get("WORKER_DIR") else None,
        help="for --fetcher dir: holds <video_id>.transcript.json and <video_id>.metadata.json (default: $WORKER_DIR)",
    )
    add(
        "--timeout",
        type=positive_int,
        default=30,
        help="long-poll timeout in seconds (default: 30; the server caps at 60)",
    )
    add("--concurrency", type=positive_int, default=2, help="concurrent polls per task type (default: 2)")
    add("--max-tasks", type=positive_int, default=None, help="exit after this many tasks (default: no limit)")
    add(
        "--shutdown-grace",
        type=non_negative_float,
        default=10.0,
        help="seconds a task in hand may take to finish after SIGTERM before it is released (default: 10)",
    )
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = build_parser(os.environ if environ is None else environ)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.admin_token:
        parser.error("no admin token: pass --admin-token or set ADMIN_TOKEN")
    try:
        fetcher = make_fetcher(args.fetcher, args.from_dir)
    except FetcherUnavailable as exc:
        parser.error(str(exc))
    config = WorkerConfig(
        api_url=args.api_url,
        admin_token=args.admin_token,
        kinds=TASK_KINDS if args.type == "all" else (args.type,),
        poll_timeout=args.timeout,
        concurrency=args.concurrency,
        max_tasks=args.max_tasks,
        shutdown_grace=args.shutdown_grace,
    )
    try:
        asyncio.run(serve(config, fetcher, args.fetcher))
    except WorkerError as exc:
        log.error("vidwiz-worker stopped: %s", exc)
        return 1
    return 0


async def serve(config: WorkerConfig, fetcher: Fetcher, fetcher_name: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, stop, signum, config.shutdown_grace)
    log.info(
        "vidwiz-worker polling %s for %s tasks (concurrency %d, fetcher %s)",
        config.api_url,
        "/".join(config.kinds),
        config.concurrency,
        fetcher_name,
    )
    await run_worker(config, fetcher, stop)
    log.info("vidwiz-worker stopped")


def request_stop(stop: asyncio.Event, signum: int, grace: float) -> None:
    if not stop.is_set():
        name = signal.Signals(signum).name
        log.info("%s: stopping; tasks in hand get %.0fs to finish, else they are released", name, grace)
    stop.set()
