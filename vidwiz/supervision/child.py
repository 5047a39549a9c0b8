"""One OS process of the tree: spawn it, forward its output, watch it, stop it."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO

from vidwiz.supervision.probes import Probe

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 5.0
HEALTH_MISSES = 3  # consecutive failed checks before a running child is restarted
READY_POLL = 0.1
LINE_LIMIT = 1 << 20
DRAIN_TIMEOUT = 1.0  # output still buffered after the exit is forwarded within this

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """Runs in the forked child before exec: the kernel sends it SIGTERM when the
    supervisor dies, even by SIGKILL, so no child outlives the tree (Linux only)."""
    if _prctl is None:
        return None

    def preexec() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


class Child:
    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], probe: Probe) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.env = {**env, **probe.env}
        self.probe = probe
        self.proc: asyncio.subprocess.Process | None = None
        self.exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._spawn_error: str | None = None
        self._started_at = 0.0

    @property
    def label(self) -> str:
        return f"{self.name}[{self.proc.pid if self.proc else '-'}]"

    @property
    def uptime(self) -> float:
        return asyncio.get_running_loop().time() - self._started_at

    async def spawn(self) -> None:
        """Start the process in its own process group (a terminal's Ctrl-C reaches only the
        supervisor, which then stops children in order). A command that cannot be executed
        counts as an immediate exit."""
        self._started_at = asyncio.get_running_loop().time()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                pass_fds=self.probe.pass_fds,
                process_group=0,
                preexec_fn=_die_with_parent(os.getpid()),
                limit=LINE_LIMIT,
            )
        except OSError as exc:
            self._spawn_error = f"could not be started ({' '.join(self.argv)}): {exc}"
            self.exited.set_result(None)
            return
        finally:
            self.probe.spawned()
        log.info("started %s: %s", self.label, " ".join(self.argv))
        reaper = asyncio.ensure_future(self._reap())
        reaper.add_done_callback(self._reaped)

    def describe_exit(self) -> str:
        if self._spawn_error:
            return self._spawn_error
        code = self.exited.result()
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    async def until_ready(self, timeout: float) -> str | None:
        """None once the probe passes; otherwise why the child never became ready."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.exited.done():
            if await self.probe.check(self.uptime):
                return None
            if asyncio.get_running_loop().time() >= deadline:
                return f"was not ready after {timeout:g}s"
            await asyncio.wait([self.exited], timeout=READY_POLL)
        return self.describe_exit()

    async def watch(self) -> str:
        """Return (with the reason) when the child exits or fails its health check repeatedly."""
        misses = 0
        while True:
            await asyncio.wait([self.exited], timeout=HEALTH_INTERVAL)
            if self.exited.done():
                return self.describe_exit()
            if await self.probe.check(self.uptime):
                misses = 0
                continue
            misses += 1
            log.warning("%s failed a health check (%d of %d)", self.label, misses, HEALTH_MISSES)
            if misses >= HEALTH_MISSES:
                return f"failed {misses} health checks in a row"

    async def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL if still running after `timeout` seconds."""
        if self.exited.done():
            return
        self._signal(signal.SIGTERM)
        await asyncio.wait([self.exited], timeout=timeout)
        if not self.exited.done():
            log.warning("%s still running %gs after SIGTERM; sending SIGKILL", self.label, timeout)
            self._signal(signal.SIGKILL)
            await asyncio.wait([self.exited])

    def _signal(self, sig: signal.Signals) -> None:
        # The whole group: anything the child started goes too. Never signal a reaped pid.
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass  # exited between the check and the signal

    async def _reap(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None and self.proc.stderr is not None
        forwarders = [
            asyncio.ensure_future(self._forward(self.proc.stdout, sys.stdout.buffer)),
            asyncio.ensure_future(self._forward(self.proc.stderr, sys.stderr.buffer)),
        ]
        code = await self.proc.wait()
        await asyncio.wait(forwarders, timeout=DRAIN_TIMEOUT)
        for forwarder in forwarders:
            forwarder.cancel()
        return code

    def _reaped(self, reaper: asyncio.Future[int]) -> None:
        if reaper.cancelled():
            self.exited.cancel()
        elif (error := reaper.exception()) is not None:
            self.exited.set_exception(error)
        else:
            self.exited.set_result(reaper.result())

    async def _forward(self, stream: asyncio.StreamReader, sink: BinaryIO) -> None:
        """Each line of the child's output, prefixed with `name[pid]`, passed through as bytes."""
        prefix = f"{self.label} ".encode()
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line over LINE_LIMIT: asyncio has discarded it
                line = f"[an output line over {LINE_LIMIT} bytes was dropped]".encode()
            if not line:
                return
            sink.write(prefix + line.rstrip(b"\r\n") + b"\n")
            sink.flush()
