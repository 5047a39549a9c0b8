"""Readiness: the `video_changed` actor, the ReadinessHub and GET /v2/videos/{id}/stream
(docs/api.md §4.1, D11) through real HTTP. Updates are driven by the internal writers (which
publish what they commit) or by calling the actor function with a ctx built from the test
app's own resources (no worker process needed)."""

from __future__ import annotations

import asyncio
import json

import pytest

from actors.readiness import video_changed
from tests.conftest import ADMIN, WAIT, assert_error, auth, claim_task, eventually, submit_result
from vidwiz.context import HUB, KEYS, REDIS
from vidwiz.tasks.service import FETCH_METADATA
from vidwiz.videos.hub import CLOSED, RESYNC

A, B = "aaaaaaaaaaa", "bbbbbbbbbbb"


@pytest.fixture
async def hub(client):
    hub = client.app[HUB]
    hub.keepalive_interval = 0.2  # fast disconnect detection in tests
    await asyncio.wait_for(hub.connected.wait(), WAIT)  # tests publish right away
    return hub


class SSEReader:
    """Reads `event:`/`data:` frames (and counts `:` comments) from a streaming response."""

    def __init__(self, resp):
        self.resp = resp
        self.comments = 0
        self.raw: list[str] = []

    async def next(self) -> tuple[str, dict] | None:
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.resp.content.readline(), WAIT)
            if not line:
                return None  # end of stream
            text = line.decode()
            self.raw.append(text)
            if text == "\n":
                if not lines:
                    continue
                if all(item.startswith(":") for item in lines):
                    self.comments += 1
                    lines = []
                    continue
                event = next(item[len("event: ") :] for item in lines if item.startswith("event: "))
                data = json.loads(next(item[len("data: ") :] for item in lines if item.startswith("data: ")))
                return event, data
            lines.append(text.rstrip("\n"))

    async def events(self) -> list[str]:
        names = []
        while (frame := await self.next()) is not None:
            names.append(frame[0])
        return names


