"""How a web process serves the app: aiohttp's AppRunner with three changes.

- Our access log (vidwiz/access_log.py) replaces aiohttp's.
- A request aiohttp's parser refuses (a control character in a header, an over-long line,
  not HTTP at all) answers 400 in the error envelope and logs one short WARNING naming the
  error's kind. aiohttp would log its message, which quotes the offending line (an
  `Authorization` header with its token, say), with a traceback, and answer that text.
- A handler can learn at once that its client left (`on_disconnect`): aiohttp cancels no
  handler on a disconnect (handler_cancellation is off) and offers no callback for it, so a
  stream would otherwise notice only when a write fails.
- No `Server: Python/… aiohttp/…` banner: the app's responses drop it in on_response_prepare
  (vidwiz/middleware.py); the error responses built here, which never reach the app, drop it
  themselves.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from vidwiz.access_log import ACCESS_LOGGER, AccessLogger
from vidwiz.errors import framework_error

KEEPALIVE_TIMEOUT = 75.0  # web.run_app's default (a bare AppRunner keeps idle connections an hour)


class EnvelopeRequestHandler(RequestHandler):
    """One connection's protocol: aiohttp's, with its error path made safe to log and answer,
    and callbacks for the connection's end (`on_disconnect`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_lost: set[Callable[[], object]] = set()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        callbacks, self.on_lost = self.on_lost, set()
        for callback in callbacks:
            callback()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            # Non-HTTP traffic (TLS hellos, scanners) is routine on a public port: debug only.
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
            self.logger.log(level, "refused a malformed HTTP request from %s (%s)", request.remote, type(exc).__name__)
        else:  # raised past the app's own error handling: a bug worth its traceback
            self.log_exception("error handling a request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already being sent: the connection closes instead")
        body = framework_error(status, HTTPStatus(status).phrase)
        response = BannerlessResponse(text=json.dumps(body), status=status, content_type="application/json")
        response.force_close()
        return response


class BannerlessResponse(web.Response):
    """A response that sends no `Server` header (aiohttp adds one while preparing)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


class EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner whose connections are EnvelopeRequestHandlers."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the app's start-up
        return EnvelopeServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **server._kwargs,
        )


@contextlib.contextmanager
def on_disconnect(request: web.BaseRequest, callback: Callable[[], object]) -> Iterator[None]:
    """Within the block, `callback()` runs as soon as the client's connection closes (at once if it
    has). Only under `app_runner`'s protocol; elsewhere the handler learns it from a failed write."""
    protocol = request.protocol
    if not isinstance(protocol, EnvelopeRequestHandler):
        yield
        return
    if request.transport is None or request.transport.is_closing():
        callback()
    protocol.on_lost.add(callback)
    try:
        yield
    finally:
        protocol.on_lost.discard(callback)


def app_runner(app: web.Application, **options: Any) -> AppRunner:
    """The runner vidwiz/web.py serves with (tests serve through it too); `options` go to
    aiohttp's runner (e.g. shutdown_timeout)."""
    options = {
        "access_log_class": AccessLogger,
        "access_log": ACCESS_LOGGER,
        "keepalive_timeout": KEEPALIVE_TIMEOUT,
        **options,
    }
    return AppRunner(app, **options)
