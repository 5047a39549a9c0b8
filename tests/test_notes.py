"""Notes: list, create (JWT or long-term token), update, delete; tasks, outbox (docs/api.md §3.3, D5, D7)."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

import pytest
from sqlalchemy import func, select, text, update

from tests.conftest import ADMIN, assert_error, auth, queued_jobs
from vidwiz.errors import NotFound
from vidwiz.models import Note, OutboxMessage, Task, TaskStatus, Video
from vidwiz.notes import service as notes_service

VID = "dQw4w9WgXcQ"
OTHER = "9bZkp7q19f0"
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$")
NOTE_KEYS = {"id", "video_id", "timestamp", "text", "generated_by_ai", "created_at", "updated_at", "user_id"}
INVALID_ID = "Value error, video_id must be a valid YouTube video ID"
UNSTORABLE = "Value error, string must not contain NUL characters or unpaired surrogates"


async def post_note(client, token, video_id=VID, **body):
    body = {"timestamp": "01:23", **body}
    return await client.post(f"/v2/videos/{video_id}/notes", json=body, headers=auth(token))


async def long_term_token(client, token):
    resp = await client.post("/v2/auth/tokens", headers=auth(token))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["token"]


async def rows(sessions, model, *where):
    async with sessions() as session:
        return list(await session.scalars(select(model).where(*where).order_by(model.id)))


async def tasks_by_type(sessions, video_id=VID):
    tasks = await rows(sessions, Task)
    out: dict[str, list[Task]] = {}
    for task in tasks:
        if task.task_details == {"video_id": video_id}:
            out.setdefault(task.task_type, []).append(task)
    return out


async def queued_functions(client):
    return [job.function for job in await queued_jobs(client.app)]


def detail_fields(body):
    return [(d["field"], d["message"], d["type"]) for d in body["error"]["details"]]


# -- create -----------------------------------------------------------------------------------------


async def test_create_returns_the_note_and_upserts_the_video(client, factory, sessions):
    token, user_id = await factory.user()
    resp = await post_note(client, token, text="  Great point  ", video_title="Never Gonna", extra="ignored")
    assert resp.status == 201
    note = await resp.json()
    assert set(note) == NOTE_KEYS
    assert isinstance(note["id"], int)
    assert (note["video_id"], note["timestamp"], note["text"], note["generated_by_ai"], note["user_id"]) == (
        VID,
        "01:23",
        "Great point",
        False,
        user_id,
    )
    assert DATETIME.match(note["created_at"]) and DATETIME.match(note["updated_at"])

    [video] = await rows(sessions, Video)
    assert (video.video_id, video.title, video.transcript_available) == (VID, "Never Gonna", False)


async def test_title_is_filled_once_and_never_overwritten(client, factory, sessions):
    token, _ = await factory.user()
    await factory.note(token, VID)
    await factory.note(token, VID, video_title="")
    assert (await rows(sessions, Video))[0].title is None
    await factory.note(token, VID, video_title="First title")
    await factory.note(token, VID, video_title="Second title")
    assert (await rows(sessions, Video))[0].title == "First title"


async def test_text_is_trimmed_and_empty_becomes_null(client, factory):
    token, _ = await factory.user()
    for raw, stored in [("  ", None), ("", None), ("\n\t", None), (None, None), (" x ", "x")]:
        assert (await factory.note(token, VID, text=raw))["text"] == stored, raw


async def test_timestamp_is_stored_verbatim(client, factory):
    token, _ = await factory.user()
    for timestamp in ["1:2", "01:23", "1:02:03", "12:", ":12", "a1:b2"]:
        assert (await factory.note(token, VID, timestamp=timestamp))["timestamp"] == timestamp


CREATE_ERRORS = [
    ({"timestamp": "123"}, ("body.timestamp", "Value error, timestamp must contain at least one ':'", "value_error")),
    (
        {"timestamp": "a:b"},
        ("body.timestamp", "Value error, timestamp must contain at least two numbers", "value_error"),
    ),
    (
        {"timestamp": "1:"},
        ("body.timestamp", "Value error, timestamp must contain at least two numbers", "value_error"),
    ),
    ({"timestamp": ""}, ("body.timestamp", "Value error, timestamp must contain at least one ':'", "value_error")),
    ({"timestamp": 12}, ("body.timestamp", "Input should be a valid string", "string_type")),
    ({"timestamp": None}, ("body.timestamp", "Input should not be null", "none_forbidden")),
    ({"text": "no timestamp"}, ("body.timestamp", "Field required", "missing")),
    ({"timestamp": "1:2", "text": 5}, ("body.text", "Input should be a valid string", "string_type")),
    ({"timestamp": "1:2", "video_title": ["x"]}, ("body.video_title", "Input should be a valid string", "string_type")),
    # Strings no database driver can store are a 422, never a 500.
    ({"timestamp": "1:2\x00"}, ("body.timestamp", UNSTORABLE, "value_error")),
    ({"timestamp": "1:2", "text": "a\x00b"}, ("body.text", UNSTORABLE, "value_error")),
    ({"timestamp": "1:2", "text": "a\ud800b"}, ("body.text", UNSTORABLE, "value_error")),
    ({"timestamp": "1:2", "video_title": "\udfff"}, ("body.video_title", UNSTORABLE, "value_error")),
    # Length caps (the shape checks of a too-long timestamp are not reported on top).
    (
        {"timestamp": "1:2", "text": "x" * 20_001},
        ("body.text", "String should have at most 20000 characters", "string_too_long"),
    ),
    ({"timestamp": "1:" + "2" * 15}, ("body.timestamp", "String should have at most 16 characters", "string_too_long")),
    ({"timestamp": "x" * 1_000_000}, ("body.timestamp", "String should have at most 16 characters", "string_too_long")),
    (
        {"timestamp": "1:2", "video_title": "t" * 256},
        ("body.video_title", "String should have at most 255 characters", "string_too_long"),
    ),
]


async def test_create_validation_errors(client, factory, sessions):
    token, _ = await factory.user()
    for body, expected in CREATE_ERRORS:
        resp = await client.post(f"/v2/videos/{VID}/notes", json=body, headers=auth(token))
        assert resp.status == 422, body
        payload = await resp.json()
        assert_error(payload, "VALIDATION_ERROR", "Request validation failed")
        assert detail_fields(payload) == [expected], body
    assert await rows(sessions, Note) == [] and await rows(sessions, Video) == []


async def test_values_at_the_length_caps_are_stored(client, factory):
    token, _ = await factory.user()
    note = await factory.note(token, VID, timestamp="1:" + "2" * 14, text="x" * 20_000, video_title="t" * 255)
    assert (note["timestamp"], note["text"]) == ("1:" + "2" * 14, "x" * 20_000)


async def test_length_caps_are_in_the_openapi_document(make_client):
    local = await make_client(environment="local")
    spec = await (await local.get("/v2/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    create = schemas["NoteCreate"]["properties"]
    assert (create["text"]["maxLength"], create["timestamp"]["maxLength"], create["video_title"]["maxLength"]) == (
        20_000,
        16,
        255,
    )
    assert schemas["NoteUpdate"]["properties"]["text"]["maxLength"] == 20_000
    listing = spec["paths"]["/v2/videos/{video_id}/notes"]["get"]
    assert listing["security"] == [{"bearerJWT": []}, {"longTermToken": []}]  # D16


async def test_create_rejects_missing_and_malformed_bodies(client, factory):
    token, _ = await factory.user()
    json_type = {**auth(token), "Content-Type": "application/json"}
    resp = await client.post(f"/v2/videos/{VID}/notes", headers=json_type)
    assert (resp.status, detail_fields(await resp.json())) == (422, [("body", "Field required", "missing")])
    resp = await client.post(f"/v2/videos/{VID}/notes", data="{nope", headers=json_type)
    assert (resp.status, detail_fields(await resp.json())) == (422, [("body.0", "JSON decode error", "json_invalid")])
    resp = await client.post(f"/v2/videos/{VID}/notes", json=["1:2"], headers=auth(token))
    assert resp.status == 422


# -- path video_id ----------------------------------------------------------------------------------


async def test_invalid_path_video_id_is_422_before_auth(client):
    cases = [
        ("bad", INVALID_ID),
        ("dQw4w9WgXc", INVALID_ID),
        ("dQw4w9WgXcQQ", INVALID_ID),
        ("%20%20", "Value error, video_id cannot be empty"),
        (f"{VID}&list=PL123", "Value error, playlist URLs are not supported"),
    ]
    for segment, message in cases:
        for method in (client.get, client.post):
            resp = await method(f"/v2/videos/{segment}/notes", json={"timestamp": "1:2"})
            assert resp.status == 422, segment
            payload = await resp.json()
            assert_error(payload, "VALIDATION_ERROR", "Request validation failed")
            assert detail_fields(payload) == [("path.video_id", message, "value_error")], segment


async def test_path_video_id_is_normalised(client, factory, sessions):
    token, _ = await factory.user()
    note = await factory.note(token, f"%20{VID}%20")
    assert note["video_id"] == VID
    resp = await client.get(f"/v2/videos/%09{VID}/notes", headers=auth(token))
    assert [n["id"] for n in await resp.json()] == [note["id"]]
    assert [v.video_id for v in await rows(sessions, Video)] == [VID]


async def test_percent_encoded_urls_in_the_path_are_normalised(client, factory, sessions):
    # An addition: aiohttp routes on the raw path, so an encoded URL reaches the normaliser
    # (the reference answered 404 because Starlette decodes before routing).
    token, _ = await factory.user()
    for url in [
        f"https://www.youtube.com/watch?v={VID}&t=42s",
        f"https://m.youtube.com/watch?v={VID}",
        f"https://music.youtube.com/watch?v={VID}",
        f"youtu.be/{VID}",
        f"https://www.youtube.com/shorts/{VID}",
        f"https://www.youtube.com/embed/{VID}",
        f"https://www.youtube.com/live/{VID}?si=x",
    ]:
        assert (await factory.note(token, quote(url, safe="")))["video_id"] == VID, url
    assert [v.video_id for v in await rows(sessions, Video)] == [VID]

    for url, message in [
        (f"https://www.youtube.com/watch?v={VID}&list=PL1", "Value error, playlist URLs are not supported"),
        ("https://www.youtube.com/playlist?list=PL1", "Value error, playlist URLs are not supported"),
        (f"https://vimeo.com/{VID}", INVALID_ID),
        ("https://www.youtube.com/watch?v=tooShort", INVALID_ID),
    ]:
        resp = await post_note(client, token, quote(url, safe=""))
        assert resp.status == 422, url
        assert detail_fields(await resp.json()) == [("path.video_id", message, "value_error")], url
    assert len(await rows(sessions, Note)) == 7


# -- auth -------------------------------------------------------------------------------------------


async def test_create_requires_auth_before_body_validation(client):
    resp = await client.post(f"/v2/videos/{VID}/notes", json={"timestamp": "nope"})
    assert resp.status == 401
    assert_error(await resp.json(), "UNAUTHORIZED", "Missing or invalid Authorization header")
    resp = await client.post(f"/v2/videos/{VID}/notes", json={"timestamp": "1:2"}, headers=auth("garbage"))
    assert resp.status == 401
    assert_error(await resp.json(), "UNAUTHORIZED", "Invalid or expired token")


async def test_long_term_token_creates_and_lists_notes_only(client, factory):
    token, user_id = await factory.user()
    other, _ = await factory.user()
    long_term = await long_term_token(client, token)
    resp = await client.get(f"/v2/videos/{VID}/notes", headers=auth(long_term))
    assert (resp.status, await resp.json()) == (200, [])
    await factory.note(other, VID, text="someone else's")
    note = await factory.note(long_term, VID, text="from the extension")
    assert note["user_id"] == user_id

    # D16: the browser extension checks for notes with its long-term token (own notes only).
    resp = await client.get(f"/v2/videos/{VID}/notes", headers=auth(long_term))
    assert (resp.status, await resp.json()) == (200, [note])

    refused = [
        await client.patch(f"/v2/notes/{note['id']}", json={"text": "x"}, headers=auth(long_term)),
        await client.delete(f"/v2/notes/{note['id']}", headers=auth(long_term)),
        await client.get(f"/v2/videos/{VID}", headers=auth(long_term)),
        await client.get("/v2/videos", headers=auth(long_term)),
    ]
    for resp in refused:
        assert resp.status == 401
        assert_error(await resp.json(), "UNAUTHORIZED", "Long-term tokens are not allowed for this endpoint")
    assert await (await client.get(f"/v2/videos/{VID}/notes", headers=auth(token))).json() == [note]


async def test_revoked_long_term_token_is_refused(client, factory, sessions):
    token, _ = await factory.user()
    old = await long_term_token(client, token)
    assert (await client.delete("/v2/auth/tokens", headers=auth(token))).status == 200
    for resp in [await post_note(client, old), await client.get(f"/v2/videos/{VID}/notes", headers=auth(old))]:
        assert resp.status == 401
        assert_error(await resp.json(), "UNAUTHORIZED", "Invalid or revoked long-term token")

    new = await long_term_token(client, token)
    assert new != old
    assert (await post_note(client, old)).status == 401
    assert (await client.get(f"/v2/videos/{VID}/notes", headers=auth(old))).status == 401
    assert (await post_note(client, new)).status == 201
    assert (await client.get(f"/v2/videos/{VID}/notes", headers=auth(new))).status == 200
    assert len(await rows(sessions, Note)) == 1


async def test_list_update_delete_require_an_access_token(client):
    for resp in [
        await client.get(f"/v2/videos/{VID}/notes"),
        await client.patch("/v2/notes/1", json={"text": "x"}),
        await client.delete("/v2/notes/1"),
        await client.patch("/v2/notes/0", json={"bogus": 1}),  # auth wins over path and body 422s
    ]:
        assert resp.status == 401
        assert_error(await resp.json(), "UNAUTHORIZED", "Missing or invalid Authorization header")


# -- list -------------------------------------------------------------------------------------------


async def test_list_is_the_callers_notes_oldest_first(client, factory):
    alice, _ = await factory.user()
    bob, _ = await factory.user()
    first = await factory.note(alice, VID, timestamp="0:10", text="one")
    await factory.note(bob, VID, timestamp="0:15", text="bob's")
    second = await factory.note(alice, VID, timestamp="0:05")
    await factory.note(alice, OTHER, text="other video")

    resp = await client.get(f"/v2/videos/{VID}/notes", headers=auth(alice))
    assert resp.status == 200
    assert await resp.json() == [first, second]
    resp = await client.get("/v2/videos/aaaaaaaaaaa/notes", headers=auth(alice))
    assert (resp.status, await resp.json()) == (200, [])


async def test_users_never_see_each_others_notes_or_videos(client, factory):
    alice, _ = await factory.user()
    bob, _ = await factory.user()
    note = await factory.note(alice, VID, text="private")

    assert await (await client.get(f"/v2/videos/{VID}/notes", headers=auth(bob))).json() == []
    assert (await (await client.get("/v2/videos", headers=auth(bob))).json())["videos"] == []
    assert (await client.get(f"/v2/videos/{VID}", headers=auth(bob))).status == 404
    for resp in [
        await client.patch(f"/v2/notes/{note['id']}", json={"text": "hijack"}, headers=auth(bob)),
        await client.delete(f"/v2/notes/{note['id']}", headers=auth(bob)),
    ]:
        assert resp.status == 404
        assert_error(await resp.json(), "NOT_FOUND", "Note not found")
    assert await (await client.get(f"/v2/videos/{VID}/notes", headers=auth(alice))).json() == [note]


# -- update -----------------------------------------------------------------------------------------


async def test_update_text_and_flag(client, factory):
    token, _ = await factory.user()
    note = await factory.note(token, VID, text="draft")

    resp = await client.patch(f"/v2/notes/{note['id']}", json={"text": "  final  "}, headers=auth(token))
    assert resp.status == 200
    updated = await resp.json()
    assert set(updated) == NOTE_KEYS
    assert (updated["text"], updated["generated_by_ai"]) == ("  final  ", False)  # not trimmed on update
    assert updated["created_at"] == note["created_at"] and DATETIME.match(updated["updated_at"])

    resp = await client.patch(
        f"/v2/notes/{note['id']}", json={"generated_by_ai": True, "text": None}, headers=auth(token)
    )
    assert (await resp.json())["generated_by_ai"] is True
    assert (await resp.json())["text"] == "  final  "  # null means "unchanged"

    resp = await client.patch(f"/v2/notes/{note['id']}", json={"text": ""}, headers=auth(token))
    assert (await resp.json())["text"] == ""
    listed = await (await client.get(f"/v2/videos/{VID}/notes", headers=auth(token))).json()
    assert listed[0]["text"] == "" and listed[0]["generated_by_ai"] is True


async def test_update_without_fields_is_400(client, factory):
    token, _ = await factory.user()
    note = await factory.note(token, VID, text="keep")
    for body in [{}, {"text": None}, {"text": None, "generated_by_ai": None}]:
        resp = await client.patch(f"/v2/notes/{note['id']}", json=body, headers=auth(token))
        assert resp.status == 400, body
        assert_error(await resp.json(), "BAD_REQUEST", "No fields provided for update")


async def test_update_validation_errors(client, factory):
    token, _ = await factory.user()
    note = await factory.note(token, VID, text="keep")
    for body, expected in [
        ({"text": "x", "video_id": VID}, ("body.video_id", "Extra inputs are not permitted", "extra_forbidden")),
        ({"timestamp": "1:2"}, ("body.timestamp", "Extra inputs are not permitted", "extra_forbidden")),
        ({"text": 3}, ("body.text", "Input should be a valid string", "string_type")),
        ({"generated_by_ai": "yes"}, ("body.generated_by_ai", "Input should be a valid boolean", "bool_parsing")),
        ({"text": "nul\x00"}, ("body.text", UNSTORABLE, "value_error")),
        ({"text": "x" * 20_001}, ("body.text", "String should have at most 20000 characters", "string_too_long")),
    ]:
        resp = await client.patch(f"/v2/notes/{note['id']}", json=body, headers=auth(token))
        assert resp.status == 422, body
        payload = await resp.json()
        assert_error(payload, "VALIDATION_ERROR", "Request validation failed")
        assert detail_fields(payload) == [expected], body
    listed = await (await client.get(f"/v2/videos/{VID}/notes", headers=auth(token))).json()
    assert listed == [note]


async def test_update_ownership_404_wins_over_body_errors(client, factory):
    alice, _ = await factory.user()
    bob, _ = await factory.user()
    note = await factory.note(alice, VID)
    resp = await client.patch(f"/v2/notes/{note['id']}", json={"bogus": True}, headers=auth(bob))
    assert resp.status == 404
    resp = await client.patch(
        "/v2/notes/999999", data="{nope", headers={**auth(alice), "Content-Type": "application/json"}
    )
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Note not found")


async def test_note_id_must_be_a_positive_int(client, factory):
    token, _ = await factory.user()
    cases = [
        ("0", "greater_than_equal"),
        ("-3", "greater_than_equal"),
        (str(2**31), "less_than_equal"),  # beyond the INTEGER column: no such note can exist
        (str(10**30), "less_than_equal"),
        ("abc", "int_parsing"),
        ("1.5", "int_parsing"),
    ]
    for note_id, kind in cases:
        for method in (client.patch, client.delete):
            resp = await method(f"/v2/notes/{note_id}", json={"text": "x"}, headers=auth(token))
            assert resp.status == 422, note_id
            payload = await resp.json()
            assert [(d["field"], d["type"]) for d in payload["error"]["details"]] == [("path.note_id", kind)], note_id


# -- delete -----------------------------------------------------------------------------------------


async def test_delete_removes_the_note_but_keeps_the_video(client, factory, sessions):
    token, _ = await factory.user()
    keep = await factory.note(token, VID, text="keep")
    gone = await factory.note(token, VID, text="gone")

    resp = await client.delete(f"/v2/notes/{gone['id']}", headers=auth(token))
    assert (resp.status, await resp.json()) == (200, {"message": "Note deleted successfully"})
    resp = await client.delete(f"/v2/notes/{gone['id']}", headers=auth(token))
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Note not found")
    assert await (await client.get(f"/v2/videos/{VID}/notes", headers=auth(token))).json() == [keep]

    await client.delete(f"/v2/notes/{keep['id']}", headers=auth(token))
    assert [v.video_id for v in await rows(sessions, Video)] == [VID]


async def test_concurrent_deletes_of_one_note_succeed_exactly_once(client, factory, sessions):
    token, _ = await factory.user()
    note = await factory.note(token, VID)
    responses = await asyncio.gather(*[client.delete(f"/v2/notes/{note['id']}", headers=auth(token)) for _ in range(5)])
    assert sorted(resp.status for resp in responses) == [200, 404, 404, 404, 404]
    for resp in responses:
        if resp.status == 404:
            assert_error(await resp.json(), "NOT_FOUND", "Note not found")
    assert await rows(sessions, Note) == []


async def test_concurrent_patches_and_delete_never_fail(client, factory, sessions):
    token, _ = await factory.user()
    note = await factory.note(token, VID, text="draft")
    url = f"/v2/notes/{note['id']}"
    requests = [client.patch(url, json={"text": f"edit {i}"}, headers=auth(token)) for i in range(6)]
    requests.insert(3, client.delete(url, headers=auth(token)))
    responses = await asyncio.gather(*requests)
    assert responses[3].status == 200
    for resp in responses[:3] + responses[4:]:
        assert resp.status in (200, 404), await resp.text()
        if resp.status == 404:
            assert_error(await resp.json(), "NOT_FOUND", "Note not found")
    assert await rows(sessions, Note) == []


async def test_update_of_a_note_deleted_after_it_was_read_is_404(client, factory, sessions):
    """The PATCH handler's window between its ownership read and its write, made deterministic:
    the write must be a 404, not a stale-row 500 (public and internal PATCH share it)."""
    token, user_id = await factory.user()
    note = await factory.note(token, VID, text="draft")
    async with sessions() as patching:
        loaded = await notes_service.get_note_for_user(patching, user_id, note["id"])
        async with sessions() as deleting:
            await notes_service.delete_note(deleting, user_id, note["id"])
            await deleting.commit()  # services never commit: their caller's unit of work does
        with pytest.raises(NotFound):
            await notes_service.update_note(patching, loaded, text="late", generated_by_ai=None)
    assert await rows(sessions, Note) == []


async def test_a_deleted_notes_id_is_never_given_to_another_note(client, factory, sessions):
    """A late internal PATCH meant for the deleted note must not find someone else's."""
    owner, _ = await factory.user()
    other, _ = await factory.user()
    await factory.note(owner, VID, text="first")
    deleted = await factory.note(owner, VID, text="deleted")
    assert (await client.delete(f"/v2/notes/{deleted['id']}", headers=auth(owner))).status == 200

    new = await factory.note(other, VID, text="someone else's")
    assert new["id"] > deleted["id"]
    resp = await client.patch(f"/v2/internal/notes/{deleted['id']}", json={"text": "late AI note"}, headers=ADMIN)
    assert resp.status == 404
    assert [n.text for n in await rows(sessions, Note, Note.id == new["id"])] == ["someone else's"]


