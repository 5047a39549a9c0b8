"""What the bench scripts share: the app on a free port with a throw-away database and Redis
prefix, a closed-loop load generator, percentiles, event-loop lag, and table printing.

Imported as `common` (the scripts run as `python bench/<name>.py`, so bench/ is on
sys.path); importing it puts the repository root on sys.path for `config` and `vidwiz`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import resource
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web
from arq.constants import job_key_prefix
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import Settings, load_settings  # noqa: E402
from vidwiz.app import create_app  # noqa: E402
from vidwiz.db import create_engine  # noqa: E402
from vidwiz.events import RedisKeys  # noqa: E402
from vidwiz.models import Base  # noqa: E402

ADMIN_TOKEN = "bench-admin-token"
SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PASSWORD = "bench-password-1"


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db-url", help="default: a SQLite file in a temp directory (PostgreSQL: a temp schema)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="keys get a unique prefix, removed after")


async def poll_until(condition: Callable[[], bool], *, timeout: float | None = None, interval: float = 0.01) -> bool:
    """Check `condition` every `interval` s until it holds (True) or `timeout` s have passed (False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not condition():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


# -- numbers and tables ---------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank; NaN when there is nothing to rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def print_table(columns: list[tuple[str, int]], rows: Iterable[Iterable[Any]]) -> None:
    """A header and rows; a column's width > 0 aligns right, < 0 left (as in f"{x:>7}")."""

    def line(cells: Iterable[Any]) -> str:
        return " ".join(f"{cell:{'<' if width < 0 else '>'}{abs(width)}}" for cell, (_, width) in zip(cells, columns))

    print(line(name for name, _ in columns))
    for row in rows:
        print(line(row))


class LoopLag:
    """How late a short timer fires on this event loop: a blocked or starved loop shows up here."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.samples.append(time.perf_counter() - started - self.interval)

    def take(self) -> list[float]:
        samples, self.samples = self.samples, []
        return samples


# -- processes and ports --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_open_files_limit() -> int:
    """Soft limit up to the hard one (children inherit it); returns the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def client_process_pool() -> ProcessPoolExecutor:
    """One spawned child for the load, so client work does not share the server's event loop."""
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))


# -- the app under test ---------------------------------------------------------------------------


def new_prefix() -> str:
    return f"bench:{uuid.uuid4().hex[:10]}:"


def bench_env(
    workdir: Path, *, db_url: str | None, redis_url: str, prefix: str, db_file: str = "bench.db", **extra: str
) -> dict[str, str]:
    """The app's environment: a SQLite file in `workdir` unless `db_url`, Redis keys under `prefix`."""
    return {
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DB_URL": db_url or f"sqlite:///{workdir}/{db_file}",
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "DATA_DIR": str(workdir / "data"),
        "TRANSCRIPT_DIR": str(workdir / "transcripts"),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


async def clean_redis(redis_url: str, prefix: str) -> None:
    """Remove the run's keys: everything under the prefix, and the arq jobs still queued
    (arq keeps those under global keys)."""
    redis = Redis.from_url(redis_url)
    try:
        queued = await redis.zrange(RedisKeys(prefix).arq_queue, 0, -1)
        keys = [job_key_prefix + job_id.decode() for job_id in queued]
        keys += [key async for key in redis.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@dataclass
class RunningApp:
    app: web.Application
    settings: Settings
    engine: AsyncEngine
    base: str

    @property
    def db_kind(self) -> str:
        return "sqlite" if self.settings.is_sqlite else "postgresql"


@contextlib.asynccontextmanager
async def fresh_database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database with every table: the SQLite file as configured, or a
    temporary PostgreSQL schema dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = None if settings.is_sqlite else create_async_engine(settings.async_db_url)
    if admin is not None:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(settings, search_path=None if admin is None else schema)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield engine
    finally:
        await engine.dispose()
        if admin is not None:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.dispose()


@contextlib.asynccontextmanager
async def serve_app(env: dict[str, str]) -> AsyncIterator[RunningApp]:
    """The app in this process on a free 127.0.0.1 port, over a fresh database; on exit it
    stops, and the database and the run's Redis keys are removed."""
    settings = load_settings(env, env_file=None)
    try:
        async with fresh_database(settings) as engine:
            app = create_app(settings, engine=engine)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                host, port = runner.addresses[0][:2]
                yield RunningApp(app, settings, engine, f"http://{host}:{port}")
            finally:
                await runner.cleanup()
    finally:
        await clean_redis(settings.redis_url, settings.redis_key_prefix)


async def register(http: aiohttp.ClientSession, email: str, password: str = PASSWORD) -> None:
    """A new account on the app `http` is based at."""
    body = {"email": email, "password": password, "name": "Bench User"}
    async with http.post("/v2/auth/register", json=body) as resp:
        assert resp.status == 201, await resp.text()


async def register_and_login(http: aiohttp.ClientSession, email: str | None = None, password: str = PASSWORD) -> str:
    """A new account; its JWT."""
    email = email or f"bench-{uuid.uuid4().hex[:8]}@example.com"
    await register(http, email, password)
    async with http.post("/v2/auth/login", json={"email": email, "password": password}) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["token"]


# -- closed-loop load ------------------------------------------------------------------------------

Request = tuple[str, str, Any]  # method, path, JSON body or None


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # of 2xx answers
    errors: Counter = field(default_factory=Counter)  # status -> count
    elapsed: float = 0.0  # until the last answer

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else float("nan")


@dataclass
class LoadGroup:
    """`clients` connections sending `requests` (taken in turn, each once; `repeat` cycles them)."""

    requests: list[Request]
    clients: int
    headers: dict[str, str] | None = None
    repeat: bool = False


async def drive(http: aiohttp.ClientSession, group: LoadGroup, deadline: float | None = None) -> LoadResult:
    """Closed loop: each client sends its next request when the previous one answered, until
    the requests run out or `deadline` (perf_counter) passes."""
    result = LoadResult()
    pending: Iterator[Request] = itertools.cycle(group.requests) if group.repeat else iter(group.requests)
    started = time.perf_counter()

    async def client() -> None:
        for method, path, body in pending:  # one shared iterator: a request is sent once
            if deadline is not None and time.perf_counter() >= deadline:
                return
            sent = time.perf_counter()
            async with http.request(method, path, json=body, headers=group.headers) as resp:
                await resp.read()
                if resp.status < 300:
                    result.latencies.append(time.perf_counter() - sent)
                else:
                    result.errors[resp.status] += 1
            result.elapsed = time.perf_counter() - started

    await asyncio.gather(*(client() for _ in range(group.clients)))
    return result


def run_load(base: str, groups: list[LoadGroup], seconds: float | None = None) -> list[LoadResult]:
    """In the load process: run the groups at the same time (for `seconds`, or until each has
    sent its requests); one result per group."""
    return asyncio.run(_run_load(base, groups, seconds))


async def _run_load(base: str, groups: list[LoadGroup], seconds: float | None) -> list[LoadResult]:
    deadline = None if seconds is None else time.perf_counter() + seconds
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0)) as http:
        return list(await asyncio.gather(*(drive(http, group, deadline) for group in groups)))


