"""The /v2/internal API handlers (API.md §5.2): admin token first, then parse -> service -> render."""

from __future__ import annotations

from aiohttp import web

from vidwiz.auth.guards import require_admin
from vidwiz.context import KEYS, REDIS, SESSIONS, TASK_WAKEUPS, TRANSCRIPTS
from vidwiz.errors import BadRequest
from vidwiz.events import enqueue_job
from vidwiz.internal import schemas
from vidwiz.notes import service as notes_service
from vidwiz.notes.schemas import NoteSchema, NoteUpdateSchema, render_note
from vidwiz.system.openapi import operation
from vidwiz.tasks import service as tasks_service
from vidwiz.tasks.models import TaskStatus
from vidwiz.tasks.service import TASK_TYPES, claim_task, notify_tasks_created
from vidwiz.tasks.wakeups import long_poll
from vidwiz.validation import load_body, load_path, load_query
from vidwiz.videos import service as videos_service
from vidwiz.videos.models import Video
from vidwiz.videos.schemas import VideoPathSchema, VideoSchema
from vidwiz.videos.service import publish_readiness, render_video

routes = web.RouteTableDef()
STORAGE_DOWN = "Transcript storage is unavailable; nothing was stored (SERVICE_UNAVAILABLE)"


async def _video_changed(request: web.Request, video_id: str, committed: Video | None) -> None:
    """After a commit: the streams get the committed state at once (no queue in between);
    the `video_changed` actor re-reads the row and starts the follow-up work."""
    redis, keys = request.app[REDIS], request.app[KEYS]
    if committed is not None:
        await publish_readiness(redis, keys, committed)
    await enqueue_job(redis, keys, "video_changed", video_id)


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
    query = load_query(request, schemas.TaskPollQuerySchema())
    task_type = TASK_TYPES.get(query["type"])
    if task_type is None:
        raise BadRequest("Invalid task type")
    sessions = request.app[SESSIONS]

    async def claim():
        async with sessions() as session:  # a connection only for the attempt, never while waiting
            return await claim_task(session, task_type)

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
    task_id = load_path(request, schemas.TaskPathSchema())["task_id"]
    body = await load_body(request, schemas.TaskResultSchema())
    async with request.app[SESSIONS]() as session:
        result = await tasks_service.submit_task_result(session, request.app[TRANSCRIPTS], task_id, **body)
    if result.status == TaskStatus.PENDING:
        await notify_tasks_created(request.app[REDIS], request.app[KEYS], [result.task_type])
    await _video_changed(request, result.video_id, result.video)
    return web.json_response(
        {"message": "Task result submitted successfully", "task_id": result.task_id, "status": result.status.value}
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
    video_id = load_path(request, VideoPathSchema())["video_id"]
    async with request.app[SESSIONS]() as session:
        notes = await notes_service.list_ai_note_candidates(session, video_id)
    return web.json_response(
        {
            "video_id": video_id,
            "notes": [render_note(note) for note in notes],
            "message": "Successfully retrieved notes for AI note generation.",
        }
    )


@routes.post("/v2/internal/videos/{video_id}/transcript")
@operation(
    "Store a video's transcript",
    "internal",
    auth="admin",
    path=VideoPathSchema,
    body=schemas.TranscriptWriteSchema,
    responses={200: VideoSchema, 503: STORAGE_DOWN},
)
async def store_transcript(request: web.Request) -> web.Response:
    store = request.app[TRANSCRIPTS]
    return await _write_video(
        request,
        schemas.TranscriptWriteSchema(),
        lambda session, video_id, body: videos_service.store_transcript(session, store, video_id, body["transcript"]),
    )


@routes.post("/v2/internal/videos/{video_id}/metadata")
@operation(
    "Store a video's metadata (fills an empty title)",
    "internal",
    auth="admin",
    path=VideoPathSchema,
    body=schemas.MetadataWriteSchema,
    responses={200: VideoSchema},
)
async def store_metadata(request: web.Request) -> web.Response:
    return await _write_video(
        request,
        schemas.MetadataWriteSchema(),
        lambda session, video_id, body: videos_service.store_metadata(session, video_id, body["metadata"]),
    )


@routes.post("/v2/internal/videos/{video_id}/summary")
@operation(
    "Store a video's summary (null is a no-op)",
    "internal",
    auth="admin",
    path=VideoPathSchema,
    body=schemas.SummaryWriteSchema,
    responses={200: VideoSchema},
)
async def store_summary(request: web.Request) -> web.Response:
    return await _write_video(
        request,
        schemas.SummaryWriteSchema(),
        lambda session, video_id, body: videos_service.store_summary(session, video_id, body["summary"]),
    )


async def _write_video(request: web.Request, body_schema, write) -> web.Response:
    """The direct writers: auth, path, body, one committed write, then readiness fan-out."""
    require_admin(request)
    video_id = load_path(request, VideoPathSchema())["video_id"]
    body = await load_body(request, body_schema)
    async with request.app[SESSIONS]() as session:
        video = await write(session, video_id, body)
        await session.commit()
    await _video_changed(request, video_id, video)
    return web.json_response(render_video(video))


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
    video_id = load_path(request, VideoPathSchema())["video_id"]
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
    note_id = load_path(request, schemas.InternalNotePathSchema())["note_id"]
    body = await load_body(request, NoteUpdateSchema())
    async with request.app[SESSIONS]() as session:
        note = await notes_service.update_any_note(session, note_id, **body)
    return web.json_response(render_note(note))
