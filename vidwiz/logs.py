"""Process-wide logging: plain text in `local`, JSON lines everywhere else.

Every process of the tree (supervisor, web, actors, workers) calls `configure_logging`
once at start. Logs go to stderr; the supervisor forwards each child's lines with a
`name[pid]` prefix. Records logged while a request is handled carry its id (a
`request_id` field in JSON); the access log is vidwiz/access_log.py.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from config import Settings

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = ("asctime", "levelname", "name", "message")

# Set by the request id middleware; aiohttp runs each request in its own task (own context).
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


def log_handler(settings: Settings, name: str, stream: TextIO | None = None) -> logging.Handler:
    """The handler every process logs through (`name` tags JSON records with the process kind)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.environment == "local":
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    else:
        handler.setFormatter(JsonFormatter(JSON_FIELDS, static_fields={"process_name": name}))
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(settings: Settings, name: str) -> None:
    """Send the root logger to stderr at LOG_LEVEL."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(log_handler(settings, name))
    root.setLevel(settings.log_level)
