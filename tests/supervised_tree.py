"""Run `python supervisor.py` as a real process in tests, and read what it says.

The supervisor logs `name[pid] ready` when a child has started; tests find child pids
there, and use psutil to check what is alive. Every process of a tree carries a unique
VIDWIZ_TEST_TREE marker in its environment, so orphans are found wherever they went.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import BinaryIO

import aiohttp
import psutil
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL, WAIT, eventually

ROOT = Path(__file__).resolve().parent.parent
SUPERVISOR = ROOT / "supervisor.py"
READY = re.compile(r"\b(\w+)\[(\d+)\] ready\b")
DEADLINE = 90.0  # generous: only reached when something is broken
MARKER = "VIDWIZ_TEST_TREE"


def append_to(log_path: Path) -> BinaryIO:
    """A process's log file, for its stdout and stderr (a local file: opening it does not block)."""
    return open(log_path, "ab")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tree:
    def __init__(self, proc: asyncio.subprocess.Process, marker: str, host: str, port: int) -> None:
        self.proc = proc
        self.marker = marker
        self.base_url = f"http://{host}:{port}"
        self.lines: list[str] = []
        self._seen: set[psutil.Process] = set()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path, wrapper: Sequence[str] = ()) -> Tree:
        """`wrapper`: a command the supervisor runs under (`ip netns exec NAME`: another host)."""
        marker = uuid.uuid4().hex
        proc = await asyncio.create_subprocess_exec(
            *wrapper,
            sys.executable,
            str(SUPERVISOR),
            env={**env, MARKER: marker},
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=1 << 20,
            process_group=0,  # like a command started from a shell
        )
        return cls(proc, marker, env.get("HOST", "127.0.0.1"), int(env["PORT"]))

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, pattern: str, start: int = 0) -> re.Match:
        """The first line from index `start` on that matches; fails if the supervisor exits first."""
        regex = re.compile(pattern)

        def matching_line() -> re.Match | None:
            finished = self._reader.done()  # read before scanning: the last lines count too
            for line in self.lines[start:]:
                if match := regex.search(line):
                    return match
            assert not finished, f"supervisor exited before {pattern!r}:\n{self.output()}"
            return None

        return await eventually(
            matching_line, f"a line matching {pattern!r}", timeout=DEADLINE, interval=0.05, explain=self.output
        )

    async def up(self) -> None:
        await self.wait_for(r"up: serving http://")
        self.remember_descendants()

    def ready_pids(self, name: str) -> list[int]:
        """Pids of `name` children reported ready and still running, oldest first."""
        pids = [int(m.group(2)) for line in self.lines if (m := READY.search(line)) and m.group(1) == name]
        return [pid for pid in dict.fromkeys(pids) if _running(pid)]

    async def exit_status(self) -> int:
        """Wait for the supervisor to exit (and for its last output)."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), DEADLINE)
        except TimeoutError:
            raise AssertionError(f"supervisor did not exit:\n{self.output()}") from None
        await self._reader
        return code

    async def signal_and_wait(self, sig: signal.Signals) -> int:
        self.remember_descendants()
        self.proc.send_signal(sig)
        return await self.exit_status()

    def remember_descendants(self) -> None:
        """Note the supervisor's current descendants: redis-server overwrites its environment
        with its process title, so the marker alone does not find it."""
        try:
            self._seen.update(psutil.Process(self.proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass

    def leftovers(self) -> list[psutil.Process]:
        """Live processes of this tree (anywhere on the machine) other than the supervisor."""
        found = {proc for proc in self._seen if _running(proc)}
        for proc in psutil.process_iter():
            try:
                if proc.pid != self.proc.pid and proc.environ().get(MARKER) == self.marker and _running(proc):
                    found.add(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return list(found)

    async def assert_no_leftovers(self) -> None:
        alive = self.leftovers()
        if alive:  # give exiting processes a moment to be gone, then they must be
            _, alive = psutil.wait_procs(alive, timeout=15)
        assert not alive, f"orphans: {[(p.pid, p.cmdline()) for p in alive]}\n{self.output()}"

    async def close(self) -> None:
        """Teardown safety net: never leave a tree behind a failed test."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for proc in self.leftovers():
            proc.kill()
        self._reader.cancel()


def _running(proc: int | psutil.Process) -> bool:
    """Alive and not a zombie (a psutil.Process also checks the pid was not reused)."""
    try:
        proc = psutil.Process(proc) if isinstance(proc, int) else proc
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def base_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The process environment for a tree: this machine's basics, a fresh SQLite DB and data dir."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")}
    env.update(
        ENVIRONMENT="test",
        SECRET_KEY="supervisor-test-secret-key-0123456789abcdef",
        ADMIN_TOKEN="supervisor-test-admin",
        DATA_DIR=str(tmp_path / "data"),
        DB_URL=f"sqlite:///{tmp_path}/vidwiz.db",
        PORT=str(free_port()),
        SUPERVISOR_SHUTDOWN_TIMEOUT="5",
    )
    env.update(overrides)
    return env


def real_redis_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """`base_env` on the test Redis, under a key prefix of its own (drop it with `drop_keys`)."""
    prefix = f"test:{os.urandom(6).hex()}:"
    return base_env(tmp_path, REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix, **overrides)


async def drop_keys(prefix: str) -> None:
    """Delete a tree's keys from the test Redis."""
    client = aioredis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def register_login_me(session: aiohttp.ClientSession, base_url: str) -> dict:
    """register → login → /v2/users/me; returns the user."""
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": "password123", "name": "Tree Tester"}
    async with session.post(f"{base_url}/v2/auth/register", json=body) as resp:
        assert resp.status == 201, await resp.text()
    async with session.post(f"{base_url}/v2/auth/login", json={"email": email, "password": "password123"}) as resp:
        assert resp.status == 200, await resp.text()
        token = (await resp.json())["token"]
    async with session.get(f"{base_url}/v2/users/me", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        user = await resp.json()
    assert user["email"] == email
    return user


async def sse_events(
    resp: aiohttp.ClientResponse, line_timeout: float | None = None
) -> AsyncIterator[tuple[str, dict]]:
    """`(event, data)` per SSE frame of a live response; keep-alive comments skipped. With
    `line_timeout`, each line must arrive within it."""
    lines: list[str] = []
    while raw := await asyncio.wait_for(resp.content.readline(), line_timeout):
        line = raw.decode().rstrip("\n")
        if line:
            lines.append(line)
            continue
        fields = dict(item.split(": ", 1) for item in lines if not item.startswith(":"))
        lines = []
        if "event" in fields:
            yield fields["event"], json.loads(fields["data"])


async def next_frame(resp: aiohttp.ClientResponse, events: Collection[str]) -> dict:
    """The data of the next frame whose event is one of `events` (each line within WAIT)."""
    async with contextlib.aclosing(sse_events(resp, WAIT)) as frames:
        async for event, data in frames:
            if event in events:
                return data
    raise AssertionError("the stream ended")
