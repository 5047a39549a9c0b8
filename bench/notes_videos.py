"""Bench: note creation and video reads on the real supervised tree (`python supervisor.py`, the
embedded Redis, one actor process), SQLite and PostgreSQL in one run, WEB_PROCESSES 1 and 2.

For each configuration the tree starts on a fresh database; a spawned load process drives it
at `--clients` concurrent clients (closed loop):
- note create: POST /v2/videos/{id}/notes spread over `--videos` videos (the first note of a
  video also creates the video and its two fetch tasks): req/s, p50, p99;
- videos read: GET /v2/videos (pages 1..10) and GET /v2/videos/{id}/notes in turn: req/s, p99,
  and the web processes' CPU per request.
Then the issue's rows: note-create p99 SQLite vs PostgreSQL, reads, and 2 processes vs 1.

    python bench/notes_videos.py                           # SQLite + PostgreSQL (127.0.0.1:5432), web × 1 and 2
    python bench/notes_videos.py --quick                   # a short run
    python bench/notes_videos.py --tree /work/wt-perf-base # another checkout's tree (e.g. main, for a baseline)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from common import (
    PG_DEFAULT,
    LoadGroup,
    LoadResult,
    Tree,
    add_tree_options,
    client_process_pool,
    cpu_seconds,
    load_average,
    percentile,
    print_table,
    register_and_login,
    run_load,
    supervised_tree,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tree_options(parser)
    parser.add_argument("--pg-url", default=PG_DEFAULT, help="PostgreSQL server (a fresh database is made on it)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--web-processes", default="1,2")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--requests", type=int, help="requests per scenario (default 3000; --quick 1000)")
    parser.add_argument("--videos", type=int, default=100, help="distinct videos the notes are spread over")
    parser.add_argument("--web-command", help="VIDWIZ_WEB_COMMAND for the tree (e.g. the web process under uvloop)")
    parser.add_argument("--profile", type=Path, help="py-spy flame graph (SVG) of the first web process during reads")
    args = parser.parse_args()
    args.requests = args.requests or (1000 if args.quick else 3000)
    return args


def video_id(n: int) -> str:
    return f"bench{n:06d}"  # 11 characters of the YouTube id alphabet


@dataclass
class Measured:
    label: str
    result: LoadResult
    cpu_ms_per_request: float
    load: str


async def measure(args: argparse.Namespace, tree: Tree) -> tuple[Measured, Measured]:
    async with aiohttp.ClientSession(tree.base) as http:
        headers = {"Authorization": f"Bearer {await register_and_login(http)}"}
    loop = asyncio.get_running_loop()
    n, videos, clients = args.requests, args.videos, args.clients
    web = tree.processes("vidwiz.web")

    with client_process_pool() as pool:

        async def scenario(label: str, requests: list[tuple[str, str, dict | None]]) -> Measured:
            before = cpu_seconds(web)
            [result] = await loop.run_in_executor(pool, run_load, tree.base, [LoadGroup(requests, clients, headers)])
            used = cpu_seconds(web) - before
            answered = len(result.latencies) + sum(result.errors.values())
            return Measured(label, result, 1000 * used / max(answered, 1), load_average())

        warm_up = [("GET", "/v2/videos", None)] * 40
        await loop.run_in_executor(pool, run_load, tree.base, [LoadGroup(warm_up, 4, headers)])
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
        created = await scenario("note create", creates)
        reads = [
            ("GET", f"/v2/videos?page={1 + i % 10}&per_page=10", None)
            if i % 2
            else ("GET", f"/v2/videos/{video_id(i % videos)}/notes", None)
            for i in range(n)
        ]
        profiler = None
        if args.profile:
            profiler = await asyncio.create_subprocess_exec(
                "py-spy", "record", "--nonblocking", "-o", str(args.profile), "--pid", str(web[0].pid)
            )
        read = await scenario("videos read", reads)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            await profiler.wait()
    return created, read


def fmt(value: float, spec: str = ".0f") -> str:
    return format(value, spec)


async def run(args: argparse.Namespace) -> None:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    counts = [int(c) for c in args.web_processes.split(",")]
    print(
        f"notes/videos bench: tree {args.tree}, clients={args.clients}, requests/scenario={args.requests}, "
        f"videos={args.videos}; {load_average()} at the start"
    )
    results: dict[tuple[str, int], tuple[Measured, Measured]] = {}
    for web_processes in counts:
        for backend in backends:
            with tempfile.TemporaryDirectory(prefix="vidwiz-bench-") as workdir:
                db = "sqlite" if backend == "sqlite" else args.pg_url
                started = time.perf_counter()
                extra = {"VIDWIZ_WEB_COMMAND": args.web_command} if args.web_command else {}
                async with supervised_tree(
                    args.tree, Path(workdir), db=db, web_processes=web_processes, **extra
                ) as tree:
                    results[backend, web_processes] = await measure(args, tree)
                    if any(m.result.errors for m in results[backend, web_processes]):
                        errors = [line for line in tree.lines if "ERROR" in line or "Error" in line]
                        print("    the tree logged:", *errors[-5:], sep="\n      ")
                print(f"  ran {backend} × {web_processes} web in {time.perf_counter() - started:.0f} s")

    print()
    print_table(
        [("db", -10), ("web", 3), ("scenario", -12), ("ok", 6), ("err", 4), ("req/s", 7), ("p50 ms", 8)]
        + [("p99 ms", 8), ("CPU ms/req", 10), ("machine", -34)],
        (
            (
                backend,
                web_processes,
                m.label,
                len(m.result.latencies),
                sum(m.result.errors.values()),
                fmt(m.result.rate),
                fmt(percentile(m.result.latencies, 50) * 1000, ".1f"),
                fmt(percentile(m.result.latencies, 99) * 1000, ".1f"),
                fmt(m.cpu_ms_per_request, ".2f"),
                m.load,
            )
            for (backend, web_processes), pair in results.items()
            for m in pair
        ),
    )
    for (backend, web_processes), pair in results.items():
        for m in pair:
            if m.result.errors:
                print(f"    {backend} × {web_processes} {m.label}: error statuses {dict(m.result.errors)}")

    print()
    print("issue rows:")
    for web_processes in counts:
        sqlite, pg = results.get(("sqlite", web_processes)), results.get(("postgresql", web_processes))
        if sqlite and pg:
            s99 = percentile(sqlite[0].result.latencies, 99) * 1000
            p99 = percentile(pg[0].result.latencies, 99) * 1000
            print(
                f"  note create p99 at {args.clients} clients, WEB_PROCESSES={web_processes}: SQLite {s99:.1f} ms, "
                f"PostgreSQL {p99:.1f} ms: {s99 / p99:.2f}× (target ≤ 3×)"
            )
        for backend in backends:
            if (backend, web_processes) in results:
                read = results[backend, web_processes][1]
                print(
                    f"  videos read at {args.clients} clients, {backend}, WEB_PROCESSES={web_processes}: "
                    f"{read.result.rate:.0f} req/s, {read.cpu_ms_per_request:.2f} ms CPU/request"
                )
    if 1 in counts and 2 in counts:
        for backend in backends:
            one, two = results.get((backend, 1)), results.get((backend, 2))
            if one and two:
                print(
                    f"  {backend}: WEB_PROCESSES=2 vs 1: reads {two[1].result.rate / one[1].result.rate:.2f}×, "
                    f"note creates {two[0].result.rate / one[0].result.rate:.2f}× req/s"
                )


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
