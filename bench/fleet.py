"""Bench: one host, then two, then three (network namespaces, tests/fleet.py), each a real
`supervisor.py` tree sharing one PostgreSQL database (through PgBouncer), one Redis and one
key prefix, under the same client load spread over the hosts:

- notes written (POST /v2/videos/{id}/notes, new videos create fetch tasks) and videos read
  (GET /v2/videos), closed loop, from a child process;
- 1,000 readiness streams (GET /v2/videos/{id}/stream) split over the hosts, driven to
  `done` by the internal writers (metadata, summary, transcript) sent through the hosts;
- 50 workers long-polling GET /v2/internal/tasks split over the hosts, claiming the
  transcript tasks the note writes create.

Prints per configuration: req/s and p99 of the writes, the reads and the internal writers,
streams completed, tasks claimed and duplicate claims (must be 0), and failed requests.
On 2 cores more hosts cannot mean more throughput; what must hold is correctness and no
collapse. Needs root (namespaces; otherwise loopback addresses, logged), PostgreSQL at
127.0.0.1:5432, `redis-server` and `pgbouncer`.

    python bench/fleet.py                          # 1, 2, 3 hosts; 20 s of load each
    python bench/fleet.py --hosts 1,3 --seconds 10 --streams 300
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from common import (
    LoadGroup,
    LoadResult,
    client_process_pool,
    drive,
    percentile,
    poll_until,
    print_table,
    raise_open_files_limit,
    register_and_login,
)
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from config.settings import to_async_db_url
from tests.conftest import ADMIN_TOKEN
from tests.fleet import open_fleet_network, running
from vidwiz.models import Video

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WRITERS = (  # in an order that ends with the video ready
    ("metadata", {"metadata": {"title": "Fleet bench", "duration": 60}}),
    ("summary", {"summary": "A short summary."}),
    ("transcript", {"transcript": [{"text": "hello", "offset": 0.0, "duration": 1.0}]}),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="1,2,3", help="fleet sizes to run, in turn")
    parser.add_argument("--seconds", type=float, default=20.0, help="load per configuration")
    parser.add_argument("--writers", type=int, default=20, help="closed-loop clients writing notes")
    parser.add_argument("--readers", type=int, default=20, help="closed-loop clients listing videos")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--videos", type=int, default=400, help="videos the note writes are spread over")
    return parser.parse_args()


@dataclass
class Row:
    hosts: int
    isolated: bool
    writes: LoadResult
    reads: LoadResult
    readiness: LoadResult
    streams_done: int
    streams_failed: int
    reconnects: int = 0
    claims: Counter = field(default_factory=Counter)
    poll_errors: int = 0


# -- the load process -----------------------------------------------------------------------------


def run_fleet_load(bases: list[str], groups: list[list[LoadGroup]], seconds: float) -> list[list[LoadResult]]:
    """In the load process: `groups[i]` against `bases[i]`, all at once; a `repeat`ed group for
    `seconds`, any other until its requests are sent."""
    return asyncio.run(_fleet_load(bases, groups, seconds))


async def _fleet_load(bases: list[str], groups: list[list[LoadGroup]], seconds: float) -> list[list[LoadResult]]:
    deadline = time.perf_counter() + seconds
    sessions = [aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0)) for base in bases]
    try:
        per_host = [
            asyncio.gather(*(drive(http, group, deadline if group.repeat else None) for group in host_groups))
            for http, host_groups in zip(sessions, groups, strict=True)
        ]
        return [list(results) for results in await asyncio.gather(*per_host)]
    finally:
        for http in sessions:
            await http.close()


def merged(results: list[LoadResult]) -> LoadResult:
    total = LoadResult()
    for result in results:
        total.latencies += result.latencies
        total.errors.update(result.errors)
        total.elapsed = max(total.elapsed, result.elapsed)
    return total


# -- streams and pollers in this process ------------------------------------------------------------


class Stream:
    """A readiness stream's client: reconnects, as EventSource does, when the server closes
    the stream (after 60 s) before `done`."""

    def __init__(self, base: str, video_id: str) -> None:
        self.base = base
        self.video_id = video_id
        self.opened = False
        self.done = False
        self.failed = False
        self.reconnects = 0

    async def run(self, http: aiohttp.ClientSession) -> None:
        headers = {"X-Guest-Session-ID": f"bench-{self.video_id}"}
        try:
            while not self.done:
                async with http.get(f"{self.base}/v2/videos/{self.video_id}/stream", headers=headers) as resp:
                    if resp.status != 200:
                        self.failed = True
                        return
                    async for line in resp.content:
                        if line.startswith(b"event: snapshot"):
                            self.opened = True
                        elif line.startswith(b"event: done"):
                            self.done = True
                            break
                self.reconnects += not self.done
        except aiohttp.ClientError:
            self.failed = True


async def poller(http: aiohttp.ClientSession, base: str, row: Row, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with http.get(
                f"{base}/v2/internal/tasks", params={"type": "transcript", "timeout": "5"}, headers=ADMIN
            ) as resp:
                if resp.status == 200:
                    task = await resp.json()
                    # A task claimed and never finished is offered again once stale (a new
                    # attempt): a duplicate is one attempt handed out twice.
                    row.claims[(task["task_id"], task["retry_count"])] += 1
                elif resp.status != 204:
                    row.poll_errors += 1
        except aiohttp.ClientError:
            row.poll_errors += 1
            await asyncio.sleep(0.1)


# -- one configuration -------------------------------------------------------------------------------


async def add_videos(db_url: str, video_ids: list[str]) -> None:
    engine = create_async_engine(to_async_db_url(db_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Video), [{"video_id": video_id} for video_id in video_ids])
    finally:
        await engine.dispose()


async def run_configuration(args: argparse.Namespace, size: int, workdir: Path) -> Row:
    async with open_fleet_network(workdir, hosts=size, server_connections=80) as net:
        env = net.env(BUILTIN_SUMMARIES="false", SIGNUP_ADDRESS_LIMIT="100000")
        async with running(net.hosts(env)) as hosts:
            bases = [host.base_url for host in hosts]
            print(f"{size} host(s) up: {', '.join(bases)} (namespaces: {net.network.isolated})", flush=True)
            async with aiohttp.ClientSession(bases[0]) as http:
                token = await register_and_login(http)
            stream_videos = [f"s{uuid.uuid4().hex[:10]}" for _ in range(args.streams)]
            await add_videos(net.direct_db_url, stream_videos)

            streams = [Stream(bases[i % size], video_id) for i, video_id in enumerate(stream_videos)]
            stop = asyncio.Event()
            row = Row(size, net.network.isolated, LoadResult(), LoadResult(), LoadResult(), 0, 0)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
                readers = [asyncio.create_task(stream.run(http)) for stream in streams]
                await poll_until(lambda: all(s.opened or s.failed for s in streams), timeout=120)
                pollers = [asyncio.create_task(poller(http, bases[i % size], row, stop)) for i in range(args.pollers)]

                groups = [load_groups(args, host, size, token, stream_videos) for host in range(size)]
                loop = asyncio.get_running_loop()
                with client_process_pool() as pool:
                    results = await loop.run_in_executor(pool, run_fleet_load, bases, groups, args.seconds)
                await poll_until(lambda: all(s.done or s.failed for s in streams), timeout=30)
                stop.set()
                await asyncio.gather(*pollers)
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
            row.writes = merged([per_host[0] for per_host in results])
            row.reads = merged([per_host[1] for per_host in results])
            row.readiness = merged([per_host[2] for per_host in results])
            row.streams_done = sum(s.done for s in streams)
            row.streams_failed = sum(s.failed for s in streams)
            row.reconnects = sum(s.reconnects for s in streams)
            return row


def load_groups(
    args: argparse.Namespace, host: int, size: int, token: str, stream_videos: list[str]
) -> list[LoadGroup]:
    """Host `host`'s share of the load: its writers and readers, and the internal writes of
    the streams' videos it is given (every third, of three hosts), sent once each."""
    headers = {"Authorization": f"Bearer {token}"}
    writes = [
        ("POST", f"/v2/videos/fb{(host + size * i) % args.videos:09d}/notes", {"timestamp": "0:01", "text": f"n{i}"})
        for i in range(1000)
    ]
    reads = [("GET", f"/v2/videos?page={1 + i % 5}", None) for i in range(100)]
    readiness = [
        ("POST", f"/v2/internal/videos/{video_id}/{kind}", body)
        for kind, body in WRITERS
        for video_id in stream_videos[host::size]
    ]
    return [
        LoadGroup(writes, share(args.writers, host, size), headers, repeat=True),
        LoadGroup(reads, share(args.readers, host, size), headers, repeat=True),
        LoadGroup(readiness, share(12, host, size), ADMIN),
    ]


