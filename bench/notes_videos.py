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
import multiprocessing
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import load_settings  # noqa: E402
from vidwiz.app import create_app  # noqa: E402
from vidwiz.db import create_engine  # noqa: E402
from vidwiz.models import Base, Note, Task, Video  # noqa: E402

PASSWORD = "bench-password-1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db-url", help="default: a SQLite file in a temp directory (PostgreSQL: a temp schema)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="keys get a unique prefix, removed after")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    parser.add_argument("--videos", type=int, default=200, help="distinct videos the notes are spread over")
    return parser.parse_args()


# -- load generator (child process) ---------------------------------------------------------------

def run_load(base: str, requests: list[tuple[str, str, dict | None]], headers: dict, clients: int) -> dict:
    """Send every request once with `clients` concurrent connections; latencies of 2xx answers."""
    return asyncio.run(_load(base, requests, headers, clients))


async def _load(base: str, requests: list[tuple[str, str, dict | None]], headers: dict, clients: int) -> dict:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    pending = iter(requests)
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0), headers=headers) as http:
        async def client() -> None:
            for method, path, body in pending:  # one shared iterator: each request is sent once
                started = time.perf_counter()
                async with http.request(method, path, json=body) as resp:
                    await resp.read()
                    if resp.status < 300:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors[resp.status] = errors.get(resp.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


# -- server side ----------------------------------------------------------------------------------

def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def video_id(n: int) -> str:
    return f"bench{n:06d}"  # 11 characters of the YouTube id alphabet


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.prefix = f"bench:{uuid.uuid4().hex[:10]}:"
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.rows: list[tuple[str, dict]] = []
        self.checks: list[str] = []

    def settings(self):
        return load_settings({
            "ENVIRONMENT": "test",
            "SECRET_KEY": f"bench-{uuid.uuid4().hex}{uuid.uuid4().hex}",
            "ADMIN_TOKEN": uuid.uuid4().hex,
            "DB_URL": self.args.db_url or f"sqlite:///{self.workdir}/bench.db",
            "REDIS_URL": self.args.redis_url,
            "REDIS_KEY_PREFIX": self.prefix,
            "DATA_DIR": str(self.workdir / "data"),
            "TRANSCRIPT_DIR": str(self.workdir / "transcripts"),
            "LOG_LEVEL": "WARNING",
        }, env_file=None)

    async def run(self) -> None:
        settings = self.settings()
        postgres = not settings.is_sqlite
        admin_engine = create_async_engine(settings.async_db_url) if postgres else None
        if postgres:
            async with admin_engine.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        engine = create_engine(settings, search_path=self.schema if postgres else None)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        runner = web.AppRunner(create_app(settings, engine=engine), access_log=None, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        print(f"db={'postgresql' if postgres else 'sqlite'} redis={self.args.redis_url} app={base} "
              f"clients={self.args.clients} requests/scenario={self.args.requests} videos={self.args.videos}")
        try:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                await self.measure(base, pool)
            await self.check(engine)
        finally:
            await runner.cleanup()
            await engine.dispose()
            if postgres:
                async with admin_engine.begin() as conn:
                    await conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
                await admin_engine.dispose()
            await self.clean_redis()
        self.report()

    async def clean_redis(self) -> None:
        redis = Redis.from_url(self.args.redis_url)
        keys = [key async for key in redis.scan_iter(match=f"{self.prefix}*", count=500)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()

    async def measure(self, base: str, pool: ProcessPoolExecutor) -> None:
        headers = {"Authorization": f"Bearer {await self.make_user(base)}"}
        loop = asyncio.get_running_loop()
        n, videos, clients = self.args.requests, self.args.videos, self.args.clients

        async def scenario(label: str, requests: list[tuple[str, str, dict | None]]) -> None:
            self.rows.append((label, await loop.run_in_executor(pool, run_load, base, requests, headers, clients)))

        await loop.run_in_executor(pool, run_load, base, [("GET", "/v2/videos", None)] * 20, headers, 2)  # warm-up
        creates = [
            ("POST", f"/v2/videos/{video_id(i % videos)}/notes", {"timestamp": f"{i // 60}:{i % 60:02d}", "text": f"note {i}",
                                                                  "video_title": f"Bench video {i % videos}"})
            for i in range(n)
        ]
        await scenario(f"POST notes ({videos} videos, first touch creates video + tasks)", creates)
        await scenario("GET /v2/videos (pages 1..10, default sort)",
                       [("GET", f"/v2/videos?page={1 + i % 10}", None) for i in range(n)])
        await scenario("GET /v2/videos?q=… (title search, sort title_asc)",
                       [("GET", f"/v2/videos?q=video%20{i % 100}&sort=title_asc", None) for i in range(n)])

    async def make_user(self, base: str) -> str:
        creds = {"email": f"bench-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
        async with aiohttp.ClientSession(base) as http:
            async with http.post("/v2/auth/register", json={**creds, "name": "Bench User"}) as resp:
                assert resp.status == 201, await resp.text()
            async with http.post("/v2/auth/login", json=creds) as resp:
                return (await resp.json())["token"]

    async def check(self, engine) -> None:
        """Correctness under the load: every note stored, exactly one task per (video, type)."""
        async with engine.connect() as conn:
            notes = await conn.scalar(select(func.count()).select_from(Note))
            videos = await conn.scalar(select(func.count()).select_from(Video))
            tasks = await conn.scalar(select(func.count()).select_from(Task))
        self.checks.append(f"notes stored={notes} (sent {self.args.requests}), videos={videos}, "
                           f"tasks={tasks} (expected {2 * videos}: one fetch_transcript + one fetch_metadata each)")

    def report(self) -> None:
        print()
        print(f"{'scenario':<62} {'ok':>6} {'errors':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for label, result in self.rows:
            lat = result["latencies"]
            errors = sum(result["errors"].values())
            print(f"{label:<62} {len(lat):>6} {errors:>8} {len(lat) / result['elapsed']:>8.0f} "
                  f"{percentile(lat, 50) * 1000:>8.1f} {percentile(lat, 99) * 1000:>8.1f}")
            if errors:
                print(f"    error statuses: {result['errors']}")
        for line in self.checks:
            print(line)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="vidwiz-bench-") as workdir:
        asyncio.run(Bench(args, Path(workdir)).run())


if __name__ == "__main__":
    main()
