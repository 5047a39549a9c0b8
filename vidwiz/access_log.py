"""The access log: one line per request, replacing aiohttp's default one.

Each line holds the request id (also in the X-Request-ID response header), method,
canonical route (`/v2/videos/{video_id}`, never the raw path or query), status, latency
and viewer kind (user, guest, admin or anonymous, as the handler's auth helper found it).
No headers, query strings or bodies: tokens, passwords and transcripts never reach it.
In JSON mode (ENVIRONMENT other than local) each of these is its own field.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from vidwiz.constants import PROBE_USER_AGENT
from vidwiz.context import REQUEST_ID, VIEWER_KIND
from vidwiz.system.metrics import canonical_route

ACCESS_LOGGER = logging.getLogger("vidwiz.access")


class AccessLogger(AbstractAccessLogger):
    """Pass to the runner: `access_log_class=AccessLogger, access_log=ACCESS_LOGGER`."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.headers.get("User-Agent") == PROBE_USER_AGENT:
            return  # the supervisor's health checks, every few seconds
        fields = {
            "request_id": request.get(REQUEST_ID),
            "method": request.method,
            "route": canonical_route(request),
            "status": response.status,
            "latency_ms": round(time * 1000, 1),
            "viewer": request.get(VIEWER_KIND, "anonymous"),
        }
        self.logger.info(
            "%(method)s %(route)s %(status)d %(latency_ms).1fms viewer=%(viewer)s request_id=%(request_id)s",
            fields,
            extra=fields,
        )