async def open_stream(client, video_id, headers):
    resp = await client.get(f"/v2/videos/{video_id}/stream", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    return resp, SSEReader(resp)


# -- the sequence ------------------------------------------------------------------------------


async def test_ready_before_connecting_gives_snapshot_then_done(client, factory, hub):
    token, _ = await factory.user()
    await factory.note(token, A, video_title="Alpha")
    await factory.set_video(A, video_metadata={"title": "Alpha"}, transcript_available=True, summary="s")

    resp, reader = await open_stream(client, A, auth(token))
    event, data = await reader.next()
    assert event == "snapshot"
    assert data["event"] == "snapshot"
    video = data["video"]
    assert set(video) == {
        "id",
        "video_id",
        "title",
        "metadata",
        "transcript_available",
        "summary",
        "created_at",
        "updated_at",
    }
    assert (video["video_id"], video["title"], video["summary"]) == (A, "Alpha", "s")
    assert await reader.events() == ["done"]
    # Exact frame bytes: `event: <name>\ndata: <json.dumps>\n\n`, default separators.
    assert reader.raw[:2] == ["event: snapshot\n", f"data: {json.dumps({'event': 'snapshot', 'video': video})}\n"]
    await eventually(lambda: hub.stream_count == 0, "stream unsubscribed")


async def test_changes_while_streaming_give_updates_then_done(client, factory, actor_ctx, hub):
    token, _ = await factory.user()
    await factory.note(token, A)
    resp, reader = await open_stream(client, A, auth(token))
    event, data = await reader.next()
    assert event == "snapshot" and data["video"]["metadata"] is None
    assert hub.stream_count == 1

    await factory.set_video(A, video_metadata={"title": "T"})
    await video_changed(actor_ctx, A)
    event, data = await reader.next()
    assert event == "update" and data == {"event": "update", "video": data["video"]}
    assert data["video"]["metadata"] == {"title": "T"} and not data["video"]["transcript_available"]

    # No state change (only the title moved): no frame.
    await factory.set_video(A, title="new title")
    await video_changed(actor_ctx, A)
    await factory.set_video(A, transcript_available=True)
    await video_changed(actor_ctx, A)
    event, data = await reader.next()
    assert event == "update" and data["video"]["transcript_available"] is True
    assert data["video"]["title"] == "new title"

    await factory.set_video(A, summary="")  # an empty summary counts as present
    await video_changed(actor_ctx, A)
    event, data = await reader.next()
    assert event == "update" and data["video"]["summary"] == ""
    event, data = await reader.next()
    assert event == "done" and data["video"]["summary"] == ""
    assert await reader.next() is None
    await eventually(lambda: hub.stream_count == 0 and hub.channel_count == 0, "stream unsubscribed")


async def test_message_published_between_subscribe_and_snapshot_is_not_lost(client, actor_ctx, hub, factory):
    # The stream subscribes first, so a publish racing the snapshot read is queued, and a
    # message equal to the snapshot's state is not repeated as an update.
    await factory.video(A)
    with hub.subscribe(A) as subscription:
        await factory.set_video(A, video_metadata={"k": 1})
        await video_changed(actor_ctx, A)
        message = await asyncio.wait_for(subscription.get(), WAIT)
        assert message["state"] == [True, False, False]
        assert message["video"]["metadata"] == {"k": 1}


async def test_stale_and_duplicate_messages_do_not_produce_updates(client, actor_ctx, hub, factory):
    await factory.video(A, video_metadata={"k": 1})
    guest = {"X-Guest-Session-ID": "guest-1"}
    resp, reader = await open_stream(client, A, guest)
    assert (await reader.next())[0] == "snapshot"
    redis, channel = client.app[REDIS], client.app[KEYS].video_channel(A)
    # A slower job's older state (metadata not yet there) arrives late: ignored.
    await redis.publish(channel, json.dumps({"video": {"stale": True}, "state": [False, False, False]}))
    await factory.set_video(A, transcript_available=True)
    await video_changed(actor_ctx, A)
    event, data = await reader.next()
    assert event == "update" and data["video"]["transcript_available"] is True and "stale" not in data["video"]
    resp.close()


async def test_resync_rereads_the_database(client, hub, factory):
    # What the hub sends every stream after a Redis reconnect: messages may have been lost.
    await factory.video(A)
    resp, reader = await open_stream(client, A, {"X-Guest-Session-ID": "g"})
    assert (await reader.next())[0] == "snapshot"
    await factory.set_video(A, video_metadata={}, transcript_available=True, summary="x")  # no publish
    hub._broadcast(RESYNC)
    assert await reader.events() == ["update", "done"]


async def test_hub_reconnects_after_a_redis_outage_and_streams_resnapshot(client, hub, redis, backend, factory):
    await factory.video(A)
    resp, reader = await open_stream(client, A, {"X-Guest-Session-ID": "g"})
    assert (await reader.next())[0] == "snapshot"
    before = hub.reconnects
    await factory.set_video(A, video_metadata={"m": 1})  # changed while the hub is away
    if backend == "sqlite":
        # fakeredis: take the whole server down until the hub has noticed.
        hub.idle_check_interval = 0.05
        await redis.publish(hub.keys.video_channel(B), "{}")  # wake its loop to apply the interval
        server = hub._pubsub.connection._server
        server.connected = False
        await eventually(lambda: not hub.connected.is_set(), "hub noticed the outage")
        server.connected = True
    else:
        # Real Redis: the server drops the hub's connection (only ours, by its address).
        host, port = hub._pubsub.connection._writer.get_extra_info("sockname")[:2]
        assert await redis.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
    event, data = await reader.next()
    assert event == "update" and data["video"]["metadata"] == {"m": 1}
    assert hub.reconnects == before + 1 and hub.connected.is_set()
    resp.close()


# -- timing: keep-alive and timeout -----------------------------------------------------------------


async def test_keepalive_comments_then_timeout_event(client, hub, factory):
    hub.stream_timeout = 1.0
    await factory.video(A, video_metadata={"m": 1})
    resp, reader = await open_stream(client, A, {"X-Guest-Session-ID": "g"})
    assert (await reader.next())[0] == "snapshot"
    event, data = await reader.next()
    assert event == "timeout" and data["event"] == "timeout" and data["video"]["metadata"] == {"m": 1}
    assert reader.comments >= 1  # ": ping" keep-alives while idle
    assert ": ping\n" in reader.raw
    assert await reader.next() is None
    await eventually(lambda: hub.stream_count == 0, "stream unsubscribed")


async def test_client_disconnect_leaves_no_subscription(client, factory, hub):
    token, _ = await factory.user()
    await factory.note(token, A)
    await factory.note(token, B)
    streams = [await open_stream(client, video_id, auth(token)) for video_id in (A, A, B)]
    for _, reader in streams:
        assert (await reader.next())[0] == "snapshot"
    assert (hub.stream_count, hub.channel_count) == (3, 2)
    for resp, _ in streams:
        resp.close()
    await eventually(lambda: hub.stream_count == 0 and hub.channel_count == 0, "subscriptions freed")


async def test_last_event_id_reconnect_gets_a_fresh_snapshot(client, factory, hub):
    token, _ = await factory.user()
    await factory.note(token, A)
    await factory.set_video(A, video_metadata={"m": 1})
    resp, reader = await open_stream(client, A, {**auth(token), "Last-Event-ID": "whatever"})
    event, data = await reader.next()
    assert event == "snapshot" and data["video"]["metadata"] == {"m": 1}
    resp.close()


# -- auth and scoping -----------------------------------------------------------------------------


async def test_scoping_and_errors(client, factory):
    owner, _ = await factory.user()
    other, _ = await factory.user()
    await factory.note(owner, A)

    resp = await client.get(f"/v2/videos/{A}/stream", headers=auth(other))
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Video not found")

    resp = await client.get(f"/v2/videos/{B}/stream", headers={"X-Guest-Session-ID": "g"})
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Video not found")

    resp = await client.get(f"/v2/videos/{A}/stream")
    assert resp.status == 401
    assert_error(await resp.json(), "UNAUTHORIZED", "Missing Auth or Guest ID")

    resp = await client.get("/v2/videos/bad/stream", headers=auth(owner))
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, "VALIDATION_ERROR")
    assert [d["field"] for d in body["error"]["details"]] == ["path.video_id"]

    # A guest may watch any existing video; an invalid JWT falls through to the guest id.
    resp, reader = await open_stream(client, A, {"Authorization": "Bearer nope", "X-Guest-Session-ID": "g"})
    assert (await reader.next())[0] == "snapshot"
    resp.close()