# -- tasks ------------------------------------------------------------------------------------------


async def test_note_creation_schedules_missing_fetch_tasks_once(client, factory, sessions):
    token, _ = await factory.user()
    await factory.note(token, VID)
    tasks = await tasks_by_type(sessions)
    assert sorted(tasks) == ["fetch_metadata", "fetch_transcript"]
    for [task] in tasks.values():
        assert (task.status, task.retry_count, task.task_details) == (TaskStatus.PENDING, 0, {"video_id": VID})

    await factory.note(token, VID)
    assert {t: len(v) for t, v in (await tasks_by_type(sessions)).items()} == {
        "fetch_metadata": 1,
        "fetch_transcript": 1,
    }


async def test_only_the_still_missing_task_is_scheduled_again(client, factory, sessions):
    token, _ = await factory.user()
    await factory.note(token, VID)
    async with sessions() as session:  # both tasks finished; metadata stored, transcript still missing
        await session.execute(update(Task).values(status=TaskStatus.COMPLETED))
        await session.execute(update(Video).values(video_metadata={"title": "t"}))
        await session.commit()
    await factory.note(token, VID)
    tasks = await tasks_by_type(sessions)
    assert [t.status for t in tasks["fetch_metadata"]] == [TaskStatus.COMPLETED]
    assert [t.status for t in tasks["fetch_transcript"]] == [TaskStatus.COMPLETED, TaskStatus.PENDING]


