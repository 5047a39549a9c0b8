"""Bench: task claim latency with many long-polling workers, and API latency beside them.

Runs the app in-process on a free 127.0.0.1 port. N workers long-poll
`GET /v2/internal/tasks?type=transcript` (and submit a result for every claim) while tasks
are created one by one, the way note creation creates them (commit, then a wake-up).
Meanwhile another client measures `GET /v2/users/me`, first with no pollers (baseline),
then with all workers waiting.

Prints claim latency (task committed -> worker has the response) p50/p99/max, duplicate and
missing claims, and /v2/users/me p50/p99 both times.

    python bench/tasks.py                                   # SQLite temp file + Redis at 127.0.0.1:6379
    python bench/tasks.py --db-url postgresql://postgres@127.0.0.1:5432/test
    python bench/tasks.py --redis-url redis://other:6379/0 --workers 50 --tasks 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web
from common import (
    ADMIN_TOKEN,
    LoopLag,
    add_backend_options,
    bench_env,
    ms,
    new_prefix,
    percentile,
    poll_until,
    register_and_login,
    serve_app,
)
from sqlalchemy import func, select

from vidwiz.context import SESSIONS, TASK_WAKEUPS, UNITS
from vidwiz.tasks.models import Task
from vidwiz.tasks.service import FETCH_TRANSCRIPT, ensure_task


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_options(parser)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between task creations")
    parser.add_argument("--baseline-requests", type=int, default=300)
    parser.add_argument("--budget", type=float, default=120.0, help="hard limit for the whole run, seconds")
    return parser.parse_args()


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.created: dict[int, float] = {}
        self.claims: list[tuple[int, float]] = []
        self.results_failed = 0

    async def run(self, workdir: Path) -> None:
        env = bench_env(workdir, db_url=self.args.db_url, redis_url=self.args.redis_url, prefix=new_prefix())
        async with serve_app(env) as running:
            print(
                f"db={running.db_kind} redis={self.args.redis_url} app={running.base} "
                f"workers={self.args.workers} tasks={self.args.tasks} interval={self.args.interval}s"
            )
            async with asyncio.timeout(self.args.budget):
                await self.measure(running.app, running.base)

    async def measure(self, app: web.Application, base: str) -> None:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with (
            aiohttp.ClientSession(base) as user_http,
            aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0), headers=admin) as worker_http,
        ):
            token = await register_and_login(user_http)
            baseline = [await self.timed_me(user_http, token) for _ in range(self.args.baseline_requests)]

            workers = [asyncio.create_task(self.worker(worker_http)) for _ in range(self.args.workers)]
            hub = app[TASK_WAKEUPS]
            await poll_until(lambda: hub.waiting(FETCH_TRANSCRIPT) >= self.args.workers)
            idle = [await self.timed_me(user_http, token) for _ in range(self.args.baseline_requests)]

            done = asyncio.Event()
            during: list[float] = []
            me_loop = asyncio.create_task(self.me_until(user_http, token, done, during))
            lag = LoopLag(0.005)
            lag_loop = asyncio.create_task(lag.run())
            started = time.perf_counter()
            await self.produce(app)
            await poll_until(lambda: len({task_id for task_id, _ in self.claims}) >= self.args.tasks)
            elapsed = time.perf_counter() - started
            done.set()
            await me_loop
            lag_loop.cancel()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        self.report(baseline, idle, during, elapsed, lag.take())

    async def timed_me(self, http: aiohttp.ClientSession, token: str) -> float:
        start = time.perf_counter()
        async with http.get("/v2/users/me", headers={"Authorization": f"Bearer {token}"}) as resp:
            await resp.read()
            assert resp.status == 200
        return time.perf_counter() - start

    async def me_until(self, http, token, done: asyncio.Event, out: list[float]) -> None:
        while not done.is_set():
            out.append(await self.timed_me(http, token))

    async def produce(self, app: web.Application) -> None:
        """Create tasks one by one as note creation does: commit, then wake the pollers (what the
        unit of work's dispatcher does after the commit)."""
        sessions, dispatcher = app[SESSIONS], app[UNITS].dispatcher
        for n in range(self.args.tasks):
            async with sessions() as session:
                await ensure_task(session, FETCH_TRANSCRIPT, f"bench{n:06d}")
                task_id = await session.scalar(select(func.max(Task.id)))  # ours: the bench is the only producer
                await session.commit()
            self.created[task_id] = time.perf_counter()  # committed: claimable from now on
            await dispatcher.wake_pollers(FETCH_TRANSCRIPT)
            await asyncio.sleep(self.args.interval)

    async def worker(self, http: aiohttp.ClientSession) -> None:
        while True:
            async with http.get("/v2/internal/tasks", params={"type": "transcript", "timeout": "30"}) as resp:
                if resp.status == 204:
                    continue
                body = await resp.json()
                self.claims.append((body["task_id"], time.perf_counter()))
            result = {"video_id": body["task_details"]["video_id"], "success": True, "transcript": [{"text": "hi"}]}
            async with http.post(f"/v2/internal/tasks/{body['task_id']}/result", json=result) as resp:
                await resp.read()
                if resp.status != 200:
                    self.results_failed += 1

    def report(self, baseline, idle, during, elapsed: float, lags: list[float]) -> None:
        latencies = [answered - self.created[task_id] for task_id, answered in self.claims if task_id in self.created]
        counts = Counter(task_id for task_id, _ in self.claims)
        duplicates = sum(n - 1 for n in counts.values() if n > 1)
        missing = self.args.tasks - len(counts)
        print(
            f"tasks created/claimed:        {self.args.tasks}/{len(counts)} in {elapsed:.2f}s "
            f"({len(counts) / elapsed:.0f} claims/s)"
        )
        print(
            f"claim latency p50/p99/max: {ms(percentile(latencies, 50))} {ms(percentile(latencies, 99))} "
            f"{ms(max(latencies))}"
        )
        print(f"duplicate claims:             {duplicates}")
        print(f"missing claims:               {missing}")
        print(f"failed result submissions:    {self.results_failed}")
        print(
            f"event-loop lag p50/p99:    {ms(percentile(lags, 50))} {ms(percentile(lags, 99))}  "
            "(app and clients share one loop)"
        )
        for label, values in (
            ("no pollers", baseline),
            (f"{self.args.workers} pollers idle", idle),
            ("while claiming", during),
        ):
            print(
                f"/v2/users/me {label:<18} p50/p99: {ms(percentile(values, 50))} {ms(percentile(values, 99))} "
                f"(n={len(values)}, mean {ms(statistics.fmean(values))})"
            )


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="vidwiz-bench-") as workdir:
        asyncio.run(Bench(args).run(Path(workdir)))


if __name__ == "__main__":
    main()
