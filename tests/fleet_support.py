"""Fixtures for fleet tests (issue 13): a fresh PostgreSQL database that several supervisor
trees share, as hosts of one deployment would; a real PgBouncer in front of it."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from config.settings import to_async_db_url
from tests.conftest import BACKENDS, PG_URL, eventually
from tests.supervised_tree import append_to, free_port


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
        pytest.skip("needs pgbouncer (apt-get install -y pgbouncer; .ci/run installs it)")
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
