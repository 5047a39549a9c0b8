"""Bench: login and `GET /v2/users/me` throughput and latency at 50 concurrent clients, and
`/v2/users/me` latency while logins run (argon2 runs off the event loop, so it should stay low).

The app runs in this process on a free 127.0.0.1 port; the load comes from a child process
(so client work does not share the server's event loop). Each scenario runs for a fixed time.
The server's event-loop lag (how late a 10 ms timer fires) is sampled throughout.

    python bench/auth.py                                  # SQLite temp file + Redis at 127.0.0.1:6379
    python bench/auth.py --db-url postgresql://postgres@127.0.0.1:5432/test
    python bench/auth.py --clients 50 --seconds 5 --login-clients 10
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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import load_settings  # noqa: E402
from vidwiz.app import create_app  # noqa: E402
from vidwiz.db import create_engine  # noqa: E402
from vidwiz.models import Base  # noqa: E402

PASSWORD = "bench-password-1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db-url", help="default: a SQLite file in a temp directory (PostgreSQL: a temp schema)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="keys get a unique prefix, removed after")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients per scenario")
    parser.add_argument("--login-clients", type=int, default=10, help="concurrent logins in the mixed scenario")
    parser.add_argument("--users", type=int, default=10, help="accounts registered for the logins")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each scenario")
    return parser.parse_args()


# -- load generator (child process) ---------------------------------------------------------------

def run_load(base: str, groups: list[dict], seconds: float) -> list[dict]:
    """Run request groups concurrently for `seconds`; per group: latencies of 2xx answers, error count."""
    return asyncio.run(_load(base, groups, seconds))


async def _load(base: str, groups: list[dict], seconds: float) -> list[dict]:
    started = time.perf_counter()
    results = [{"latencies": [], "errors": 0, "elapsed": 0.0} for _ in groups]
    deadline = started + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base, connector=connector) as http:
        async def client(group: dict, result: dict, n: int) -> None:
            i = n
            while time.perf_counter() < deadline:
                json_body = group["bodies"][i % len(group["bodies"])] if group.get("bodies") else None
                sent = time.perf_counter()
                async with http.request(group["method"], group["path"], json=json_body, headers=group.get("headers")) as resp:
                    await resp.read()
                    if resp.status < 300:
                        result["latencies"].append(time.perf_counter() - sent)
                    else:
                        result["errors"] += 1
                i += group["clients"]
            # A group's throughput counts until its last request answered (logins overrun the deadline).
            result["elapsed"] = max(result["elapsed"], time.perf_counter() - started)

        await asyncio.gather(*(client(g, r, n) for g, r in zip(groups, results) for n in range(g["clients"])))
    return results


# -- server side ----------------------------------------------------------------------------------

def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


class LoopLag:
    """How late a 10 ms timer fires on the server's loop: a blocked loop shows up here."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            self.samples.append(time.perf_counter() - started - 0.01)

    def take(self) -> list[float]:
        samples, self.samples = self.samples, []
        return samples


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.prefix = f"bench:{uuid.uuid4().hex[:10]}:"
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.lag = LoopLag()
        self.rows: list[tuple] = []

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
              f"clients={self.args.clients} seconds/scenario={self.args.seconds}")
        lag_task = asyncio.create_task(self.lag.run())
        try:
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                await self.measure(base, pool)
        finally:
            lag_task.cancel()
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
        logins, token = await self.make_users(base)
        login = {"method": "POST", "path": "/v2/auth/login", "bodies": logins}
        me = {"method": "GET", "path": "/v2/users/me", "headers": {"Authorization": f"Bearer {token}"}}
        loop = asyncio.get_running_loop()

        async def scenario(label: str, groups: list[tuple[str, dict, int]]) -> None:
            specs = [{**group, "clients": clients} for _, group, clients in groups]
            self.lag.take()
            results = await loop.run_in_executor(pool, run_load, base, specs, self.args.seconds)
            lag = self.lag.take()
            for (name, _, clients), result in zip(groups, results):
                self.rows.append((label, name, clients, result, lag))

        await loop.run_in_executor(pool, run_load, base, [{**me, "clients": 2}], 0.5)  # spawn + warm-up
        await scenario("logins alone", [("POST /v2/auth/login", login, self.args.clients)])
        await scenario("profile reads alone", [("GET /v2/users/me", me, self.args.clients)])
        await scenario("reads while logging in", [("GET /v2/users/me", me, self.args.clients),
                                                  ("POST /v2/auth/login", login, self.args.login_clients)])

    async def make_users(self, base: str) -> tuple[list[dict], str]:
        logins = [{"email": f"bench{n}-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD}
                  for n in range(self.args.users)]
        async with aiohttp.ClientSession(base) as http:
            async def register(creds: dict) -> None:
                async with http.post("/v2/auth/register", json={**creds, "name": "Bench User"}) as resp:
                    assert resp.status == 201, await resp.text()

            await asyncio.gather(*(register(creds) for creds in logins))
            async with http.post("/v2/auth/login", json=logins[0]) as resp:
                token = (await resp.json())["token"]
        return logins, token

    def report(self) -> None:
        print(f"{'scenario':<24} {'endpoint':<20} {'clients':>7} {'ok':>7} {'errors':>6} {'req/s':>8} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'loop lag p99/max ms':>20}")
        for label, name, clients, result, lag in self.rows:
            lat = result["latencies"]
            print(f"{label:<24} {name:<20} {clients:>7} {len(lat):>7} {result['errors']:>6} {len(lat) / result['elapsed']:>8.1f} "
                  f"{percentile(lat, 50) * 1000:>8.1f} {percentile(lat, 99) * 1000:>8.1f} {max(lat, default=0) * 1000:>8.1f} "
                  f"{percentile(lag, 99) * 1000:>11.1f}/{max(lag, default=0) * 1000:.1f}")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="vidwiz-bench-") as workdir:
        asyncio.run(Bench(args, Path(workdir)).run())


if __name__ == "__main__":
    main()
