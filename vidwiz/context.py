"""Typed application keys: the resources every handler reaches through `request.app`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import ClientSession, web
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from config import Settings
from vidwiz.events import RedisKeys

if TYPE_CHECKING:  # the modules that define these import this one
    from vidwiz.auth.google import GoogleVerifier
    from vidwiz.llm import ChatModel
    from vidwiz.storage import TranscriptStore
    from vidwiz.tasks.wakeups import TaskWakeups
    from vidwiz.unit_of_work import UnitsOfWork
    from vidwiz.videos.hub import ReadinessHub
    from vidwiz.videos.snapshots import SnapshotReader

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
REDIS = web.AppKey("redis", ArqRedis)
KEYS = web.AppKey("keys", RedisKeys)
HTTP = web.AppKey("http", ClientSession)
GOOGLE: web.AppKey[GoogleVerifier | None] = web.AppKey("google")
REQUEST_ID = web.RequestKey("request_id", str)
CORS_ORIGIN = web.RequestKey("cors_origin", str)
# Who the request was authenticated as, for the access log: user, guest or admin (unset: anonymous).
VIEWER_KIND = web.RequestKey("viewer_kind", str)
TRANSCRIPTS: web.AppKey[TranscriptStore] = web.AppKey("transcripts")
TASK_WAKEUPS: web.AppKey[TaskWakeups] = web.AppKey("task_wakeups")
HUB: web.AppKey[ReadinessHub] = web.AppKey("readiness_hub")
SNAPSHOTS: web.AppKey[SnapshotReader] = web.AppKey("readiness_snapshots")
CHAT_MODEL: web.AppKey[ChatModel | None] = web.AppKey("chat_model")
# Units of work (a transaction and its post-commit effects) over SESSIONS and REDIS.
UNITS: web.AppKey[UnitsOfWork] = web.AppKey("units")