def share(total: int, host: int, size: int) -> int:
    """Host `host`'s part of `total` clients split as evenly as can be."""
    return total // size + (1 if host < total % size else 0)


# -- the table ----------------------------------------------------------------------------------------


def report(args: argparse.Namespace, rows: list[Row]) -> None:
    print()
    print(
        f"load per configuration: {args.seconds:g} s, {args.writers} note writers + {args.readers} video readers "
        f"(closed loop), {args.streams} readiness streams, {args.pollers} long-pollers, all split over the hosts"
    )

    def rate_p99(result: LoadResult) -> tuple[str, str]:
        return f"{result.rate:.0f}", f"{percentile(result.latencies, 99) * 1000:.0f}"

    print_table(
        [
            ("hosts", 5),
            ("notes/s", 8),
            ("p99 ms", 7),
            ("videos/s", 9),
            ("p99 ms", 7),
            ("internal/s", 11),
            ("p99 ms", 7),
            ("streams done", 13),
            ("reconnects", 11),
            ("claims", 7),
            ("dup claims", 11),
            ("failed requests", 16),
        ],
        (
            (
                row.hosts,
                *rate_p99(row.writes),
                *rate_p99(row.reads),
                *rate_p99(row.readiness),
                f"{row.streams_done}/{args.streams}",
                row.reconnects,
                sum(row.claims.values()),
                sum(n - 1 for n in row.claims.values() if n > 1),
                sum(row.writes.errors.values())
                + sum(row.reads.errors.values())
                + sum(row.readiness.errors.values())
                + row.streams_failed
                + row.poll_errors,
            )
            for row in rows
        ),
    )
    for row in rows:
        if not row.isolated:
            print(f"  {row.hosts} host(s): loopback addresses, not namespaces (see the warning above)")
        errors = row.writes.errors + row.reads.errors + row.readiness.errors
        if errors or row.streams_failed or row.poll_errors:
            print(
                f"  {row.hosts} host(s): statuses {dict(errors)}, streams failed {row.streams_failed}, "
                f"poll errors {row.poll_errors}"
            )


async def main_async(args: argparse.Namespace) -> None:
    raise_open_files_limit()
    rows = []
    for size in [int(n) for n in args.hosts.split(",")]:
        with tempfile.TemporaryDirectory(prefix="vidwiz-fleet-bench-") as workdir:
            rows.append(await run_configuration(args, size, Path(workdir)))
    report(args, rows)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    main()
