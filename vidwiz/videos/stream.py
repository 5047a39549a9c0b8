"""`GET /v2/videos/{video_id}/stream`: video readiness over SSE (docs/api.md §4.1, D11).

The stream subscribes to the process's ReadinessHub first, then reads its snapshot, so
no update can fall between the two. After that it never polls the database: it waits
for hub messages (published by the web process that committed a change, and again by
the `video_changed` actor; a repeated or older state is skipped) and re-reads the row
only when the hub says it may have missed some (Redis reconnect, slow consumer).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from vidwiz.auth.guards import resolve_viewer
from vidwiz.auth.identity import Viewer
from vidwiz.context import HUB, SNAPSHOTS
from vidwiz.errors import NotFound
from vidwiz.http_server import on_disconnect
from vidwiz.system.openapi import operation
from vidwiz.validation import load_path
from vidwiz.videos import readiness
from vidwiz.videos.hub import CLOSED, RESYNC, Subscription
from vidwiz.videos.models import Video
from vidwiz.videos.schemas import VideoPathSchema

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

State = tuple[bool, ...]
# One event as the OpenAPI document describes it (`data` is the JSON text).
READINESS_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["snapshot", "update", "done", "timeout"]},
        "data": {"type": "string"},
    },
}


class ReadinessResponse(EventSourceResponse):
    """aiohttp-sse's response with the reference's exact content type (`sep="\\n"` does the line endings)."""

    # The headers leave with the first frame (the snapshot, sent at once) in one socket write, not
    # two: aiohttp's plain Response buffers them the same way.
    _send_headers_immediately = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.headers["Content-Type"] = "text/event-stream; charset=utf-8"


@routes.get("/v2/videos/{video_id}/stream")
@operation(
    "Video readiness as Server-Sent Events",
    "videos",
    auth="viewer",
    path=VideoPathSchema,
    responses={
        200: (
            "text/event-stream",
            "`snapshot`, then `update` on each readiness change, then `done` when ready, or `timeout` "
            'before closing at 60 s; `data` is `{"event": …, "video": Video}`; comment keep-alives.',
            READINESS_EVENT,
        ),
        404: "Video not found (a JWT viewer also needs a note or a conversation on it) (NOT_FOUND)",
    },
)
async def stream_video(request: web.Request) -> web.StreamResponse:
    video_id = load_path(request, VideoPathSchema)["video_id"]
    viewer = resolve_viewer(request)
    hub = request.app[HUB]
    with hub.subscribe(video_id) as subscription:
        video = await _read_video(request.app, viewer, video_id)
        if video is None:
            raise NotFound("Video not found")
        async with sse_response(
            request, response_cls=ReadinessResponse, sep="\n", ping_interval=hub.keepalive_interval
        ) as sse:
            # The client is gone when its connection closes, or (another server) when the keep-alive
            # task's write fails: either ends the stream, its subscription and its queue at once.
            watcher = asyncio.create_task(sse.wait())
            watcher.add_done_callback(lambda _: subscription.push(CLOSED))
            try:
                with on_disconnect(request, lambda: subscription.push(CLOSED)):
                    await _run(request.app, sse, subscription, viewer, video_id, video, hub.stream_timeout)
            except ConnectionResetError as exc:
                log.debug("readiness stream %s ended by the client: %s", video_id, exc)
            finally:
                watcher.cancel()
    return sse


async def _run(
    app: web.Application,
    sse: EventSourceResponse,
    subscription: Subscription,
    viewer: Viewer,
    video_id: str,
    video: Video,
    timeout: float,
) -> None:
    """snapshot -> (update)* -> done | timeout. A `Last-Event-ID` reconnect simply gets a fresh snapshot."""
    deadline = asyncio.get_running_loop().time() + timeout
    rendered = readiness.render_video(video)
    state: State = readiness.readiness_state(video)
    await _send(sse, "snapshot", rendered)
    if all(state):
        await _send(sse, "done", rendered)
        return
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                item = await subscription.get()
        except TimeoutError:
            await _send(sse, "timeout", rendered)
            return
        if item is CLOSED:
            return
        if item is RESYNC:
            fresh = await _read_video(app, viewer, video_id)
            if fresh is None:
                return
            new_rendered = readiness.render_video(fresh)
            new_state: State = readiness.readiness_state(fresh)
        else:
            new_rendered, new_state = item["video"], tuple(item["state"])
            if _is_older(new_state, state):
                continue  # a late message from a slower actor job
        if new_state == state:
            continue
        rendered, state = new_rendered, new_state
        await _send(sse, "update", rendered)
        if all(state):
            await _send(sse, "done", rendered)
            return


def _is_older(candidate: State, current: State) -> bool:
    # Readiness flags only ever turn on, so a message with fewer of them is stale.
    return candidate != current and all(c <= s for c, s in zip(candidate, current))


async def _send(sse: EventSourceResponse, event: str, video: dict[str, Any]) -> None:
    await sse.send(json.dumps({"event": event, "video": video}), event=event)


async def _read_video(app: web.Application, viewer: Viewer, video_id: str) -> Video | None:
    """The snapshot, scoped (a JWT viewer needs a note or a conversation on the video, D3); batched
    with the other streams' reads (vidwiz/videos/snapshots.py)."""
    return await app[SNAPSHOTS].read(viewer.user_id, video_id)