async def test_concurrent_notes_on_a_new_video_create_one_task_per_type(client, factory, sessions):
    token, _ = await factory.user()
    other, _ = await factory.user()
    responses = await asyncio.gather(
        *(post_note(client, token if i % 2 else other, text=f"note {i}", video_title=f"title {i}") for i in range(20))
    )
    assert [r.status for r in responses] == [201] * 20
    assert len(await rows(sessions, Note)) == 20
    [video] = await rows(sessions, Video)
    assert video.title.startswith("title ")
    tasks = await tasks_by_type(sessions)
    assert {t: len(v) for t, v in tasks.items()} == {"fetch_metadata": 1, "fetch_transcript": 1}


# -- AI-note outbox ---------------------------------------------------------------------------------


async def test_eligible_note_writes_one_outbox_row_and_wakes_the_relay(client, factory, sessions):
    token, user_id = await factory.user()
    await factory.enable_ai_notes(token)
    await factory.note(token, VID, text="seed the video")
    await factory.set_video(VID, transcript_available=True)
    assert "relay_outbox" not in await queued_functions(client)

    note = await factory.note(token, VID, timestamp="02:03", text="   ")
    [row] = await rows(sessions, OutboxMessage)
    assert (row.kind, row.note_id, row.status, row.attempts) == ("ai_note", note["id"], "pending", 0)
    assert row.body == {"id": note["id"], "video_id": VID, "timestamp": "02:03", "user_id": user_id}
    assert list(row.body) == ["id", "video_id", "timestamp", "user_id"]
    assert "relay_outbox" in await queued_functions(client)

    # The dispatcher's listing shows the same note (the seed note has text, so it is not listed).
    resp = await client.get(f"/v2/internal/videos/{VID}/ai-notes", headers=ADMIN)
    assert resp.status == 200
    assert [n["id"] for n in (await resp.json())["notes"]] == [note["id"]]


