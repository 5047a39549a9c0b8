"""The /v2/internal video and note endpoints (docs/api.md §5.2, D1, D8, D9)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.conftest import ADMIN, assert_error, queued_jobs
from vidwiz.context import SESSIONS
from vidwiz.notes.models import Note
from vidwiz.tasks.models import Task
from vidwiz.videos.models import Video

VID = "dQw4w9WgXcQ"
VIDEO_KEYS = {"id", "video_id", "title", "metadata", "transcript_available", "summary", "created_at", "updated_at"}
NOTE_KEYS = {"id", "video_id", "timestamp", "text", "generated_by_ai", "created_at", "updated_at", "user_id"}

ENDPOINTS = [
    ("GET", f"/v2/internal/videos/{VID}", None),
    ("GET", f"/v2/internal/videos/{VID}/ai-notes", None),
    ("POST", f"/v2/internal/videos/{VID}/transcript", {"transcript": [{"text": "x"}]}),
    ("POST", f"/v2/internal/videos/{VID}/metadata", {"metadata": {"title": "x"}}),
    ("POST", f"/v2/internal/videos/{VID}/summary", {"summary": "x"}),
    ("PATCH", "/v2/internal/notes/1", {"text": "x"}),
    ("GET", "/v2/internal/tasks?type=transcript", None),
    ("POST", "/v2/internal/tasks/1/result", {"video_id": VID, "success": True}),
]


async def get_video_row(sessions, video_id: str = VID) -> Video | None:
    async with sessions() as session:
        return await session.scalar(select(Video).where(Video.video_id == video_id))


async def video_changed_jobs(client) -> list[tuple]:
    return [job.args for job in await queued_jobs(client.app) if job.function == "video_changed"]


# -- auth and paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, body", ENDPOINTS)
@pytest.mark.parametrize(
    "headers, status, code, message",
    [
        ({}, 401, "UNAUTHORIZED", "Missing or invalid Authorization header"),
        ({"Authorization": "Bearer not-the-admin-token"}, 403, "FORBIDDEN", "Invalid admin token"),
    ],
)
async def test_internal_endpoints_refuse_missing_or_wrong_admin_token(
    client, sessions, method, path, body, headers, status, code, message
):
    resp = await client.request(method, path, json=body, headers=headers)
    assert resp.status == status
    assert_error(await resp.json(), code, message)
    assert await get_video_row(sessions) is None


async def test_internal_endpoints_without_configured_admin_token_are_500(make_client):
    client = await make_client(admin_token=None)
    resp = await client.get(f"/v2/internal/videos/{VID}", headers=ADMIN)
    assert resp.status == 500
    assert_error(await resp.json(), "INTERNAL_ERROR", "Admin token is not configured")


@pytest.mark.parametrize(
    "method, suffix, body",
    [
        ("GET", "", None),
        ("GET", "/ai-notes", None),
        ("POST", "/transcript", {"transcript": []}),
        ("POST", "/metadata", {"metadata": {}}),
        ("POST", "/summary", {}),
    ],
)
async def test_invalid_path_video_id_is_422(client, method, suffix, body):
    resp = await client.request(method, f"/v2/internal/videos/bad{suffix}", json=body, headers=ADMIN)
    assert resp.status == 422
    details = (await resp.json())["error"]["details"]
    assert details == [
        {
            "field": "path.video_id",
            "message": "Value error, video_id must be a valid YouTube video ID",
            "type": "value_error",
        }
    ]


# -- GET video ----------------------------------------------------------------------------------


async def test_get_video(client, sessions, factory):
    resp = await client.get(f"/v2/internal/videos/{VID}", headers=ADMIN)
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Video not found")
    await factory.video(VID, title="T", video_metadata={"a": 1}, summary="S")
    resp = await client.get(f"/v2/internal/videos/{VID}", headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == VIDEO_KEYS
    assert (body["video_id"], body["title"], body["metadata"], body["summary"], body["transcript_available"]) == (
        VID,
        "T",
        {"a": 1},
        "S",
        False,
    )
    assert body["created_at"].endswith("+0000")


# -- transcript writer --------------------------------------------------------------------------


async def test_store_transcript_upserts_video_and_marks_available(client, sessions, settings):
    transcript = [{"text": "hello", "offset": 0.0, "duration": 1.5}, {"text": "world", "extra": None}]
    resp = await client.post(f"/v2/internal/videos/{VID}/transcript", json={"transcript": transcript}, headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == VIDEO_KEYS
    assert body["video_id"] == VID and body["transcript_available"] is True
    path = settings.transcript_dir / "transcripts" / f"{VID}.json"
    assert path.read_text(encoding="utf-8") == json.dumps(transcript)
    assert (VID,) in await video_changed_jobs(client)
    async with sessions() as session:
        assert (await session.scalars(select(Task))).all() == []  # writers never touch tasks


async def test_store_empty_transcript_does_not_mark_available(client, sessions, settings):
    resp = await client.post(f"/v2/internal/videos/{VID}/transcript", json={"transcript": []}, headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["transcript_available"] is False  # D8
    assert (await get_video_row(sessions)) is not None  # the video is still upserted
    assert not (settings.transcript_dir / "transcripts" / f"{VID}.json").exists()


@pytest.mark.parametrize(
    "body, field, message, kind",
    [
        ({}, "body.transcript", "Field required", "missing"),
        ({"transcript": None}, "body.transcript", "Input should be a valid list", "list_type"),
        ({"transcript": "text"}, "body.transcript", "Input should be a valid list", "list_type"),
        ({"transcript": [1]}, "body.transcript", "Value error, transcript items must be dictionaries", "value_error"),
        (
            {"transcript": [{"offset": 0}]},
            "body.transcript",
            "Value error, transcript items must contain 'text' field",
            "value_error",
        ),
    ],
)
async def test_store_transcript_rejects_bad_bodies(client, sessions, body, field, message, kind):
    resp = await client.post(f"/v2/internal/videos/{VID}/transcript", json=body, headers=ADMIN)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"] == [{"field": field, "message": message, "type": kind}]
    assert await get_video_row(sessions) is None


async def test_unwritable_store_is_503_and_commits_nothing(make_client, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a transcript directory below a regular file: every write fails
    client = await make_client(transcript_dir=blocker / "transcripts")
    resp = await client.post(
        f"/v2/internal/videos/{VID}/transcript", json={"transcript": [{"text": "x"}]}, headers=ADMIN
    )
    assert resp.status == 503
    assert_error(await resp.json(), "SERVICE_UNAVAILABLE", "Transcript storage is unavailable, try again later")
    async with client.app[SESSIONS]() as session:
        assert await session.scalar(select(Video).where(Video.video_id == VID)) is None


# -- metadata writer ----------------------------------------------------------------------------


# D9: a metadata title is authoritative and replaces a user-supplied one; no usable title leaves it.
@pytest.mark.parametrize(
    "existing_title, metadata_title, expected",
    [
        (None, "Meta title", "Meta title"),
        ("", "Meta title", "Meta title"),
        ("Mine", "Meta title", "Meta title"),
        ("Mine", None, "Mine"),
        ("Mine", "   ", "Mine"),
        ("Mine", 5, "Mine"),
        (None, None, None),
    ],
)
async def test_store_metadata_replaces_metadata_and_its_title_wins(
    client, sessions, existing_title, metadata_title, expected, factory
):
    await factory.video(VID, title=existing_title, video_metadata={"old": 1, "keep": "no"})
    metadata = {"duration": 10, "nested": {"a": [1, 2]}}
    if metadata_title is not None:
        metadata["title"] = metadata_title
    resp = await client.post(f"/v2/internal/videos/{VID}/metadata", json={"metadata": metadata}, headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert body["metadata"] == metadata and body["title"] == expected
    assert (VID,) in await video_changed_jobs(client)


async def test_store_metadata_upserts_and_accepts_empty_object(client, sessions):
    resp = await client.post(f"/v2/internal/videos/{VID}/metadata", json={"metadata": {}}, headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert (body["metadata"], body["title"]) == ({}, None)
    assert (await get_video_row(sessions)).video_metadata == {}


@pytest.mark.parametrize(
    "body, kind", [({}, "missing"), ({"metadata": None}, "dict_type"), ({"metadata": [1]}, "dict_type")]
)
async def test_store_metadata_rejects_bad_bodies(client, body, kind):
    resp = await client.post(f"/v2/internal/videos/{VID}/metadata", json=body, headers=ADMIN)
    assert resp.status == 422
    details = (await resp.json())["error"]["details"]
    assert [(d["field"], d["type"]) for d in details] == [("body.metadata", kind)]


# -- summary writer -----------------------------------------------------------------------------


async def test_store_summary(client, sessions):
    resp = await client.post(f"/v2/internal/videos/{VID}/summary", json={"summary": "A summary"}, headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["summary"] == "A summary"
    for no_op in ({}, {"summary": None}):
        resp = await client.post(f"/v2/internal/videos/{VID}/summary", json=no_op, headers=ADMIN)
        assert (await resp.json())["summary"] == "A summary"
    resp = await client.post(f"/v2/internal/videos/{VID}/summary", json={"summary": ""}, headers=ADMIN)
    assert (await resp.json())["summary"] == ""
    assert (await get_video_row(sessions)).summary == ""
    resp = await client.post(f"/v2/internal/videos/{VID}/summary", json={"summary": "x" * 10000}, headers=ADMIN)
    assert resp.status == 200
    assert (VID,) in await video_changed_jobs(client)


async def test_store_summary_null_on_new_video_upserts_it(client, sessions):
    resp = await client.post(f"/v2/internal/videos/{VID}/summary", json={"summary": None}, headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["summary"] is None
    assert await get_video_row(sessions) is not None


@pytest.mark.parametrize("summary, kind", [("x" * 10001, "string_too_long"), (5, "string_type")])
async def test_store_summary_rejects_bad_values(client, sessions, summary, kind):
    resp = await client.post(f"/v2/internal/videos/{VID}/summary", json={"summary": summary}, headers=ADMIN)
    assert resp.status == 422
    details = (await resp.json())["error"]["details"]
    assert [(d["field"], d["type"]) for d in details] == [("body.summary", kind)]
    assert await get_video_row(sessions) is None


# -- ai-notes listing ---------------------------------------------------------------------------


async def test_ai_notes_lists_empty_notes_of_users_with_ai_notes_enabled(client, sessions, factory):
    enabled = await factory.user_row(profile_data={"ai_notes_enabled": True, "other": 1})
    disabled = await factory.user_row(profile_data={"ai_notes_enabled": False})
    no_profile = await factory.user_row(profile_data=None)
    first = await factory.note_row(enabled, VID, None, timestamp="0:01")
    await factory.note_row(enabled, VID, "has text")
    second = await factory.note_row(enabled, VID, "", timestamp="1:02")
    await factory.note_row(disabled, VID, None)
    await factory.note_row(no_profile, VID, None)
    await factory.note_row(enabled, "other000001", None)
    resp = await client.get(f"/v2/internal/videos/{VID}/ai-notes", headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert body["video_id"] == VID
    assert body["message"] == "Successfully retrieved notes for AI note generation."
    assert [note["id"] for note in body["notes"]] == [first, second]
    assert set(body["notes"][0]) == NOTE_KEYS
    assert (body["notes"][0]["user_id"], body["notes"][0]["timestamp"], body["notes"][0]["text"]) == (
        enabled,
        "0:01",
        None,
    )


async def test_ai_notes_not_found_cases(client, sessions, factory):
    resp = await client.get(f"/v2/internal/videos/{VID}/ai-notes", headers=ADMIN)
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Video not found")
    disabled = await factory.user_row(profile_data={"ai_notes_enabled": False})
    await factory.note_row(disabled, VID, None)
    resp = await client.get(f"/v2/internal/videos/{VID}/ai-notes", headers=ADMIN)
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "No notes found for users with AI notes enabled")


# -- note patch ---------------------------------------------------------------------------------


async def test_patch_note(client, sessions, factory):
    user = await factory.user_row(profile_data=None)
    note_id = await factory.note_row(user, VID, None)
    resp = await client.patch(
        f"/v2/internal/notes/{note_id}", json={"text": "AI text", "generated_by_ai": True}, headers=ADMIN
    )
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == NOTE_KEYS
    assert (body["id"], body["text"], body["generated_by_ai"], body["user_id"]) == (note_id, "AI text", True, user)
    for no_op in ({}, {"text": None, "generated_by_ai": None}):
        resp = await client.patch(f"/v2/internal/notes/{note_id}", json=no_op, headers=ADMIN)
        assert resp.status == 200
        assert ((await resp.json())["text"], (await resp.json())["generated_by_ai"]) == ("AI text", True)
    resp = await client.patch(f"/v2/internal/notes/{note_id}", json={"text": ""}, headers=ADMIN)
    assert (await resp.json())["text"] == ""


async def test_patch_note_errors(client, sessions, factory):
    user = await factory.user_row(profile_data=None)
    note_id = await factory.note_row(user, VID, "keep")
    for missing in (999999, 0, -5, 2**40):
        resp = await client.patch(f"/v2/internal/notes/{missing}", json={"text": "x"}, headers=ADMIN)
        assert resp.status == 404
        assert_error(await resp.json(), "NOT_FOUND", "Note not found")
    resp = await client.patch(f"/v2/internal/notes/{note_id}", json={"text": "x", "user_id": 5}, headers=ADMIN)
    assert resp.status == 422
    assert [(d["field"], d["type"]) for d in (await resp.json())["error"]["details"]] == [
        ("body.user_id", "extra_forbidden")
    ]
    resp = await client.patch(f"/v2/internal/notes/{note_id}", json={"generated_by_ai": "yes"}, headers=ADMIN)
    assert resp.status == 422
    resp = await client.patch("/v2/internal/notes/abc", json={"text": "x"}, headers=ADMIN)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"][0]["field"] == "path.note_id"
    async with sessions() as session:
        assert (await session.get(Note, note_id)).text == "keep"


async def test_patch_note_text_is_capped(client, sessions, factory):
    user = await factory.user_row(profile_data=None)
    note_id = await factory.note_row(user, VID, "keep")
    resp = await client.patch(f"/v2/internal/notes/{note_id}", json={"text": "x" * 20_001}, headers=ADMIN)
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, "VALIDATION_ERROR", "Request validation failed")
    assert body["error"]["details"] == [
        {"field": "body.text", "message": "String should have at most 20000 characters", "type": "string_too_long"}
    ]
    async with sessions() as session:
        assert (await session.get(Note, note_id)).text == "keep"
    resp = await client.patch(f"/v2/internal/notes/{note_id}", json={"text": "x" * 20_000}, headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["text"] == "x" * 20_000
