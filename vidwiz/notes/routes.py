"""Notes handlers: parse -> service -> render (docs/api.md §3.3)."""

from __future__ import annotations

from aiohttp import web

from vidwiz.auth.guards import require_user, require_user_or_long_term
from vidwiz.context import SESSIONS, UNITS
from vidwiz.notes import service
from vidwiz.notes.schemas import (
    NoteCreateSchema,
    NoteDeletedSchema,
    NoteEditSchema,
    NotePathSchema,
    NoteSchema,
    render_note,
)
from vidwiz.system.openapi import operation
from vidwiz.validation import load_body, load_path
from vidwiz.videos.schemas import VideoPathSchema

routes = web.RouteTableDef()


@routes.get("/v2/videos/{video_id}/notes")
@operation(
    "The caller's notes on a video, oldest first ([] when none)",
    "notes",
    auth="jwt_or_long_term",
    path=VideoPathSchema,
    responses={200: NoteSchema(many=True)},
)
async def list_notes(request: web.Request) -> web.Response:
    # A bad {video_id} is reported before auth, as the reference does (docs/api.md §1.3).
    video_id = load_path(request, VideoPathSchema)["video_id"]
    # The browser extension asks with its long-term token whether notes exist (D16).
    user_id = await require_user_or_long_term(request)
    async with request.app[SESSIONS]() as session:
        notes = await service.list_notes(session, user_id, video_id)
    return web.json_response([render_note(note) for note in notes])


@routes.post("/v2/videos/{video_id}/notes")
@operation(
    "Add a note to a video (creates the video and its fetch tasks when new)",
    "notes",
    auth="jwt_or_long_term",
    path=VideoPathSchema,
    body=NoteCreateSchema,
    responses={201: NoteSchema},
)
async def create_note(request: web.Request) -> web.Response:
    video_id = load_path(request, VideoPathSchema)["video_id"]
    user_id = await require_user_or_long_term(request)
    body = await load_body(request, NoteCreateSchema)
    async with request.app[UNITS]() as work:
        note = await service.create_note(work.session, work.effects, user_id=user_id, video_id=video_id, **body)
    return web.json_response(render_note(note), status=201)


@routes.patch("/v2/notes/{note_id}")
@operation(
    "Edit a note of the caller",
    "notes",
    auth="jwt",
    path=NotePathSchema,
    body=NoteEditSchema,
    responses={200: NoteSchema, 400: "No fields provided for update (BAD_REQUEST)", 404: "Note not found (NOT_FOUND)"},
)
async def update_note(request: web.Request) -> web.Response:
    user_id = require_user(request)
    note_id = load_path(request, NotePathSchema)["note_id"]
    await request.read()  # buffered now, so no connection is held while a slow client uploads
    async with request.app[UNITS]() as work:
        note = await service.get_note_for_user(work.session, user_id, note_id)  # 404 wins over body 422s
        body = await load_body(request, NoteEditSchema)
        note = await service.update_note(work.session, note, **body)
    return web.json_response(render_note(note))


@routes.delete("/v2/notes/{note_id}")
@operation(
    "Delete a note of the caller",
    "notes",
    auth="jwt",
    path=NotePathSchema,
    responses={200: NoteDeletedSchema, 404: "Note not found (NOT_FOUND)"},
)
async def delete_note(request: web.Request) -> web.Response:
    user_id = require_user(request)
    note_id = load_path(request, NotePathSchema)["note_id"]
    async with request.app[UNITS]() as work:
        await service.delete_note(work.session, user_id, note_id)
    return web.json_response({"message": "Note deleted successfully"})
