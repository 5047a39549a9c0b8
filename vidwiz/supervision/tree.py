"""The root supervisor: one_for_one restarts with backoff and restart intensity.

- Children start in spec order; each counts as started once its probe says ready
  (a transient child, once it exited 0).
- A child that exits or fails its health checks is restarted after an exponential
  backoff. More than SUPERVISOR_MAX_RESTARTS restarts within SUPERVISOR_MAX_SECONDS
  stops the whole tree with a non-zero exit (escalation, not a restart loop).
- SIGTERM/SIGINT stop children in reverse start order (SIGTERM, then SIGKILL after
  SUPERVISOR_SHUTDOWN_TIMEOUT).
- SIGHUP replaces the rolling children (web, actors) one at a time: the replacement is
  ready before the old one stops, and the listening socket stays open in the supervisor
  throughout, so no connection is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import shutil
import signal
import socket
from collections.abc import Awaitable
from pathlib import Path

from config import Settings, SettingsError
from vidwiz.constants import LISTEN_BACKLOG, METRICS_ENV
from vidwiz.embedded_redis import EmbeddedRedis, RedisServerNotFound, embedded_redis
from vidwiz.supervision.child import Child
from vidwiz.supervision.specs import ChildSpec, build_specs

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0
STABLE_AFTER = 10.0  # a child that ran this long before failing restarts without delay build-up


class Slot:
    """One position of a permanent child (e.g. the second web process): keeps one ready instance."""

    def __init__(self, tree: Supervisor, spec: ChildSpec) -> None:
        self.tree = tree
        self.spec = spec
        self.current: Child | None = None
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()  # restarts and rolling replacement never overlap
        self._streak = 0  # failures in a row, each soon after its start

    async def keep(self) -> None:
        """Run until cancelled (shutdown) or until a restart is refused (escalation)."""
        if not await self._start():
            return
        while True:
            child = self.current
            assert child is not None
            reason = await child.watch()
            async with self._lock:
                if child is not self.current:
                    continue  # replaced by a rolling restart
                self.current = None
                allowed = self._may_restart(child, reason)
                await child.stop(self.tree.settings.supervisor_shutdown_timeout)
                if not allowed or not await self._start():
                    return

    async def replace(self) -> bool:
        """Start a new instance, wait until it is ready, then stop the old one."""
        async with self._lock:
            old = self.current
            if old is None:
                return True  # being restarted already
            new = await self.tree.spawn(self.spec)
            reason = await new.until_ready(self.spec.ready_timeout)
            if reason is not None:
                await new.stop(self.tree.settings.supervisor_shutdown_timeout)
                log.error("rolling restart stopped: replacement %s %s; %s keeps running", new.label, reason, old.label)
                return False
            self.current = new
            log.info("%s ready; stopping %s", new.label, old.label)
            await old.stop(self.tree.settings.supervisor_shutdown_timeout)
            return True

    async def _start(self) -> bool:
        while True:
            await asyncio.sleep(self._backoff())
            child = await self.tree.spawn(self.spec)
            reason = await child.until_ready(self.spec.ready_timeout)
            if reason is None:
                log.info("%s ready", child.label)
                self.current = child
                self.ready.set()
                return True
            allowed = self._may_restart(child, reason)
            await child.stop(self.tree.settings.supervisor_shutdown_timeout)
            if not allowed:
                return False

    def _may_restart(self, child: Child, reason: str) -> bool:
        self._streak = self._streak + 1 if child.uptime < STABLE_AFTER else 1
        return self.tree.allow_restart(child, reason, self._backoff())

    def _backoff(self) -> float:
        if self._streak == 0:
            return 0.0
        # The exponent stops growing far past the cap: a child may crash-loop for hours (never
        # escalating when BACKOFF_CAP spaces its restarts out), and 2**1024 overflows a float.
        doubling: int = 2 ** min(self._streak - 1, 64)
        return min(BACKOFF_BASE * doubling, BACKOFF_CAP)


class Supervisor:
    def __init__(self, settings: Settings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self.failure: str | None = None
        self._specs: list[ChildSpec] = []
        self._env: dict[str, str] = {}
        self._slots: dict[str, list[Slot]] = {}
        self._live: set[Child] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._restart_times: list[float] = []
        self._stopping = asyncio.Event()
        self._up = False
        self._rolling: asyncio.Task[None] | None = None

    async def run(self) -> int:
        """Start the tree, serve until told to stop or until escalation; the exit status."""
        raise_open_files_limit()
        try:
            metrics_dir = fresh_metrics_dir(self.settings.data_dir)
        except OSError as exc:
            log.error("cannot prepare the metrics directory under %s (DATA_DIR): %s", self.settings.data_dir, exc)
            return 1
        try:
            listen = listening_socket(self.settings.host, self.settings.port)
        except OSError as exc:
            log.error("cannot listen on %s:%s (HOST/PORT): %s", self.settings.host, self.settings.port, exc)
            return 1
        with listen:
            try:
                external = self.settings.redis_url or self.settings.redis_sentinels
                redis = None if external else embedded_redis(self.settings.data_dir)
            except (RedisServerNotFound, SettingsError) as exc:
                log.error("%s", exc)
                return 1
            except OSError as exc:
                log.error("cannot prepare the embedded Redis under %s (DATA_DIR): %s", self.settings.data_dir, exc)
                return 1
            self._specs = build_specs(self.settings, self.root, listen, redis)
            self._log_fleet_facts(redis)
            from vidwiz import metrics  # imported only once METRICS_ENV is set (see fresh_metrics_dir)

            metrics.zero_supervisor_series(spec.name for spec in self._specs if not spec.transient)
            self._env = {**self._child_env(redis), METRICS_ENV: str(metrics_dir)}
            return await self._serve(listen)

    def allow_restart(self, child: Child, reason: str, delay: float) -> bool:
        """Record a restart; False (and the tree stops) when the restart intensity is exceeded."""
        if self._stopping.is_set():
            return False
        now = asyncio.get_running_loop().time()
        window = self.settings.supervisor_max_seconds
        self._restart_times = [t for t in self._restart_times if now - t < window] + [now]
        if len(self._restart_times) > self.settings.supervisor_max_restarts:
            self.fail(
                f"giving up: {child.label} {reason}; restarting it would be restart {len(self._restart_times)} "
                f"within {window:g}s (SUPERVISOR_MAX_RESTARTS={self.settings.supervisor_max_restarts}, "
                f"SUPERVISOR_MAX_SECONDS={window:g}); stopping everything"
            )
            return False
        log.warning("%s %s; restarting in %.1fs", child.label, reason, delay)
        from vidwiz import metrics  # imported only once METRICS_ENV is set (see fresh_metrics_dir)

        metrics.SUPERVISOR_RESTARTS.labels(child.name).inc()
        return True

    def fail(self, message: str) -> None:
        if self.failure is None:
            self.failure = message
            log.error("%s", message)
        self._stopping.set()

    async def spawn(self, spec: ChildSpec) -> Child:
        child = Child(spec.name, spec.argv, env={**self._env, **spec.env}, probe=spec.probe())
        self._live.add(child)
        child.exited.add_done_callback(lambda _: self._exited(child))
        await child.spawn()
        return child

    def _exited(self, child: Child) -> None:
        self._live.discard(child)
        if child.proc is not None:
            from vidwiz import metrics  # imported only once METRICS_ENV is set (see fresh_metrics_dir)

            metrics.mark_process_dead(child.proc.pid)

    async def _serve(self, listen: socket.socket) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        try:
            if await self._unless_stopping(self._start_all()):
                self._up = True
                host, port = listen.getsockname()[:2]
                counts = ", ".join(f"{s.count} {s.name}" for s in self._specs if not s.transient)
                log.info("up: serving http://%s:%d (%s)", host, port, counts)
                await self._stopping.wait()
        finally:
            await self._stop_all()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        status = 1 if self.failure else 0
        log.info("stopped (exit status %d)", status)
        return status

    async def _start_all(self) -> None:
        for spec in self._specs:
            if spec.transient:
                if not await self._run_to_completion(spec):
                    return
                continue
            slots = [Slot(self, spec) for _ in range(spec.count)]
            self._slots[spec.name] = slots
            for slot in slots:
                self._track(asyncio.create_task(slot.keep(), name=f"keep {spec.name}"))
            await asyncio.gather(*(slot.ready.wait() for slot in slots))

    async def _run_to_completion(self, spec: ChildSpec) -> bool:
        child = await self.spawn(spec)
        await asyncio.wait([child.exited])
        if child.exited.result() == 0:
            log.info("%s finished", child.label)
            return True
        self.fail(
            f"giving up: {child.label} {child.describe_exit()} ({spec.name} must succeed before the next "
            "children start); stopping everything"
        )
        return False

    async def _unless_stopping(self, work: Awaitable[None]) -> bool:
        """Run `work` unless a stop comes first; True when it completed and no stop is pending."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        stop.cancel()
        await asyncio.wait([task, stop])
        if not task.cancelled():
            task.result()  # a bug in `work` propagates
        return not self._stopping.is_set()

    async def _stop_all(self) -> None:
        self._stopping.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        timeout = self.settings.supervisor_shutdown_timeout
        for spec in reversed(self._specs):
            children = [child for child in self._live if child.name == spec.name]
            if children:
                log.info("stopping %s", ", ".join(child.label for child in children))
                await asyncio.gather(*(child.stop(timeout) for child in children))

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        # A repeated signal changes nothing: SUPERVISOR_SHUTDOWN_TIMEOUT already bounds the stop.
        if self._stopping.is_set():
            log.info("%s: already stopping", sig.name)
            return
        log.info("%s: stopping the tree", sig.name)
        self._stopping.set()

    def _on_hangup(self) -> None:
        if not self._up or self._stopping.is_set():
            log.warning("SIGHUP ignored: the tree is not up")
        elif self._rolling is not None and not self._rolling.done():
            log.warning("SIGHUP ignored: a rolling restart is already running")
        else:
            self._rolling = self._track(asyncio.create_task(self._roll(), name="rolling restart"))

    async def _roll(self) -> None:
        log.info("SIGHUP: rolling restart of %s", ", ".join(s.name for s in self._specs if s.rolling))
        for spec in self._specs:
            for slot in self._slots.get(spec.name, []) if spec.rolling else []:
                if not await slot.replace():
                    return
        log.info("rolling restart done")

    def _track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Keeper and rolling tasks; a bug in one stops the tree instead of vanishing."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("supervisor task %r crashed", task.get_name(), exc_info=task.exception())
            self.fail(f"giving up: supervisor task {task.get_name()!r} crashed: {task.exception()!r}")

    def _log_fleet_facts(self, redis: EmbeddedRedis | None) -> None:
        """What an operator of several hosts must see at start: the fingerprint every host
        must share (also on /ready), and a host that cannot be one of many."""
        log.info("configuration fingerprint %s (must be equal on every host)", self.settings.fingerprint)
        if redis is not None and not self.settings.is_sqlite:
            log.warning(
                "SINGLE HOST ONLY: the database is PostgreSQL but Redis is this host's embedded one "
                "(REDIS_URL and REDIS_SENTINELS unset); other hosts on this database would not see its "
                "wake-ups, streams, quotas or jobs. Set REDIS_URL or REDIS_SENTINELS to the shared Redis "
                "to run more hosts"
            )

    def _child_env(self, redis: EmbeddedRedis | None) -> dict[str, str]:
        """Children see what the supervisor saw (environment over .env), the embedded Redis
        (its password inside REDIS_URL), and the project root on PYTHONPATH so
        `-m vidwiz.web`/`-m actors` resolve from any cwd."""
        env = dict(self.settings.extra)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH")]))
        if redis is not None:
            env["REDIS_URL"] = redis.url
        return env


def listening_socket(host: str, port: int) -> socket.socket:
    """The one socket all web children serve: bound here, inherited by each child, and
    kept open across restarts so connections queue rather than being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)


def fresh_metrics_dir(data_dir: Path) -> Path:
    """An empty directory for the tree's Prometheus samples (an earlier run's files would add
    to this run's counters), also set in this process's environment: prometheus_client picks
    its storage when first imported, so vidwiz.metrics is imported only after this."""
    path = data_dir / "metrics"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[METRICS_ENV] = str(path)
    return path


def raise_open_files_limit() -> None:
    """Children inherit it: 1,000 SSE streams need more than the usual soft limit of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
