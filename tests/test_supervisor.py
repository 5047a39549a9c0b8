"""The process tree, as real processes: `python supervisor.py` with web, actors and migrations.

Trees use the real Redis (a unique key prefix each) and a SQLite file in a temp dir;
the embedded Redis is exercised by the SIGKILL test here and by test_startup.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError

from tests.supervised_tree import Tree, base_env, drop_keys, real_redis_env, register_login_me

MODULE = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tree(tmp_path_factory):
    """One tree for the lifecycle tests below (in file order, the last one stops it):
    two web processes and one actor process."""
    tmp_path = tmp_path_factory.mktemp("tree")
    env = real_redis_env(tmp_path, WEB_PROCESSES="2", ACTOR_PROCESSES="1")
    running = await Tree.start(env, cwd=tmp_path)
    try:
        await running.up()
        yield running
    finally:
        await running.close()
        await drop_keys(env["REDIS_KEY_PREFIX"])


@pytest_asyncio.fixture(loop_scope="module")
async def http():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


@MODULE
async def test_serves_health_and_the_auth_flow(tree, http):
    async with http.get(f"{tree.base_url}/health") as resp:
        assert resp.status == 200
    await register_login_me(http, tree.base_url)
    assert len(tree.ready_pids("web")) == 2
    assert "migrate[" in tree.output() and "finished" in tree.output()


@MODULE
async def test_sigkilled_web_child_comes_back_and_serves(tree, http):
    before = tree.ready_pids("web")
    mark = len(tree.lines)
    os.kill(before[0], signal.SIGKILL)
    match = await tree.wait_for(r"web\[(\d+)\] ready", start=mark)
    assert int(match.group(1)) not in before
    await tree.wait_for(rf"web\[{before[0]}\] was killed by SIGKILL; restarting", start=mark)
    assert len(tree.ready_pids("web")) == 2
    await register_login_me(http, tree.base_url)


@MODULE
async def test_sigkilled_actors_child_comes_back(tree):
    [before] = tree.ready_pids("actors")
    mark = len(tree.lines)
    os.kill(before, signal.SIGKILL)
    match = await tree.wait_for(r"actors\[(\d+)\] ready", start=mark)
    assert int(match.group(1)) != before
    assert tree.ready_pids("actors") == [int(match.group(1))]


@MODULE
async def test_sighup_rolls_web_and_actors_while_a_client_keeps_getting_answers(tree, http):
    web_before, actors_before = set(tree.ready_pids("web")), set(tree.ready_pids("actors"))
    mark = len(tree.lines)
    statuses: list[int] = []

    async def keep_asking() -> None:
        # A fresh connection per request: a refused or reset connection would raise here.
        while True:
            async with http.get(f"{tree.base_url}/health") as resp:
                statuses.append(resp.status)

    client = asyncio.ensure_future(keep_asking())
    tree.proc.send_signal(signal.SIGHUP)
    await tree.wait_for("rolling restart done", start=mark)
    assert not client.done(), client.exception()
    client.cancel()

    assert statuses and set(statuses) == {200}
    web_after, actors_after = set(tree.ready_pids("web")), set(tree.ready_pids("actors"))
    assert len(web_after) == 2 and not web_after & web_before
    assert len(actors_after) == 1 and not actors_after & actors_before
    for pid in web_before | actors_before:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@MODULE
async def test_sigterm_stops_the_whole_tree_without_orphans(tree):
    tree.remember_descendants()
    assert len(tree.leftovers()) == 3  # two web, one actors
    assert await tree.signal_and_wait(signal.SIGTERM) == 0, tree.output()
    await tree.assert_no_leftovers()
    stops = [line for line in tree.lines if '"message": "stopping ' in line]
    assert "actors[" in stops[0] and "web[" in stops[1], stops  # reverse start order


async def test_a_sigkilled_supervisor_leaves_no_children_behind(tmp_path):
    env = base_env(tmp_path)  # embedded Redis: it must go too
    running = await Tree.start(env, cwd=tmp_path)
    try:
        await running.up()
        assert {p.name() for p in running.leftovers()} >= {"redis-server"}
        running.remember_descendants()
        running.proc.kill()
        await running.proc.wait()
        await running.assert_no_leftovers()
    finally:
        await running.close()


async def test_the_embedded_redis_wants_a_password_that_is_never_shown(tmp_path):
    """arq unpickles job payloads: the embedded Redis refuses a client without the password,
    which lives in DATA_DIR/secrets.json (0600) and in the children's REDIS_URL only: never in
    the tree's output (the children's lines included) nor on a command line."""
    env = base_env(tmp_path)  # no REDIS_URL: the embedded Redis
    running = await Tree.start(env, cwd=tmp_path)
    try:
        await running.up()
        secrets_file = Path(env["DATA_DIR"]) / "secrets.json"
        password = json.loads(secrets_file.read_text())["REDIS_PASSWORD"]
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        port = int((await running.wait_for(r"started redis\[\d+\]: .* --port (\d+)")).group(1))

        anonymous = aioredis.Redis(host="127.0.0.1", port=port)
        with pytest.raises(AuthenticationError, match="Authentication required"):  # NOAUTH
            await anonymous.set("arq:queue", "pickled code")
        await anonymous.aclose()
        authenticated = aioredis.Redis(host="127.0.0.1", port=port, password=password)
        assert await authenticated.ping()
        await authenticated.aclose()
        async with aiohttp.ClientSession() as http:  # web uses it (login throttling counters)
            await register_login_me(http, running.base_url)
        [redis_server] = [p for p in running.leftovers() if p.name() == "redis-server"]
        assert password not in " ".join(redis_server.cmdline())

        assert await running.signal_and_wait(signal.SIGTERM) == 0, running.output()
        assert password not in running.output()
    finally:
        await running.close()


async def test_a_child_that_crashes_instantly_trips_the_restart_intensity(tmp_path):
    crash = f"{sys.executable} -c 'raise SystemExit(3)'"
    env = real_redis_env(tmp_path, VIDWIZ_ACTORS_COMMAND=crash, SUPERVISOR_MAX_RESTARTS="3")
    running = await Tree.start(env, cwd=tmp_path)
    try:
        assert await running.exit_status() == 1, running.output()
        [verdict] = [line for line in running.lines if "giving up" in line]
        assert "actors[" in verdict and "exited with code 3" in verdict, verdict
        assert "SUPERVISOR_MAX_RESTARTS=3" in verdict
        await running.assert_no_leftovers()
    finally:
        await running.close()


async def test_a_failed_migration_stops_before_web_starts(tmp_path):
    env = real_redis_env(tmp_path, VIDWIZ_MIGRATE_COMMAND=f"{sys.executable} -c 'raise SystemExit(4)'")
    running = await Tree.start(env, cwd=tmp_path)
    try:
        assert await running.exit_status() == 1, running.output()
        assert "giving up: migrate[" in running.output() and "exited with code 4" in running.output()
        assert "started web[" not in running.output()
    finally:
        await running.close()


async def test_a_bad_setting_is_one_line_naming_it_and_exit_2(tmp_path):
    running = await Tree.start(base_env(tmp_path, WEB_PROCESSES="many"), cwd=tmp_path)
    try:
        assert await running.exit_status() == 2, running.output()
        assert running.lines == ["supervisor: invalid configuration: WEB_PROCESSES: expected an integer, got 'many'"]
    finally:
        await running.close()
