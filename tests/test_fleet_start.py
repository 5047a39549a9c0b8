"""Start-up of a fleet (issue 13): supervisors of several hosts on one PostgreSQL and one Redis.

Two trees started at the same instant on a fresh database both become ready: migrations hold
an advisory lock, so the second waits, finds `head` and goes on (the test holds the lock first,
so both wait for it, then go at once). With MIGRATE_ON_START=false a
tree runs no `migrate` child (the deployment migrates in a release step).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from config.settings import to_async_db_url
from tests.conftest import REDIS_URL, eventually
from tests.supervised_tree import DEADLINE, ROOT, Tree, base_env, drop_keys, register_login_me
from vidwiz.db import MIGRATION_LOCK_KEY


def host_env(tmp_path: Path, name: str, db_url: str, prefix: str, **overrides: str) -> tuple[dict[str, str], Path]:
    """One host's environment: its own data directory and port, the shared database and Redis."""
    home = tmp_path / name
    home.mkdir()
    env = base_env(home, DB_URL=db_url, REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix, **overrides)
    return env, home


async def ready(http: aiohttp.ClientSession, tree: Tree) -> dict | None:
    """/ready's body once it says ready; fails at once if the supervisor gave up."""
    assert tree.proc.returncode is None, f"supervisor exited:\n{tree.output()}"
    try:
        async with http.get(f"{tree.base_url}/ready") as resp:
            return await resp.json() if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


async def test_two_supervisors_started_at_once_on_a_fresh_database_both_become_ready(tmp_path, fresh_pg_url):
    prefix = f"test:{os.urandom(6).hex()}:"
    hosts = [host_env(tmp_path, name, fresh_pg_url, prefix, ACTOR_PROCESSES="1") for name in ("a", "b")]
    engine = create_async_engine(to_async_db_url(fresh_pg_url))
    trees: list[Tree] = []
    try:
        # The test holds the migration lock until both hosts' migrations wait for it, so that
        # they then start together (they would race on creating the schema without the lock).
        async with engine.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            trees += await asyncio.gather(*(Tree.start(env, cwd=home) for env, home in hosts))

            async def both_waiting() -> bool:
                for tree in trees:
                    assert tree.proc.returncode is None, tree.output()
                waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                async with engine.connect() as conn:
                    return await conn.scalar(text(waiting)) == 2

            await eventually(both_waiting, "both migrations waiting for the lock", timeout=DEADLINE)
            assert not any("migrate[" in line and "finished" in line for tree in trees for line in tree.lines)
            await holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        async with aiohttp.ClientSession() as http:
            for tree in trees:
                await eventually(
                    lambda t=tree: ready(http, t), f"{tree.base_url}/ready", timeout=DEADLINE, explain=tree.output
                )
            bodies = [await ready(http, tree) for tree in trees]
        for tree in trees:
            assert "giving up" not in tree.output() and "SINGLE HOST ONLY" not in tree.output()
            await tree.wait_for(r"migrate\[\d+\] finished")
        # Hosts configured alike show one fingerprint, in the log and on /ready.
        logged = {(await tree.wait_for(r"configuration fingerprint (\w+)")).group(1) for tree in trees}
        assert logged == {body["fingerprint"] for body in bodies if body} and len(logged) == 1
    finally:
        for tree in trees:
            await tree.close()
        await engine.dispose()
        await drop_keys(prefix)


async def test_with_migrate_on_start_false_the_release_step_migrates_and_the_tree_runs_no_migrate_child(
    tmp_path, fresh_pg_url
):
    prefix = f"test:{os.urandom(6).hex()}:"
    env, home = host_env(tmp_path, "a", fresh_pg_url, prefix, ACTOR_PROCESSES="0", MIGRATE_ON_START="false")
    release = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head", env=env, cwd=home
    )
    assert await asyncio.wait_for(release.wait(), DEADLINE) == 0
    tree = await Tree.start(env, cwd=home)
    try:
        await tree.up()
        async with aiohttp.ClientSession() as http:
            await register_login_me(http, tree.base_url)
        assert "migrate[" not in tree.output()
    finally:
        await tree.close()
        await drop_keys(prefix)


async def test_postgresql_with_the_embedded_redis_warns_once_that_it_is_single_host(tmp_path, fresh_pg_url):
    home = tmp_path / "a"
    home.mkdir()
    tree = await Tree.start(base_env(home, DB_URL=fresh_pg_url, ACTOR_PROCESSES="0"), cwd=home)
    try:
        await tree.up()
        [warning] = [line for line in tree.lines if "SINGLE HOST ONLY" in line]
        assert "WARNING" in warning and "REDIS_URL" in warning
    finally:
        await tree.close()
