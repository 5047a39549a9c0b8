"""The /v2/internal API handlers (API.md §5.2): admin token first, then parse -> service -> render."""
from __future__ import annotations

from aiohttp import web

from vidwiz.auth.viewer import require_admin
from vidwiz.context import KEYS, REDIS, SESSIONS, TASK_WAKEUPS, TRANSCRIPTS
from vidwiz.errors import BadRequest
from vidwiz.events import enqueue_job
from vidwiz.internal import schemas, service
from vidwiz.internal.longpoll import long_poll
from vidwiz.internal.models import TaskStatus
from vidwiz.internal.tasks import TASK_TYPES, claim_task, notify_tasks_created
from vidwiz.notes.schemas import NoteUpdateSchema, render_note
from vidwiz.validation import load_body, load_path, load_query
from vidwiz.videos.schemas import VideoPathSchema
from vidwiz.videos.service import render_video

routes = web.RouteTableDef()


async def _video_changed(request: web.Request, video_id: str) -> None:
    await enqueue_job(request.app[REDIS], request.app[KEYS], "video_changed", video_id)


@routes.get("/v2/internal/tasks")
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
async def submit_task_result(request: web.Request) -> web.Response:
    require_admin(request)
    task_id = load_path(request, schemas.TaskPathSchema())["task_id"]
    body = await load_body(request, schemas.TaskResultSchema())
    async with request.app[SESSIONS]() as session:
        result = await service.submit_task_result(session, request.app[TRANSCRIPTS], task_id, **body)
    if result.status == TaskStatus.PENDING:
        await notify_tasks_created(request.app[REDIS], request.app[KEYS], [result.task_type])
    await _video_changed(request, result.video_id)
    return web.json_response(
        {"message": "Task result submitted successfully", "task_id": result.task_id, "status": result.status.value}
    )


@routes.get("/v2/internal/videos/{video_id}/ai-notes")
async def list_ai_notes(request: web.Request) -> web.Response:
    require_admin(request)
    video_id = load_path(request, VideoPathSchema())["video_id"]
    async with request.app[SESSIONS]() as session:
        notes = await service.list_ai_note_candidates(session, video_id)
    return web.json_response({
        "video_id": video_id,
        "notes": [render_note(note) for note in notes],
        "message": "Successfully retrieved notes for AI note generation.",
    })


@routes.post("/v2/internal/videos/{video_id}/transcript")
async def store_transcript(request: web.Request) -> web.Response:
    require_admin(request)
    video_id = load_path(request, VideoPathSchema())["video_id"]
    body = await load_body(request, schemas.TranscriptWriteSchema())
    async with request.app[SESSIONS]() as session:
        video = await service.store_transcript(session, request.app[TRANSCRIPTS], video_id, body["transcript"])
        await session.commit()
    await _video_changed(request, video_id)
    return web.json_response(render_video(video))


@routes.post("/v2/internal/videos/{video_id}/metadata")
async def store_metadata(request: web.Request) -> web.Response:
    require_admin(request)
    video_id = load_path(request, VideoPathSchema())["video_id"]
    body = await load_body(request, schemas.MetadataWriteSchema())
    async with request.app[SESSIONS]() as session:
        video = await service.store_metadata(session, video_id, body["metadata"])
        await session.commit()
    await _video_changed(request, video_id)
    return web.json_response(render_video(video))


@routes.post("/v2/internal/videos/{video_id}/summary")
async def store_summary(request: web.Request) -> web.Response:
    require_admin(request)
    video_id = load_path(request, VideoPathSchema())["video_id"]
    body = await load_body(request, schemas.SummaryWriteSchema())
    async with request.app[SESSIONS]() as session:
        video = await service.store_summary(session, video_id, body["summary"])
        await session.commit()
    await _video_changed(request, video_id)
    return web.json_response(render_video(video))


@routes.get("/v2/internal/videos/{video_id}")
async def get_video(request: web.Request) -> web.Response:
    require_admin(request)
    video_id = load_path(request, VideoPathSchema())["video_id"]
    async with request.app[SESSIONS]() as session:
        video = await service.get_video_or_404(session, video_id)
    return web.json_response(render_video(video))


@routes.patch("/v2/internal/notes/{note_id}")
async def update_note(request: web.Request) -> web.Response:
    require_admin(request)
    note_id = load_path(request, schemas.InternalNotePathSchema())["note_id"]
    body = await load_body(request, NoteUpdateSchema())
    async with request.app[SESSIONS]() as session:
        note = await service.update_note(session, note_id, **body)
    return web.json_response(render_note(note))
