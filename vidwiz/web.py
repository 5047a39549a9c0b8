"""One web process: `python -m vidwiz.web`.

Under the supervisor it serves the listening sockets it inherited (VIDWIZ_LISTEN_FDS:
the shared HOST:PORT socket and a private loopback one for health probes). Run alone,
it binds HOST:PORT itself with SO_REUSEPORT, so several can share the port.
SIGTERM/SIGINT stop it gracefully (aiohttp finishes in-flight requests first).
"""
from __future__ import annotations

import logging
import os
import socket
import sys

from aiohttp import web

from config import SettingsError, load_settings
from vidwiz.app import create_app
from vidwiz.logs import configure_logging
from vidwiz.supervision.probes import LISTEN_FDS_ENV, PROBE_USER_AGENT

log = logging.getLogger("vidwiz.web")


class _WithoutProbes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return PROBE_USER_AGENT not in record.getMessage()


def inherited_sockets() -> list[socket.socket]:
    raw = os.environ.get(LISTEN_FDS_ENV, "")
    return [socket.socket(fileno=int(fd)) for fd in raw.split(",") if fd.strip()]


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"web: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, "web")
    logging.getLogger("aiohttp.access").addFilter(_WithoutProbes())
    app = create_app(settings)
    # Finish before the supervisor's SIGKILL deadline.
    shutdown_timeout = settings.supervisor_shutdown_timeout * 0.8
    sockets = inherited_sockets()
    if sockets:
        log.info("serving on %s", ", ".join("%s:%d" % s.getsockname()[:2] for s in sockets))
        web.run_app(app, sock=sockets, shutdown_timeout=shutdown_timeout, print=None)
    else:
        log.info("serving on %s:%d", settings.host, settings.port)
        web.run_app(
            app, host=settings.host, port=settings.port, reuse_port=True, shutdown_timeout=shutdown_timeout, print=None
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
