"""The /v2/internal API handlers (docs/api.md §5.2): admin token first, then parse -> service -> render.

Every write runs in one unit of work: once it commits, the streams of a changed video get
its committed state, `video_changed` is enqueued and waiting pollers are woken.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from marshmallow import Schema

from vidwiz.auth.guards import require_admin
from vidwiz.context import SESSIONS, TASK_WAKEUPS, TRANSCRIPTS, UNITS
from vidwiz.errors import BadRequest
from vidwiz.internal import schemas
from vidwiz.notes import service as notes_service
from vidwiz.notes.schemas import NoteSchema, NoteUpdateSchema, render_note
from vidwiz.system.openapi import operation
from vidwiz.tasks import service as tasks_service
from vidwiz.tasks.wakeups import long_poll
from vidwiz.unit_of_work import UnitOfWork
from vidwiz.validation import load_body, load_path, load_query
from vidwiz.videos import service as videos_service
from vidwiz.videos.models import Video
from vidwiz.videos.readiness import render_video
from vidwiz.videos.schemas import VideoPathSchema, VideoSchema

routes = web.RouteTableDef()
STORAGE_DOWN = "Transcript storage is unavailable; nothing was stored (SERVICE_UNAVAILABLE)"


@routes.get("/v2/internal/tasks")
@operation(
    "Long-poll for a task to work on (external workers)",
    "internal",
    auth="admin",
    query=schemas.TaskPollQuerySchema,
    responses={
        200: schemas.ClaimedTaskSchema,
        204: "No task within the timeout (empty body)",
        400: "Invalid task type (BAD_REQUEST)",
    },
)
async def poll_task(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    query = load_query(request, schemas.TaskPollQuerySchema)
    task_type = tasks_service.TASK_TYPES.get(query["type"])
    if task_type is None:
        raise BadRequest("Invalid task type")
    units = request.app[UNITS]

    async def claim() -> tasks_service.ClaimedTask | None:
        async with units() as work:  # a connection only for the attempt, never while waiting
            return await tasks_service.claim_task(work.session, task_type)

    def client_connected() -> bool:
        # Without this, a poller whose worker went away could claim a task nobody receives.
        return request.transport is not None and not request.transport.is_closing()

    task = await long_poll(request.app[TASK_WAKEUPS], task_type, query["timeout"], claim, client_connected)
    if task is None:
        return web.Response(status=204)
    return web.json_response(schemas.render_claimed_task(task))


@routes.post("/v2/internal/tasks/{task_id}/result")
@operation(
    "Submit the result of a claimed task",
    "internal",
    auth="admin",
    path=schemas.TaskPathSchema,
    body=schemas.TaskResultSchema,
    responses={
        200: schemas.TaskResultResponseSchema,
        400: "Task video_id mismatch, task not in progress, or payload of the wrong kind (BAD_REQUEST)",
        404: "Task not found (NOT_FOUND)",
        503: STORAGE_DOWN,
    },
)
async def submit_task_result(request: web.Request) -> web.Response:
    require_admin(request)
    task_id = load_path(request, schemas.TaskPathSchema)["task_id"]
    body = await load_body(request, schemas.TaskResultSchema)
    async with request.app[UNITS]() as work:
        status = await tasks_service.submit_task_result(
            work.session, work.effects, request.app[TRANSCRIPTS], task_id, **body
        )
    return web.json_response(
        {"message": "Task result submitted successfully", "task_id": task_id, "status": status.value}
    )


@routes.get("/v2/internal/videos/{video_id}/ai-notes")
@operation(
    "Notes waiting for an AI note (empty text, owner has AI notes on)",
    "internal",
    auth="admin",
    path=VideoPathSchema,
    responses={
        200: schemas.AiNotesSchema,
        404: "Video not found, or no notes for users with AI notes enabled (NOT_FOUND)",
    },
)
async def list_ai_notes(request: web.Request) -> web.Response:
    require_admin(request)
    video_id = load_path(request, VideoPathSchema)["video_id"]
    async with request.app[SESSIONS]() as session:
        notes = await notes_service.list_ai_note_candidates(session, video_id)
    return web.json_response(
        {
            "video_id": video_id,
            "notes": [render_note(note) for note in notes],
            "message": "Successfully retrieved notes for AI note generation.",
        }
    )


# A direct writer: (request, its unit of work, video id, loaded body) -> the changed video.
VideoWriter = Callable[[web.Request, UnitOfWork, str, dict[str, Any]], Awaitable[Video]]


def _video_writer(
    kind: str, summary: str, body_schema: type[Schema], write: VideoWriter, errors: dict[int, str] | None = None
) -> None:
    """Route `POST /v2/internal/videos/{video_id}/<kind>`: auth, path, body, one unit of work,
    the committed video (the direct writers of docs/api.md §5.2); `errors` documents more answers."""

    async def handler(request: web.Request) -> web.Response:
        require_admin(request)
        video_id = load_path(request, VideoPathSchema)["video_id"]
        body = await load_body(request, body_schema)
        async with request.app[UNITS]() as work:
            video = await write(request, work, video_id, body)
        return web.json_response(render_video(video))

    handler.__name__ = handler.__qualname__ = f"store_{kind}"  # its OpenAPI operationId
    responses: dict[int, Any] = {200: VideoSchema, **(errors or {})}
    documented = operation(
        summary, "internal", auth="admin", path=VideoPathSchema, body=body_schema, responses=responses
    )(handler)
    routes.post(f"/v2/internal/videos/{{video_id}}/{kind}")(documented)


async def _transcript(request: web.Request, work: UnitOfWork, video_id: str, body: dict[str, Any]) -> Video:
    store = request.app[TRANSCRIPTS]
    return await videos_service.store_transcript(work.session, work.effects, store, video_id, body["transcript"])


async def _metadata(request: web.Request, work: UnitOfWork, video_id: str, body: dict[str, Any]) -> Video:
    return await videos_service.store_metadata(work.session, work.effects, video_id, body["metadata"])


async def _summary(request: web.Request, work: UnitOfWork, video_id: str, body: dict[str, Any]) -> Video:
    return await videos_service.store_summary(work.session, work.effects, video_id, body["summary"])


_video_writer(
    "transcript", "Store a video's transcript", schemas.TranscriptWriteSchema, _transcript, {503: STORAGE_DOWN}
)
_video_writer(
    "metadata", "Store a video's metadata (its title becomes the video's)", schemas.MetadataWriteSchema, _metadata
)
_video_writer("summary", "Store a video's summary (null is a no-op)", schemas.SummaryWriteSchema, _summary)


@routes.get("/v2/internal/videos/{video_id}")
@operation(
    "Any video",
    "internal",
    auth="admin",
    path=VideoPathSchema,
    responses={200: VideoSchema, 404: "Video not found (NOT_FOUND)"},
)
async def get_video(request: web.Request) -> web.Response:
    require_admin(request)
    video_id = load_path(request, VideoPathSchema)["video_id"]
    async with request.app[SESSIONS]() as session:
        video = await videos_service.get_video_or_404(session, video_id)
    return web.json_response(render_video(video))


@routes.patch("/v2/internal/notes/{note_id}")
@operation(
    "Write an AI note into any note ({} is a no-op)",
    "internal",
    auth="admin",
    path=schemas.InternalNotePathSchema,
    body=NoteUpdateSchema,
    responses={200: NoteSchema, 404: "Note not found (NOT_FOUND)"},
)
async def update_note(request: web.Request) -> web.Response:
    require_admin(request)
    note_id = load_path(request, schemas.InternalNotePathSchema)["note_id"]
    body = await load_body(request, NoteUpdateSchema)
    async with request.app[UNITS]() as work:
        note = await notes_service.update_any_note(work.session, note_id, **body)
    return web.json_response(render_note(note))
