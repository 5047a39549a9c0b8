"""What every actor job works with: one typed object, built once per worker start.

arq hands each job a copy of the worker's context dict; the copy is shallow, so every job
sees this same object under `ctx["resources"]` (state kept on it persists across jobs). A
warning meant once per process goes through `warn_once`: its record (`warned`) is handed from
one worker start to the next (actors/worker.py), as a worker restarts after a Redis outage.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from vidwiz.db import create_engine, create_session_factory, open_write_sessions
from vidwiz.events import RedisKeys
from vidwiz.job_index import JobIndex
from vidwiz.llm import ChatModel, open_chat_model
from vidwiz.notes.ai_writer import ai_note_delivery
from vidwiz.notes.outbox import Delivery, open_sqs_delivery
from vidwiz.storage import TranscriptStore, open_transcript_store
from vidwiz.unit_of_work import Dispatcher, UnitsOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorResources:
    settings: Settings
    keys: RedisKeys
    sessions: async_sessionmaker[AsyncSession]
    units: UnitsOfWork
    dispatcher: Dispatcher
    transcripts: TranscriptStore
    chat_model: ChatModel | None
    delivery: Delivery | None  # where AI-note requests go (None: they wait)
    job_index: JobIndex  # the dashboard's record of running and finished jobs
    warned: set[str] = field(default_factory=set)  # what warn_once already said

    def warn_once(self, message: str, *args: object) -> None:
        if message not in self.warned:
            self.warned.add(message)
            log.warning(message, *args)

    @property
    def job_timeout(self) -> float:
        return self.settings.actor_job_timeout


def resources(ctx: dict[str, Any]) -> ActorResources:
    """The resources inside an arq job's ctx."""
    found: ActorResources = ctx["resources"]
    return found


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    redis: ArqRedis,
    *,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    transcripts: TranscriptStore | None = None,
    warned: set[str] | None = None,
) -> AsyncIterator[ActorResources]:
    """Everything the actors use, closed when the block ends. `sessions` and `transcripts` may be
    given (tests share the web app's); the rest is built from the settings. `warned`: what
    warn_once said before in this process."""
    async with contextlib.AsyncExitStack() as stack:
        if sessions is None:
            engine = create_engine(settings)
            stack.push_async_callback(engine.dispose)
            sessions = create_session_factory(engine)
        if transcripts is None:
            transcripts = await stack.enter_async_context(open_transcript_store(settings))
        keys = RedisKeys(settings.redis_key_prefix)
        dispatcher = Dispatcher(redis, keys)
        units = UnitsOfWork(sessions, dispatcher, await stack.enter_async_context(open_write_sessions(sessions)))
        chat_model = await stack.enter_async_context(open_chat_model(settings))
        delivery: Delivery | None
        if settings.sqs_ai_note_queue_url:  # the external path wins (docs/api.md §3.3 step 4)
            delivery = await stack.enter_async_context(
                open_sqs_delivery(settings, job_timeout=settings.actor_job_timeout)
            )
        else:
            delivery = ai_note_delivery(chat_model, units, transcripts, job_timeout=settings.actor_job_timeout)
        warned = set() if warned is None else warned
        res = ActorResources(
            settings,
            keys,
            sessions,
            units,
            dispatcher,
            transcripts,
            chat_model,
            delivery,
            JobIndex(redis, keys),
            warned,
        )
        if delivery is None:
            res.warn_once(
                "neither SQS_AI_NOTE_QUEUE_URL nor an LLM provider is configured: AI-note requests stay pending"
            )
        yield res
