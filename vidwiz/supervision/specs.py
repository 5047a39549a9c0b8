"""Which children the tree runs, in start order, and how each one is checked."""

from __future__ import annotations

import shlex
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from config import Settings
from vidwiz.embedded_redis import EmbeddedRedis
from vidwiz.supervision.probes import HttpHealth, Probe, RedisPing, Settle

# arq workers have no per-process endpoint: one that stays up this long has connected and started.
ACTOR_SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    probe: Callable[[], Probe] = Probe  # a fresh probe for each instance
    env: Mapping[str, str] = field(default_factory=dict)  # added to the tree's environment
    count: int = 1
    transient: bool = False  # runs once and must exit 0 before the next children start
    rolling: bool = False  # restarted one at a time on SIGHUP
    ready_timeout: float = 60.0


def build_specs(settings: Settings, root: Path, listen: socket.socket, redis: EmbeddedRedis | None) -> list[ChildSpec]:
    """Start order: redis, migrate, web, actors, worker; stopped in reverse.

    `VIDWIZ_<NAME>_COMMAND` (e.g. VIDWIZ_ACTORS_COMMAND) replaces a child's command, for
    running it under a profiler or standing in for it in tests.
    """
    python = sys.executable
    specs = []
    if redis is not None:
        specs.append(ChildSpec("redis", redis.argv, probe=lambda: RedisPing(redis.url), ready_timeout=300.0))
    if settings.migrate_on_start:
        migrate = (python, "-m", "alembic", "-c", str(root / "alembic.ini"), "upgrade", "head")
        specs.append(ChildSpec("migrate", migrate, transient=True))
    specs += [
        ChildSpec(
            "web",
            (python, "-m", "vidwiz.web"),
            probe=lambda: HttpHealth(listen),
            count=settings.web_processes,
            rolling=True,
        ),
        ChildSpec(
            "actors",
            (python, "-m", "actors"),
            probe=lambda: Settle(ACTOR_SETTLE_SECONDS),
            count=settings.actor_processes,
            rolling=True,
        ),
        # Built-in task workers: they claim /v2/internal tasks over HTTP like external ones,
        # so they get the admin token (generated in local) and the port actually bound.
        ChildSpec(
            "worker",
            (python, "-m", "vidwiz.worker"),
            probe=lambda: Settle(ACTOR_SETTLE_SECONDS),
            env={"ADMIN_TOKEN": settings.admin_token or "", "PORT": str(listen.getsockname()[1])},
            count=settings.builtin_workers,
            rolling=True,
        ),
    ]
    return [_with_override(spec, settings) for spec in specs if spec.count > 0]


def _with_override(spec: ChildSpec, settings: Settings) -> ChildSpec:
    command = settings.extra.get(f"VIDWIZ_{spec.name.upper()}_COMMAND", "").strip()
    return replace(spec, argv=tuple(shlex.split(command))) if command else spec
