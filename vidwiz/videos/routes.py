"""Videos handlers: parse -> service -> render (docs/api.md §3.2)."""

from __future__ import annotations

from aiohttp import web

from vidwiz.auth.guards import require_user
from vidwiz.context import SESSIONS
from vidwiz.system.openapi import operation
from vidwiz.validation import load_path, load_query
from vidwiz.videos import readiness, service
from vidwiz.videos.schemas import VideoListQuerySchema, VideoPageSchema, VideoPathSchema, VideoSchema

routes = web.RouteTableDef()


@routes.get("/v2/videos")
@operation(
    "The videos the caller has notes on: searched, sorted, paginated",
    "videos",
    auth="jwt",
    query=VideoListQuerySchema,
    responses={200: VideoPageSchema, 400: "Invalid sort parameter (BAD_REQUEST)"},
)
async def list_videos(request: web.Request) -> web.Response:
    user_id = require_user(request)
    query = load_query(request, VideoListQuerySchema)
    async with request.app[SESSIONS]() as session:
        page = await service.list_videos_for_user(session, user_id, **query)
    return web.json_response(service.render_video_page(page))


@routes.get("/v2/videos/{video_id}")
@operation(
    "A video the caller has a note or a conversation on",
    "videos",
    auth="jwt",
    path=VideoPathSchema,
    responses={
        200: VideoSchema,
        404: "Video not found, or neither a note nor a conversation of the caller on it (NOT_FOUND)",
    },
)
async def get_video(request: web.Request) -> web.Response:
    # The path is checked before auth, as the reference does (docs/api.md §1.3).
    video_id = load_path(request, VideoPathSchema)["video_id"]
    user_id = require_user(request)
    async with request.app[SESSIONS]() as session:
        video = await service.get_video_for_user(session, user_id, video_id)
    return web.json_response(readiness.render_video(video))
