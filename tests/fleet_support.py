"""Fixtures for fleet tests (issue 13): a fresh PostgreSQL database that several supervisor
trees share, as hosts of one deployment would; a real PgBouncer in front of it; a Redis
primary with a replica and three sentinels."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from config.settings import to_async_db_url
from tests.conftest import BACKENDS, PG_URL, WAIT, eventually
from tests.supervised_tree import append_to, free_port
from vidwiz.embedded_redis import find_redis_server


async def pg_admin(sql: str) -> None:
    """One statement on the test server's maintenance connection (CREATE/DROP DATABASE)."""
    engine = create_async_engine(to_async_db_url(PG_URL), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


@pytest.fixture
async def fresh_pg_url() -> AsyncIterator[str]:
    """DB_URL of a new, empty PostgreSQL database (dropped afterwards): nothing migrated yet."""
    if "postgres" not in BACKENDS:
        pytest.skip("needs PostgreSQL (VIDWIZ_TEST_BACKENDS excludes it)")
    name = f"fleet_{uuid.uuid4().hex[:10]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    await pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
async def pgbouncer_url(fresh_pg_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """DB_URL of `fresh_pg_url` through a private PgBouncer in transaction pooling mode with two
    server connections, so that consecutive transactions of one client really move between
    server connections (what breaks prepared statements)."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.access(binary, os.X_OK):
        pytest.fail("needs pgbouncer: apt-get install -y pgbouncer (.ci/run installs it)")
    home = tmp_path / "pgbouncer"
    home.mkdir()
    upstream = make_url(fresh_pg_url)
    port = free_port()
    (home / "users.txt").write_text(f'"{upstream.username}" ""\n')
    (home / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={upstream.host} port={upstream.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {home / "users.txt"}
pool_mode = transaction
default_pool_size = 2
max_client_conn = 500
"""
    )
    # PgBouncer refuses to run as root: it then drops to the postgres user (after reading its files).
    user = ("-u", "postgres") if os.geteuid() == 0 else ()
    with append_to(home / "pgbouncer.log") as log:
        proc = await asyncio.create_subprocess_exec(
            binary, *user, str(home / "pgbouncer.ini"), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:

        async def accepting() -> bool:
            assert proc.returncode is None, f"pgbouncer exited:\n{(home / 'pgbouncer.log').read_text()}"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await eventually(accepting, "pgbouncer accepting connections")
        yield upstream.set(port=port).render_as_string(hide_password=False)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


SENTINEL_MASTER = "mymaster"


class SentinelRedis:
    """A real Redis primary, one replica and three sentinels on free loopback ports. Sentinels
    fail over quickly: the primary is down after 500 ms of silence, quorum 2."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.binary = find_redis_server()
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.servers: dict[int, asyncio.subprocess.Process] = {}

    @property
    def sentinels(self) -> str:
        """REDIS_SENTINELS for a tree."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    async def _spawn(self, port: int, *args: str) -> None:
        directory = self.home / str(port)
        directory.mkdir()
        with append_to(directory / "log") as log:
            self.servers[port] = await asyncio.create_subprocess_exec(
                self.binary, *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=directory
            )

    async def start(self) -> None:
        plain = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        await self._spawn(self.primary_port, "--port", str(self.primary_port), *plain)
        replica_of = ("--replicaof", "127.0.0.1", str(self.primary_port))
        await self._spawn(self.replica_port, "--port", str(self.replica_port), *plain, *replica_of)
        for port in self.sentinel_ports:
            conf = self.home / f"sentinel-{port}.conf"  # sentinels rewrite their file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} 500\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} 2000\n"
            )
            await self._spawn(port, str(conf), "--sentinel")
        await eventually(self._all_acquainted, "sentinels that know the replica and each other", timeout=WAIT)

    async def _ask(self, port: int, *command: str) -> Any:
        client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, decode_responses=True)
        try:
            return await client.execute_command(*command)
        except (RedisError, OSError):
            return None
        finally:
            await client.aclose()

    async def _all_acquainted(self) -> bool:
        # A failover needs a quorum of sentinels that know each other and a replica to promote.
        for port in self.sentinel_ports:
            replicas = await self._ask(port, "SENTINEL", "REPLICAS", SENTINEL_MASTER)
            others = await self._ask(port, "SENTINEL", "SENTINELS", SENTINEL_MASTER)
            if not replicas or len(others or []) < 2:
                return False
        return True

    async def primary(self) -> int | None:
        """The primary's port, when all three sentinels agree on it."""
        answers = {
            tuple(await self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER) or ())
            for port in self.sentinel_ports
        }
        [answer] = answers if len(answers) == 1 else [()]
        return int(answer[1]) if answer else None

    async def fail_over(self, how: str) -> int:
        """`kill`: SIGKILL the primary, the sentinels notice and promote the replica. `command`:
        SENTINEL FAILOVER, after which the old primary, still running, is demoted to a replica
        (its clients disconnected). Returns the new primary's port once all sentinels agree."""
        old_port = self.primary_port
        if how == "kill":
            old = self.servers[old_port]
            old.kill()
            await old.wait()
        else:
            assert await self._ask(self.sentinel_ports[0], "SENTINEL", "FAILOVER", SENTINEL_MASTER) == "OK"

        async def promoted() -> int | None:
            port = await self.primary()
            role = await self._ask(self.replica_port, "ROLE")
            if port != self.replica_port or not role or role[0] != "master":
                return None
            if how != "kill" and (await self._ask(old_port, "ROLE") or [""])[0] != "slave":
                return None
            return port

        return await eventually(promoted, f"the sentinels promoting the replica ({how})", timeout=WAIT)

    async def stop(self) -> None:
        for proc in self.servers.values():
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


@pytest.fixture
async def sentinel_redis(tmp_path: Path) -> AsyncIterator[SentinelRedis]:
    """A primary, a replica and three sentinels (SentinelRedis), stopped afterwards."""
    home = tmp_path / "redis"
    home.mkdir()
    topology = SentinelRedis(home)
    try:
        await topology.start()
        yield topology
    finally:
        await topology.stop()