# -- the real supervised tree ----------------------------------------------------------------------

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def add_tree_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="checkout whose supervisor.py runs (e.g. a worktree of main)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests and streams: a short run")


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min, {os.cpu_count()} cores)"


@dataclass
class Tree:
    """`python supervisor.py` of a checkout, on a fresh database; the embedded Redis."""

    proc: asyncio.subprocess.Process
    base: str
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    def processes(self, module: str | None = None) -> list[psutil.Process]:
        """The tree's processes (the supervisor included), or those running `python -m module`."""
        root = psutil.Process(self.proc.pid)
        found = [root, *root.children(recursive=True)]
        if module is None:
            return found
        return [p for p in found if module in p.cmdline()]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


@contextlib.asynccontextmanager
async def fresh_pg_database(url: str) -> AsyncIterator[str]:
    """A new PostgreSQL database beside the one `url` names (dropped afterwards): its URL."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@contextlib.asynccontextmanager
async def supervised_tree(
    tree_root: Path, workdir: Path, *, db: str, web_processes: int = 1, **extra: str
) -> AsyncIterator[Tree]:
    """The tree of `tree_root` on `db` ("sqlite": a file in `workdir`; else a PostgreSQL URL, on
    a fresh database), the embedded Redis, one actor process; up (serving) when this yields."""
    async with contextlib.AsyncExitStack() as stack:
        db_url = (
            f"sqlite:///{workdir}/vidwiz.db"
            if db == "sqlite"
            else await stack.enter_async_context(fresh_pg_database(db))
        )
        port = free_port()
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(
            ENVIRONMENT="test",
            SECRET_KEY=SECRET_KEY,
            ADMIN_TOKEN=ADMIN_TOKEN,
            DB_URL=db_url,
            DATA_DIR=str(workdir / "data"),
            TRANSCRIPT_DIR=str(workdir / "transcripts"),
            HOST="127.0.0.1",
            PORT=str(port),
            LOG_LEVEL="WARNING",
            WEB_PROCESSES=str(web_processes),
            ACTOR_PROCESSES="1",
            PYTHONPATH=str(tree_root),
            SUPERVISOR_SHUTDOWN_TIMEOUT="5",
            **extra,
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(tree_root / "supervisor.py"),
            env=env,
            cwd=tree_root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=1 << 20,
        )
        tree = Tree(proc, f"http://127.0.0.1:{port}", env)

        async def read() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                tree.lines.append(raw.decode(errors="replace").rstrip())

        reader = asyncio.create_task(read())
        try:
            await wait_until_up(tree, web_processes)
            yield tree
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            reader.cancel()


async def wait_until_up(tree: Tree, web_processes: int, timeout: float = 90) -> None:
    """Every web process and the actor process started, and the app answering /ready."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if tree.proc.returncode is not None:
                break
            if len(tree.processes("vidwiz.web")) >= web_processes and tree.processes("actors"):
                try:
                    async with http.get(f"{tree.base}/ready") as resp:
                        if resp.status == 200:
                            await asyncio.sleep(1.0)  # the other web processes finish their start-up
                            return
                except aiohttp.ClientError:
                    pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the tree did not come up:\n" + "\n".join(tree.lines[-30:]))