async def test_a_conversation_opens_the_stream_as_the_wiz_page_does(client, factory, hub):
    """D3 revised: conversation -> GET /v2/videos/{id} 200 -> the stream opens with a snapshot."""
    owner, _ = await factory.user()
    other, _ = await factory.user()
    await factory.conversation(auth(owner), A)
    resp = await client.get(f"/v2/videos/{A}", headers=auth(owner))
    assert resp.status == 200 and (await resp.json())["transcript_available"] is False

    resp, reader = await open_stream(client, A, auth(owner))
    event, data = await reader.next()
    assert event == "snapshot"
    assert (data["video"]["video_id"], data["video"]["transcript_available"]) == (A, False)
    resp.close()

    # Neither a note nor a conversation, or only someone else's: 404.
    resp = await client.get(f"/v2/videos/{A}/stream", headers=auth(other))
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Video not found")
    await factory.conversation(auth(other), B)
    assert (await client.get(f"/v2/videos/{A}/stream", headers=auth(other))).status == 404
    await eventually(lambda: hub.stream_count == 0, "stream unsubscribed")


# -- published by the web process that committed -----------------------------------------------


def flags(video: dict) -> tuple[bool, bool, bool]:
    return (video["metadata"] is not None, video["transcript_available"], video["summary"] is not None)


async def test_internal_writers_publish_the_committed_state_before_any_actor_runs(client, actor_ctx, hub, factory):
    await factory.video(A)
    resp, reader = await open_stream(client, A, {"X-Guest-Session-ID": "g"})
    assert (await reader.next())[0] == "snapshot"
    writes = [
        ("metadata", {"metadata": {"title": "T"}}),
        ("transcript", {"transcript": [{"text": "hi", "offset": 0.0, "duration": 1.0}]}),
        ("summary", {"summary": "S"}),
    ]
    for writer, body in writes:
        answer = await client.post(f"/v2/internal/videos/{A}/{writer}", json=body, headers=ADMIN)
        assert answer.status == 200, await answer.text()
        event, data = await reader.next()  # no `video_changed` job has run
        assert event == "update" and data["video"] == await answer.json()
        # The actor's re-publish of the same state adds no frame: the next one is the next write's.
        await video_changed(actor_ctx, A)
    event, data = await reader.next()
    assert event == "done" and flags(data["video"]) == (True, True, True)
    assert await reader.next() is None


