"""Readiness and health checks for one child instance.

A check is one quick attempt answering True or False. The supervisor repeats it until
the child is ready, then periodically while it runs.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from vidwiz.constants import LISTEN_FDS_ENV, PROBE_USER_AGENT

CHECK_TIMEOUT = 3.0


class Probe:
    """A child that needs no check: ready as soon as it runs (and healthy while it does).

    Subclasses may hand the child file descriptors and environment, and must release
    their own copies in `spawned()`.
    """

    env: Mapping[str, str] = {}
    pass_fds: tuple[int, ...] = ()

    def spawned(self) -> None:
        """Called once the child exists (or failed to start)."""

    async def check(self, uptime: float) -> bool:
        return True


class Settle(Probe):
    """Ready once the process has stayed up for `seconds` (arq workers expose no per-process probe)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def check(self, uptime: float) -> bool:
        return uptime >= self.seconds


class RedisPing(Probe):
    def __init__(self, url: str) -> None:
        self.url = url

    async def check(self, uptime: float) -> bool:
        client = Redis.from_url(self.url, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT)
        try:
            return bool(await client.ping())
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()


class HttpHealth(Probe):
    """A web child serves the shared listening socket plus a private loopback one.

    Connections on the shared socket go to whichever child accepts first, so `/health`
    is asked on the private socket: the answer is from exactly this child.
    """

    def __init__(self, listen: socket.socket) -> None:
        self._private = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = self._private.getsockname()[1]
        self.pass_fds = (listen.fileno(), self._private.fileno())
        self.env = {LISTEN_FDS_ENV: ",".join(map(str, self.pass_fds))}

    def spawned(self) -> None:
        self._private.close()

    async def check(self, uptime: float) -> bool:
        timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT)
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": PROBE_USER_AGENT}) as session:
                async with session.get(f"http://127.0.0.1:{self.port}/health") as response:
                    return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
