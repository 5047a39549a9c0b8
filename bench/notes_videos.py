"""Bench: note creation and video listing at 50 concurrent clients (req/s, p50/p99 latency).

The app runs in this process on a free 127.0.0.1 port; the load comes from a child process
(so client work does not share the server's event loop). Each scenario sends a fixed number
of requests. Afterwards the tasks table is checked: one fetch task per (video, type).

    python bench/notes_videos.py                          # SQLite temp file + Redis at 127.0.0.1:6379
    python bench/notes_videos.py --db-url postgresql://postgres@127.0.0.1:5432/test
    python bench/notes_videos.py --clients 50 --requests 2000 --videos 200
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import aiohttp
from common import (
    LoadGroup,
    LoadResult,
    RunningApp,
    add_backend_options,
    bench_env,
    client_process_pool,
    new_prefix,
    percentile,
    print_table,
    register_and_login,
    run_load,
    serve_app,
)
from sqlalchemy import func, select

from vidwiz.models import Note, Task, Video


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_options(parser)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    parser.add_argument("--videos", type=int, default=200, help="distinct videos the notes are spread over")
    return parser.parse_args()


def video_id(n: int) -> str:
    return f"bench{n:06d}"  # 11 characters of the YouTube id alphabet


async def measure(args: argparse.Namespace, base: str) -> list[tuple[str, LoadResult]]:
    async with aiohttp.ClientSession(base) as http:
        headers = {"Authorization": f"Bearer {await register_and_login(http)}"}
    loop = asyncio.get_running_loop()
    n, videos, clients = args.requests, args.videos, args.clients
    rows: list[tuple[str, LoadResult]] = []
    with client_process_pool() as pool:

        async def scenario(label: str, requests: list[tuple[str, str, dict | None]]) -> None:
            [result] = await loop.run_in_executor(pool, run_load, base, [LoadGroup(requests, clients, headers)])
            rows.append((label, result))

        warm_up = LoadGroup([("GET", "/v2/videos", None)] * 20, 2, headers)
        await loop.run_in_executor(pool, run_load, base, [warm_up])
        creates = [
            (
                "POST",
                f"/v2/videos/{video_id(i % videos)}/notes",
                {
                    "timestamp": f"{i // 60}:{i % 60:02d}",
                    "text": f"note {i}",
                    "video_title": f"Bench video {i % videos}",
                },
            )
            for i in range(n)
        ]
        await scenario(f"POST notes ({videos} videos, first touch creates video + tasks)", creates)
        await scenario(
            "GET /v2/videos (pages 1..10, default sort)",
            [("GET", f"/v2/videos?page={1 + i % 10}", None) for i in range(n)],
        )
        await scenario(
            "GET /v2/videos?q=… (title search, sort title_asc)",
            [("GET", f"/v2/videos?q=video%20{i % 100}&sort=title_asc", None) for i in range(n)],
        )
    return rows


async def check(args: argparse.Namespace, running: RunningApp) -> str:
    """Correctness under the load: every note stored, exactly one task per (video, type)."""
    async with running.engine.connect() as conn:
        notes = await conn.scalar(select(func.count()).select_from(Note))
        videos = await conn.scalar(select(func.count()).select_from(Video))
        tasks = await conn.scalar(select(func.count()).select_from(Task))
    return (
        f"notes stored={notes} (sent {args.requests}), videos={videos}, "
        f"tasks={tasks} (expected {2 * videos}: one fetch_transcript + one fetch_metadata each)"
    )


def report(rows: list[tuple[str, LoadResult]], checked: str) -> None:
    print()
    print_table(
        [("scenario", -62), ("ok", 6), ("errors", 8), ("req/s", 8), ("p50 ms", 8), ("p99 ms", 8)],
        (
            (
                label,
                len(result.latencies),
                sum(result.errors.values()),
                f"{result.rate:.0f}",
                f"{percentile(result.latencies, 50) * 1000:.1f}",
                f"{percentile(result.latencies, 99) * 1000:.1f}",
            )
            for label, result in rows
        ),
    )
    for label, result in rows:
        if result.errors:
            print(f"    {label}: error statuses {dict(result.errors)}")
    print(checked)


async def run(args: argparse.Namespace, workdir: Path) -> None:
    env = bench_env(workdir, db_url=args.db_url, redis_url=args.redis_url, prefix=new_prefix())
    async with serve_app(env) as running:
        print(
            f"db={running.db_kind} redis={args.redis_url} app={running.base} "
            f"clients={args.clients} requests/scenario={args.requests} videos={args.videos}"
        )
        rows = await measure(args, running.base)
        checked = await check(args, running)
    report(rows, checked)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="vidwiz-bench-") as workdir:
        asyncio.run(run(args, Path(workdir)))


if __name__ == "__main__":
    main()