async def test_task_results_publish_the_committed_state(client, hub, factory):
    await factory.video(A)
    task_id = await factory.task(A, FETCH_METADATA)
    await claim_task(client, "metadata")
    resp, reader = await open_stream(client, A, {"X-Guest-Session-ID": "g"})
    assert (await reader.next())[0] == "snapshot"
    answer = await submit_result(client, task_id, {"video_id": A, "success": True, "metadata": {"title": "From task"}})
    assert answer.status == 200, await answer.text()
    event, data = await reader.next()
    assert event == "update" and data["video"]["metadata"] == {"title": "From task"}
    resp.close()


async def test_concurrent_writers_never_publish_a_state_missing_a_committed_flag(client, hub, factory):
    # Each writer locks the row, so what it publishes includes every write committed before it.
    await factory.video(A)
    resp, reader = await open_stream(client, A, {"X-Guest-Session-ID": "g"})
    assert (await reader.next())[0] == "snapshot"
    answers = await asyncio.gather(
        *(
            client.post(f"/v2/internal/videos/{A}/{writer}", json=body, headers=ADMIN)
            for writer, body in [
                ("metadata", {"metadata": {"k": 1}}),
                ("summary", {"summary": "S"}),
                ("transcript", {"transcript": [{"text": "hi"}]}),
            ]
        )
    )
    assert [answer.status for answer in answers] == [200, 200, 200]
    seen = [(False, False, False)]
    while (frame := await reader.next()) is not None:
        state = flags(frame[1]["video"])
        assert all(now >= before for now, before in zip(state, seen[-1])), (seen, state)
        seen.append(state)
    assert seen[-1] == (True, True, True)


# -- the actor ------------------------------------------------------------------------------------


async def test_video_changed_is_idempotent_and_tolerates_unknown_videos(client, actor_ctx, hub, factory):
    assert await video_changed(actor_ctx, "zzzzzzzzzzz") == {"video_id": "zzzzzzzzzzz", "found": False}
    await factory.video(A, video_metadata={"m": 1})
    with hub.subscribe(A) as subscription:
        first = await video_changed(actor_ctx, A)
        second = await video_changed(actor_ctx, A)
        assert first == second == {"video_id": A, "found": True, "state": [True, False, False], "ai_notes_queued": 0}
        messages = [await asyncio.wait_for(subscription.get(), WAIT) for _ in range(2)]
    assert messages[0] == messages[1]


async def test_shutdown_ends_open_streams(client, hub, factory):
    await factory.video(A)
    resp, reader = await open_stream(client, A, {"X-Guest-Session-ID": "g"})
    assert (await reader.next())[0] == "snapshot"
    client.app[HUB].end_streams()  # what the app's on_shutdown does
    assert await reader.next() is None
    await eventually(lambda: hub.stream_count == 0, "stream unsubscribed")


async def test_hub_drops_malformed_messages_and_resyncs_slow_consumers(client, hub):
    redis, channel = client.app[REDIS], client.app[KEYS].video_channel(A)
    with hub.subscribe(A) as subscription:
        await redis.publish(channel, "not json")
        await redis.publish(channel, json.dumps({"video": {}}))  # no state
        for index in range(hub.queue_size + 3):  # never read: the queue overflows
            await redis.publish(channel, json.dumps({"video": {"n": index}, "state": [True, False, False]}))
        await redis.publish(channel, json.dumps({"video": {"n": "last"}, "state": [True, True, False]}))
        last = {"video": {"n": "last"}, "state": [True, True, False]}
        queued = subscription._queue._queue  # the deque behind the asyncio.Queue
        await eventually(lambda: queued and queued[-1] == last, "messages dispatched")
        # Overflow: everything before is replaced by one RESYNC (read the database instead).
        assert await subscription.get() is RESYNC
        rest = [subscription._queue.get_nowait() for _ in range(subscription._queue.qsize())]
        assert rest[-1] == last
        assert all(item is RESYNC or isinstance(item, dict) for item in rest)
        subscription.push(CLOSED)
        subscription.push(RESYNC)  # nothing after CLOSED
        assert await subscription.get() is CLOSED and subscription._queue.empty()
