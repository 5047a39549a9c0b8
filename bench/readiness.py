"""Bench: readiness streams (GET /v2/videos/{id}/stream) on the real supervised tree
(`python supervisor.py`: one web process, one actor process, the embedded Redis; SQLite unless
--db-url).

Three rows, one tree:
- burst: `--burst` guest streams (one video each) opened at once: each stream's open latency
  (request sent -> `snapshot` received) p50/p99 (target p99 < 300 ms) and the web process's CPU per
  open; then every video's summary is POSTed to the internal writer (its metadata and transcript
  are seeded), and every stream must get `done` (delivery p99 from the POST being sent).
- held: `--held` streams held by the one web process: opened at once, then the tree's CPU
  (every process) and the web process's while they sit idle (target < 2 %), then every video
  done: all must get `done`.
- churn: a steady population of streams, one opened and the oldest closed every 0.1 s, while
  /metrics is scraped: the open-streams gauge must equal the client's count of some moment in the
  second before the scrape.

    python bench/readiness.py                 # 1,000 burst, 10,000 held, 10 s churn
    python bench/readiness.py --quick         # 1,000 burst, 2,000 held, 5 s churn
    python bench/readiness.py --tree /work/wt-perf-base
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import aiohttp
from common import (
    ADMIN_TOKEN,
    Tree,
    add_tree_options,
    cpu_seconds,
    load_average,
    percentile,
    poll_until,
    raise_open_files_limit,
    supervised_tree,
)
from sqlalchemy import insert

from config import load_settings
from vidwiz.db import create_engine, utcnow
from vidwiz.models import Video

GAUGE = re.compile(r'^vidwiz_sse_streams_open\{route="/v2/videos/\{video_id\}/stream"\} ([0-9.e+]+)$', re.M)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tree_options(parser)
    parser.add_argument("--db-url", help="PostgreSQL server (default: a SQLite file)")
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--held", type=int, help="default 10000; --quick 2000")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU sampling")
    parser.add_argument("--churn-seconds", type=float, help="default 10; --quick 5")
    parser.add_argument("--churn-population", type=int, default=100)
    parser.add_argument("--profile", type=Path, help="py-spy flame graph (SVG) of the web process during the burst")
    args = parser.parse_args()
    args.held = args.held if args.held is not None else (2000 if args.quick else 10000)
    args.churn_seconds = args.churn_seconds or (5.0 if args.quick else 10.0)
    return args


class Stream:
    """One guest client: when it was opened, when its snapshot came, whether `done` came."""

    def __init__(self, video_id: str):
        self.video_id = video_id
        self.sent = 0.0
        self.snapshot_at = 0.0
        self.done_at = 0.0
        self.timed_out = False  # the server's 60 s limit came first
        self.snapshot = asyncio.Event()

    async def run(self, http: aiohttp.ClientSession, base: str) -> None:
        self.sent = time.perf_counter()
        headers = {"X-Guest-Session-ID": f"bench-{self.video_id}"}
        async with http.get(f"{base}/v2/videos/{self.video_id}/stream", headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"stream {self.video_id}: HTTP {resp.status} {await resp.text()}")
            async for line in resp.content:
                if line.startswith(b"event: snapshot"):
                    self.snapshot_at = time.perf_counter()
                    self.snapshot.set()
                elif line.startswith(b"event: done"):
                    self.done_at = time.perf_counter()
                    return
                elif line.startswith(b"event: timeout"):
                    self.timed_out = True
                    return


async def seed(tree: Tree, video_ids: list[str]) -> None:
    """Videos with metadata and transcript: a summary makes each ready."""
    engine = create_engine(load_settings(tree.env, env_file=None))
    now = utcnow()
    rows = [
        {
            "video_id": v,
            "title": "Bench video",
            "video_metadata": {"title": "Bench video"},
            "transcript_available": True,
            "created_at": now,
            "updated_at": now,
        }
        for v in video_ids
    ]
    async with engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            await conn.execute(insert(Video), rows[start : start + 1000])
    await engine.dispose()


async def open_all(http: aiohttp.ClientSession, base: str, streams: list[Stream]) -> list[asyncio.Task]:
    """Open every stream at once; returns when each has its snapshot (or 120 s passed)."""
    tasks = [asyncio.create_task(s.run(http, base)) for s in streams]
    waiting = asyncio.gather(*(s.snapshot.wait() for s in streams))
    try:
        await asyncio.wait_for(waiting, 120)
    except TimeoutError:
        pass
    return tasks


async def summarize_all(http: aiohttp.ClientSession, base: str, video_ids: list[str]) -> dict[str, float]:
    """POST a summary for every video, 50 in flight; video id -> when its POST was sent."""
    sent: dict[str, float] = {}
    gate = asyncio.Semaphore(50)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def one(video_id: str) -> None:
        async with gate:
            sent[video_id] = time.perf_counter()
            url = f"{base}/v2/internal/videos/{video_id}/summary"
            async with http.post(url, json={"summary": "A short summary."}, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"summary {video_id}: HTTP {resp.status}")

    await asyncio.gather(*(one(v) for v in video_ids))
    return sent


def opened_ms(streams: list[Stream]) -> list[float]:
    return [(s.snapshot_at - s.sent) * 1000 for s in streams if s.snapshot_at]


def p50_p99(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.0f} ms, p99 {percentile(values, 99):.0f} ms" if values else "none"


async def finish(http: aiohttp.ClientSession, base: str, streams: list[Stream], tasks: list[asyncio.Task]):
    """Make every video ready; (streams done, delivery p99 from the POST being sent)."""
    started = time.perf_counter()
    sent = await summarize_all(http, base, [s.video_id for s in streams])
    print(f"    {len(streams)} summary POSTs took {time.perf_counter() - started:.1f} s")
    await poll_until(lambda: all(t.done() for t in tasks), timeout=30, interval=0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delivered = [(s.done_at - sent[s.video_id]) * 1000 for s in streams if s.done_at]
    if timed_out := sum(s.timed_out for s in streams):
        print(f"    {timed_out} streams got `timeout` (60 s after they opened) before their video was ready")
    return sum(1 for s in streams if s.done_at), delivered


async def gauge(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        match = GAUGE.search(await resp.text())
    return float(match.group(1)) if match else 0.0


async def churn(http: aiohttp.ClientSession, base: str, video_ids: list[str], seconds: float, population: int):
    """(samples, samples matching the client's count within the preceding second, max excess)."""
    open_streams: deque[tuple[Stream, asyncio.Task]] = deque()
    history: list[tuple[float, int]] = []  # (time, streams the client holds open)
    ids = iter(video_ids)

    def open_one() -> None:
        stream = Stream(next(ids))
        open_streams.append((stream, asyncio.create_task(stream.run(http, base))))

    for _ in range(population):
        open_one()
    await asyncio.wait_for(asyncio.gather(*(s.snapshot.wait() for s, _ in open_streams)), 60)
    samples: list[tuple[float, float]] = []

    async def scrape() -> None:
        while True:
            value = await gauge(http, base)
            samples.append((time.perf_counter(), value))
            await asyncio.sleep(0.2)

    scraper = asyncio.create_task(scrape())
    history.append((time.perf_counter(), len(open_streams)))
    ends = time.perf_counter() + seconds
    while time.perf_counter() < ends:
        await asyncio.sleep(0.1)
        open_one()
        _, oldest = open_streams.popleft()
        oldest.cancel()  # the client closes the connection
        history.append((time.perf_counter(), len(open_streams)))
    scraper.cancel()
    for _, task in open_streams:
        task.cancel()
    await asyncio.gather(scraper, *(t for _, t in open_streams), return_exceptions=True)
    matching, excess = 0, 0.0
    for at, value in samples:
        counts = [n for t, n in history if at - 1.0 <= t <= at] or [n for t, n in history if t <= at][-1:]
        matching += value in counts
        excess = max(excess, value - max(counts, default=0))
    drained = await poll_until_async(lambda: gauge(http, base), 0.0, timeout=20)
    return len(samples), matching, excess, drained


async def poll_until_async(read, wanted: float, timeout: float) -> float | None:
    """Seconds until `await read()` == wanted (None: not within `timeout`)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if await read() == wanted:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    return None


async def run(args: argparse.Namespace, workdir: Path) -> None:
    burst_ids = [f"b{i:010d}" for i in range(args.burst)]
    held_ids = [f"h{i:010d}" for i in range(args.held)]
    churn_ids = [f"c{i:010d}" for i in range(args.churn_population + int(args.churn_seconds * 10) + 10)]
    print(f"readiness bench: tree {args.tree}, {load_average()} at the start")
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with (
        supervised_tree(args.tree, workdir, db=args.db_url or "sqlite") as tree,
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
    ):
        await seed(tree, burst_ids + held_ids + churn_ids)
        everything = tree.processes()
        web = tree.processes("vidwiz.web")
        print(f"  tree: {len(everything)} processes ({len(web)} web); DB {tree.env['DB_URL'].split(':')[0]}")

        streams = [Stream(v) for v in burst_ids]
        profiler = None
        if args.profile:
            profiler = await asyncio.create_subprocess_exec(
                "py-spy", "record", "--nonblocking", "-o", str(args.profile), "--pid", str(web[0].pid)
            )
            await asyncio.sleep(1.0)  # py-spy attached
        web_before = cpu_seconds(web)
        tasks = await open_all(http, tree.base, streams)
        # What bounds the burst (all opens finish together): the web process's CPU per open, which
        # the machine's other load does not inflate the way it does latency.
        open_cpu_ms = 1000 * (cpu_seconds(web) - web_before) / args.burst
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            await profiler.wait()
        opened = opened_ms(streams)
        done, delivered = await finish(http, tree.base, streams, tasks)
        print(
            f"  burst: {args.burst} streams opened at once: {len(opened)} snapshots, open {p50_p99(opened)}"
            f" (target p99 < 300 ms), web CPU {open_cpu_ms:.2f} ms per open;"
            f" done {done}/{args.burst}, delivery {p50_p99(delivered)}; {load_average()}"
        )

        streams = [Stream(v) for v in held_ids]
        tasks = await open_all(http, tree.base, streams)
        opened = opened_ms(streams)
        await asyncio.sleep(1.0)  # the burst settles
        tree_before, web_before, started = cpu_seconds(everything), cpu_seconds(web), time.perf_counter()
        await asyncio.sleep(args.idle)
        elapsed = time.perf_counter() - started
        idle_tree = 100 * (cpu_seconds(everything) - tree_before) / elapsed
        idle_web = 100 * (cpu_seconds(web) - web_before) / elapsed
        held_gauge = await gauge(http, tree.base)
        done, delivered = await finish(http, tree.base, streams, tasks)
        print(
            f"  held: {args.held} streams by one web process: open {p50_p99(opened)}; gauge {held_gauge:.0f}; "
            f"idle CPU over {args.idle:g} s: tree {idle_tree:.2f} %, web {idle_web:.2f} % of one core "
            f"(target < 2 %); done {done}/{args.held}, delivery {p50_p99(delivered)}; {load_average()}"
        )

        samples, matching, excess, drained = await churn(
            http, tree.base, churn_ids, args.churn_seconds, args.churn_population
        )
        print(
            f"  churn: {args.churn_population} streams, 10 opened + 10 closed per second for {args.churn_seconds:g} s: "
            f"gauge = client count within 1 s in {matching}/{samples} scrapes, gauge above it by up to "
            f"{excess:.0f}; all closed -> gauge 0 after "
            f"{'never (20 s)' if drained is None else f'{drained:.2f} s'}; {load_average()}"
        )


def main() -> int:
    args = parse_args()
    nofile = raise_open_files_limit()
    if nofile < args.held + 500:
        print(f"RLIMIT_NOFILE hard limit {nofile} is too low for {args.held} streams", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vidwiz-bench-readiness-") as workdir:
        asyncio.run(run(args, Path(workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
