"""Typed application keys: the resources every handler reaches through `request.app`."""

from __future__ import annotations

from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from config import Settings
from vidwiz.events import RedisKeys

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
REDIS = web.AppKey("redis", ArqRedis)
KEYS = web.AppKey("keys", RedisKeys)
HTTP = web.AppKey("http", "aiohttp.ClientSession")
GOOGLE = web.AppKey("google", "vidwiz.auth.google.GoogleVerifier | None")
REQUEST_ID = web.RequestKey("request_id", str)
CORS_ORIGIN = web.RequestKey("cors_origin", str)
# Who the request was authenticated as, for the access log: user, guest or admin (unset: anonymous).
VIEWER_KIND = web.RequestKey("viewer_kind", str)
TRANSCRIPTS = web.AppKey("transcripts", "vidwiz.storage.TranscriptStore")
TASK_WAKEUPS = web.AppKey("task_wakeups", "vidwiz.tasks.wakeups.TaskWakeups")
HUB = web.AppKey("readiness_hub", "vidwiz.videos.hub.ReadinessHub")
CHAT_MODEL = web.AppKey("chat_model", "vidwiz.llm.ChatModel | None")
# Units of work (a transaction and its post-commit effects) over SESSIONS and REDIS.
UNITS = web.AppKey("units", "vidwiz.unit_of_work.UnitsOfWork")
