"""Process-wide logging: plain text in `local`, JSON lines everywhere else.

Every process of the tree (supervisor, web, actors, workers) calls `configure_logging`
once at start. Logs go to stderr; the supervisor forwards each child's lines with a
`name[pid]` prefix.
"""
from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from config import Settings

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = ("asctime", "levelname", "name", "message")


def configure_logging(settings: Settings, name: str) -> None:
    """Send the root logger to stderr at LOG_LEVEL; `name` tags JSON records with the process kind."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.environment == "local":
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    else:
        handler.setFormatter(JsonFormatter(JSON_FIELDS, static_fields={"process_name": name}))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