async def test_ineligible_notes_write_no_outbox_row(client, factory, sessions):
    disabled, _ = await factory.user()
    enabled, _ = await factory.user()
    await factory.enable_ai_notes(enabled)

    await factory.note(enabled, VID)  # AI notes on, text empty, but no transcript yet
    await factory.set_video(VID, transcript_available=True)
    await factory.note(disabled, VID)  # transcript there, empty text, AI notes off
    await factory.note(enabled, VID, text="mine")  # the user wrote the note
    assert await rows(sessions, OutboxMessage) == []
    assert "relay_outbox" not in await queued_functions(client)


async def test_outbox_row_is_atomic_with_the_note(client, factory, sessions):
    # Break the outbox table: the eligible note's transaction must then leave nothing behind.
    token, _ = await factory.user()
    await factory.enable_ai_notes(token)
    await factory.note(token, VID, text="seed")
    await factory.set_video(VID, transcript_available=True)
    async with sessions() as session:
        await session.execute(text("DROP TABLE outbox"))
        await session.execute(update(Task).values(status=TaskStatus.COMPLETED))
        await session.execute(update(Video).values(title=None))
        await session.commit()

    resp = await post_note(client, token, OTHER, video_title="New video")  # new video, not eligible: fine
    assert resp.status == 201
    resp = await post_note(client, token, video_title="Would be set")  # eligible: the outbox insert fails
    assert resp.status == 500
    assert_error(await resp.json(), "INTERNAL_ERROR", "Internal Server Error")

    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Note).where(Note.video_id == VID)) == 1
        assert await session.scalar(select(Video.title).where(Video.video_id == VID)) is None
        statuses = await session.scalars(select(Task.status).where(Task.task_details["video_id"].as_string() == VID))
        assert set(statuses) == {TaskStatus.COMPLETED}  # the new fetch_metadata task was rolled back
