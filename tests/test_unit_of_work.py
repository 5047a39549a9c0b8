"""The unit of work (vidwiz/unit_of_work.py): what a block records is dispatched only once it has
committed; an error (in the block or at the commit) rolls back, dispatches nothing and runs the
compensations; dispatching never fails a committed write."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tests.conftest import closed_port, eventually
from vidwiz.events import RedisKeys
from vidwiz.models import User, Video
from vidwiz.unit_of_work import Dispatcher, Job, UnitsOfWork

A = "aaaaaaaaaaa"


@pytest.fixture
async def channels(redis, settings):
    """A subscription to the video's readiness channel and the transcript tasks' wake-ups."""
    keys = RedisKeys(settings.redis_key_prefix)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.video_channel(A), keys.task_wakeup("fetch_transcript"))
    confirmed = []  # messages published before the server has the subscriptions would be missed

    async def subscribed() -> bool:
        message = await pubsub.get_message(timeout=0.1)
        if message is not None and message["type"] == "subscribe":
            confirmed.append(message["channel"])
        return len(confirmed) == 2

    await eventually(subscribed, "the subscriptions confirmed")
    yield pubsub
    await pubsub.aclose()


async def published(pubsub) -> list[tuple[str, str]]:
    """The (channel, message) pairs published so far (subscribe confirmations skipped)."""
    messages = []
    while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)) is not None:
        messages.append((message["channel"].decode(), message["data"].decode()))
    return messages


async def jobs(arq_redis, settings) -> list[tuple[str, tuple]]:
    queued = await arq_redis.queued_jobs(queue_name=RedisKeys(settings.redis_key_prefix).arq_queue)
    return sorted((job.function, job.args) for job in queued)


async def video_count(db_sessions) -> int:
    async with db_sessions() as session:
        return await session.scalar(select(func.count(Video.id)))


async def test_effects_are_dispatched_after_the_commit(units, db_sessions, channels, arq_redis, settings):
    keys = units.dispatcher.keys
    async with units() as work:
        video = Video(video_id=A, transcript_available=True)
        work.session.add(video)
        await work.session.flush()
        work.effects.video_changed(video)
        work.effects.tasks_claimable(["fetch_transcript"], 3)
        work.effects.wake_relay()
        assert await jobs(arq_redis, settings) == []  # nothing before the commit
    assert await video_count(db_sessions) == 1
    messages = await eventually(lambda: published(channels), "the dispatched messages")
    by_channel = dict(messages)
    assert json.loads(by_channel[keys.video_channel(A)])["state"] == [False, True, False]
    assert by_channel[keys.task_wakeup("fetch_transcript")] == "3"  # three pollers may wake
    assert await jobs(arq_redis, settings) == [(Job.RELAY_OUTBOX.value, ()), (Job.VIDEO_CHANGED.value, (A,))]


async def test_an_error_in_the_block_rolls_back_dispatches_nothing_and_compensates(
    units, db_sessions, channels, arq_redis, settings
):
    given_back: list[str] = []

    async def give_back(what: str) -> None:
        given_back.append(what)

    with pytest.raises(RuntimeError, match="the handler failed"):
        async with units() as work:
            video = Video(video_id=A, transcript_available=True)
            work.session.add(video)
            await work.session.flush()
            work.effects.on_rollback(lambda: give_back("first"))
            work.effects.on_rollback(lambda: give_back("second"))
            work.effects.video_changed(video)
            work.effects.tasks_claimable(["fetch_transcript"])
            work.effects.wake_relay()
            raise RuntimeError("the handler failed")
    assert await video_count(db_sessions) == 0
    assert given_back == ["second", "first"]  # in reverse order, as an exit stack would
    assert await published(channels) == []  # no readiness of a state that was never committed
    assert await jobs(arq_redis, settings) == []


async def test_a_failed_commit_rolls_back_dispatches_nothing_and_compensates(
    units, db_sessions, channels, arq_redis, settings
):
    async with units() as work:
        work.session.add(User(email="taken@example.com"))
    given_back: list[bool] = []

    async def give_back() -> None:
        given_back.append(True)

    with pytest.raises(IntegrityError):
        async with units() as work:
            work.session.add(User(email="taken@example.com"))  # refused only when it is flushed at the commit
            work.session.add(Video(video_id=A))
            work.effects.on_rollback(give_back)
            work.effects.wake_relay()
    assert given_back == [True]
    assert await video_count(db_sessions) == 0
    assert await jobs(arq_redis, settings) == []


async def test_redis_down_never_fails_a_committed_write(db_sessions, settings):
    dead = aioredis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
    dispatcher = Dispatcher(ArqRedis(connection_pool=dead.connection_pool), RedisKeys(settings.redis_key_prefix))
    try:
        async with UnitsOfWork(db_sessions, dispatcher)() as work:
            video = Video(video_id=A)
            work.session.add(video)
            await work.session.flush()
            work.effects.video_changed(video)
            work.effects.tasks_claimable(["fetch_transcript"])
            work.effects.wake_relay()
        assert await video_count(db_sessions) == 1  # the sweeper re-drives what was not dispatched
        assert await dispatcher.enqueue(Job.SWEEP) is False
    finally:
        await dead.aclose()


async def test_a_job_id_is_enqueued_once(units, arq_redis, settings):
    dispatcher = units.dispatcher
    job_id = dispatcher.job_id(Job.SUMMARIZE_VIDEO, A)
    assert job_id == f"{settings.redis_key_prefix}arq:queue:summarize_video:{A}"  # unique to this deployment
    assert await dispatcher.enqueue(Job.SUMMARIZE_VIDEO, A, job_id=job_id) is True
    assert await dispatcher.enqueue(Job.SUMMARIZE_VIDEO, A, job_id=job_id) is False
    assert await jobs(arq_redis, settings) == [(Job.SUMMARIZE_VIDEO.value, (A,))]
