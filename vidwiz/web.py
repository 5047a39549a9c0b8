"""One web process: `python -m vidwiz.web`.

Under the supervisor it serves the listening sockets it inherited (VIDWIZ_LISTEN_FDS:
the shared HOST:PORT socket and a private loopback one for health probes). Run alone,
it binds HOST:PORT itself with SO_REUSEPORT, so several can share the port.
SIGTERM/SIGINT stop it gracefully (aiohttp finishes in-flight requests first).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys

import uvloop
from aiohttp import web

from config import Settings, SettingsError, load_settings
from vidwiz.app import create_app
from vidwiz.constants import LISTEN_BACKLOG, LISTEN_FDS_ENV
from vidwiz.http_server import app_runner
from vidwiz.logs import configure_logging

log = logging.getLogger("vidwiz.web")


async def freeze_startup_objects(app: web.Application) -> None:
    """Move what start-up created (modules, SDK tables, routes: ~100k objects that live as
    long as the process) out of the collector's reach, so a full collection no longer stops
    the event loop for tens of milliseconds to walk them again."""
    gc.collect()
    gc.freeze()


def inherited_sockets() -> list[socket.socket]:
    raw = os.environ.get(LISTEN_FDS_ENV, "")
    return [socket.socket(fileno=int(fd)) for fd in raw.split(",") if fd.strip()]


async def serve(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Finish before the supervisor's SIGKILL deadline.
    runner = app_runner(app, shutdown_timeout=settings.supervisor_shutdown_timeout * 0.8)
    await runner.setup()
    try:
        sockets = inherited_sockets()
        sites: list[web.BaseSite]
        if sockets:
            sites = [web.SockSite(runner, sock, backlog=LISTEN_BACKLOG) for sock in sockets]
        else:
            sites = [web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=LISTEN_BACKLOG)]
        for site in sites:
            await site.start()
        log.info("serving on %s", ", ".join(site.name for site in sites))
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"web: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, "web")
    app = create_app(settings)
    app.on_startup.append(freeze_startup_objects)  # last: after every start-up hook ran
    # uvloop: about an eighth less CPU per request in bench/notes_videos.py (reads and note creates).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(app, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
