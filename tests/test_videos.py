"""GET /v2/videos and GET /v2/videos/{video_id} (docs/api.md §1.5, §3.2, D1, D3, D9)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from tests.conftest import ADMIN, assert_error, auth

A, B, C, D = "aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc", "ddddddddddd"
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$")


async def list_videos(client, token, **query):
    resp = await client.get("/v2/videos", params=query, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return await resp.json()


def ids(page):
    return [v["video_id"] for v in page["videos"]]


# -- list -----------------------------------------------------------------------------------------


async def test_list_is_empty_for_a_new_user(client, factory):
    token, _ = await factory.user()
    assert await list_videos(client, token) == {"videos": [], "total": 0, "page": 1, "per_page": 10, "total_pages": 0}


async def test_list_shows_each_noted_video_once_with_exact_shape(client, factory):
    token, _ = await factory.user()
    await factory.note(token, A, video_title="Alpha")
    await factory.note(token, A, video_title="ignored: title already set")
    await factory.note(token, B)
    await factory.set_video(B, video_metadata={"title": "Beta from metadata", "duration": 60})

    page = await list_videos(client, token)
    assert page["total"] == 2 and page["total_pages"] == 1
    by_id = {v["video_id"]: v for v in page["videos"]}
    assert by_id == {
        A: {"video_id": A, "title": "Alpha", "metadata": None},
        B: {"video_id": B, "title": None, "metadata": {"title": "Beta from metadata", "duration": 60}},
    }


async def test_list_is_scoped_to_the_caller(client, factory):
    alice, _ = await factory.user()
    bob, _ = await factory.user()
    await factory.note(alice, A)
    await factory.note(bob, B)
    await factory.note(bob, A)
    assert ids(await list_videos(client, alice)) == [A]
    assert sorted(ids(await list_videos(client, bob))) == [A, B]


async def test_pagination(client, factory):
    token, _ = await factory.user()
    base = datetime(2025, 1, 1)
    for offset, video_id in enumerate([A, B, C]):
        await factory.note(token, video_id)
        await factory.set_video(video_id, created_at=base + timedelta(days=offset))

    first = await list_videos(client, token, per_page=2)
    assert (ids(first), first["total"], first["page"], first["per_page"], first["total_pages"]) == ([C, B], 3, 1, 2, 2)
    second = await list_videos(client, token, per_page=2, page=2)
    assert (ids(second), second["page"]) == ([A], 2)
    beyond = await list_videos(client, token, per_page=2, page=5)
    assert (ids(beyond), beyond["total"], beyond["total_pages"]) == ([], 3, 2)
    assert ids(await list_videos(client, token, per_page=50)) == [C, B, A]
    huge = await list_videos(client, token, page=10**30)  # no bound in the contract: just an empty page
    assert (ids(huge), huge["page"], huge["total"]) == ([], 10**30, 3)


async def test_sorts_with_id_tiebreaker(client, factory):
    token, _ = await factory.user()
    same_time = datetime(2025, 3, 1, 12, 0, 0)
    for video_id, title in [(A, "beta"), (B, "Alpha"), (C, "alpha2"), (D, "beta")]:
        await factory.note(token, video_id, video_title=title)
        await factory.set_video(video_id, created_at=same_time)
    await factory.set_video(C, created_at=same_time + timedelta(hours=1))

    assert ids(await list_videos(client, token)) == [C, D, B, A]
    assert ids(await list_videos(client, token, sort="created_at_desc")) == [C, D, B, A]
    assert ids(await list_videos(client, token, sort="created_at_asc")) == [A, B, D, C]
    # Plain column order (byte order on both backends for ASCII: uppercase first).
    assert ids(await list_videos(client, token, sort="title_asc")) == [B, C, A, D]
    assert ids(await list_videos(client, token, sort="title_desc")) == [D, A, C, B]


async def test_search_is_trimmed_case_insensitive_and_ignores_short_queries(client, factory):
    token, _ = await factory.user()
    await factory.note(token, A, video_title="Learning Rust in 2025")
    await factory.note(token, B, video_title="Python tips")
    await factory.note(token, C)
    await factory.set_video(C, video_metadata={"title": "Rusty metadata-only title"})

    assert sorted(ids(await list_videos(client, token, q="  rUsT "))) == [A, C]
    assert ids(await list_videos(client, token, q="PYTHON")) == [B]
    assert ids(await list_videos(client, token, q="metadata-only")) == [C]
    assert len(ids(await list_videos(client, token, q=" r "))) == 3  # < 2 chars after trim: ignored
    assert len(ids(await list_videos(client, token, q=""))) == 3
    page = await list_videos(client, token, q="nothing like this")
    assert (page["videos"], page["total"], page["total_pages"]) == ([], 0, 0)


async def test_search_treats_like_wildcards_literally(client, factory):
    token, _ = await factory.user()
    await factory.note(token, A, video_title="Rust 100% guide")
    await factory.note(token, B, video_title="Rust 1000 guide")
    await factory.note(token, C, video_title="snake_case tips")
    await factory.note(token, D, video_title="snakeXcase AC/DC tips")

    assert ids(await list_videos(client, token, q="0%")) == [A]
    assert ids(await list_videos(client, token, q="e_c")) == [C]
    assert ids(await list_videos(client, token, q="%%")) == []
    assert ids(await list_videos(client, token, q="c/d")) == [D]


async def test_out_of_range_pagination_is_422(client, factory):
    token, _ = await factory.user()
    for query, field, kind in [
        ({"page": "0"}, "query.page", "greater_than_equal"),
        ({"page": "-1"}, "query.page", "greater_than_equal"),
        ({"page": "x"}, "query.page", "int_parsing"),
        ({"per_page": "0"}, "query.per_page", "greater_than_equal"),
        ({"per_page": "51"}, "query.per_page", "less_than_equal"),
        ({"per_page": "1.5"}, "query.per_page", "int_parsing"),
        ({"q": "ab\x00c"}, "query.q", "value_error"),
    ]:
        resp = await client.get("/v2/videos", params=query, headers=auth(token))
        assert resp.status == 422, query
        body = await resp.json()
        assert_error(body, "VALIDATION_ERROR", "Request validation failed")
        assert [(d["field"], d["type"]) for d in body["error"]["details"]] == [(field, kind)], query


async def test_invalid_sort_is_400(client, factory):
    token, _ = await factory.user()
    resp = await client.get("/v2/videos", params={"sort": "views_desc"}, headers=auth(token))
    assert resp.status == 400
    assert_error(await resp.json(), "BAD_REQUEST", "Invalid sort parameter")
    # Bad pagination is reported first (422 before the sort check, as in the reference).
    resp = await client.get("/v2/videos", params={"sort": "nope", "page": "0"}, headers=auth(token))
    assert resp.status == 422


async def test_list_requires_an_access_token(client, factory):
    resp = await client.get("/v2/videos")
    assert resp.status == 401
    assert_error(await resp.json(), "UNAUTHORIZED", "Missing or invalid Authorization header")
    resp = await client.get("/v2/videos", headers=auth("garbage"))
    assert_error(await resp.json(), "UNAUTHORIZED", "Invalid or expired token")
    token, _ = await factory.user()
    long_term = (await (await client.post("/v2/auth/tokens", headers=auth(token))).json())["token"]
    resp = await client.get("/v2/videos", headers=auth(long_term))
    assert resp.status == 401
    assert_error(await resp.json(), "UNAUTHORIZED", "Long-term tokens are not allowed for this endpoint")


# -- single video ----------------------------------------------------------------------------------


async def test_get_video_returns_the_full_object(client, factory):
    token, _ = await factory.user()
    await factory.note(token, A, video_title="Alpha")
    await factory.set_video(A, video_metadata={"title": "Alpha (meta)"}, transcript_available=True, summary="Short.")

    resp = await client.get(f"/v2/videos/{A}", headers=auth(token))
    assert resp.status == 200
    video = await resp.json()
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
    assert isinstance(video["id"], int)
    assert (video["video_id"], video["title"], video["metadata"]) == (A, "Alpha", {"title": "Alpha (meta)"})
    assert (video["transcript_available"], video["summary"]) == (True, "Short.")
    assert DATETIME.match(video["created_at"]) and DATETIME.match(video["updated_at"])


async def test_get_video_is_scoped_to_users_with_a_note(client, factory):
    alice, _ = await factory.user()
    bob, _ = await factory.user()
    await factory.note(alice, A)

    resp = await client.get(f"/v2/videos/{A}", headers=auth(bob))  # exists, but not Bob's
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Video not found")
    resp = await client.get(f"/v2/videos/{B}", headers=auth(alice))  # does not exist
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Video not found")

    await factory.note(bob, A)
    assert (await client.get(f"/v2/videos/{A}", headers=auth(bob))).status == 200


async def test_get_video_after_starting_a_conversation_as_the_wiz_page_does(client, factory):
    """D3 revised: the Wiz page creates a conversation for a video the user has no note on,
    then polls the video until its transcript is available."""
    alice, _ = await factory.user()
    bob, _ = await factory.user()
    carol, _ = await factory.user()
    await factory.conversation(auth(alice), A)

    resp = await client.get(f"/v2/videos/{A}", headers=auth(alice))
    assert resp.status == 200, await resp.text()
    video = await resp.json()
    assert (video["video_id"], video["transcript_available"], video["metadata"], video["summary"]) == (
        A,
        False,
        None,
        None,
    )
    assert ids(await list_videos(client, alice)) == []  # the list stays notes-only

    # Neither a note nor a conversation: 404, though the video exists and Alice can read it.
    resp = await client.get(f"/v2/videos/{A}", headers=auth(bob))
    assert resp.status == 404
    assert_error(await resp.json(), "NOT_FOUND", "Video not found")
    # Bob's own conversation is on another video: it grants that one only.
    await factory.conversation(auth(bob), B)
    assert (await client.get(f"/v2/videos/{B}", headers=auth(bob))).status == 200
    assert (await client.get(f"/v2/videos/{A}", headers=auth(bob))).status == 404
    assert (await client.get(f"/v2/videos/{B}", headers=auth(alice))).status == 404
    # A guest's conversation grants no user anything.
    await factory.conversation({"X-Guest-Session-ID": "guest-1"}, C)
    assert (await client.get(f"/v2/videos/{C}", headers=auth(carol))).status == 404


async def test_get_video_after_deleting_the_last_note_is_404(client, factory):
    token, _ = await factory.user()
    note = await factory.note(token, A)
    assert (await client.delete(f"/v2/notes/{note['id']}", headers=auth(token))).status == 200
    resp = await client.get(f"/v2/videos/{A}", headers=auth(token))
    assert resp.status == 404
    assert ids(await list_videos(client, token)) == []


async def test_get_video_path_is_validated_before_auth(client, factory):
    resp = await client.get("/v2/videos/bad")
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, "VALIDATION_ERROR", "Request validation failed")
    assert body["error"]["details"] == [
        {
            "field": "path.video_id",
            "message": "Value error, video_id must be a valid YouTube video ID",
            "type": "value_error",
        }
    ]
    resp = await client.get(f"/v2/videos/{A}")
    assert resp.status == 401
    token, _ = await factory.user()
    long_term = (await (await client.post("/v2/auth/tokens", headers=auth(token))).json())["token"]
    resp = await client.get(f"/v2/videos/{A}", headers=auth(long_term))
    assert_error(await resp.json(), "UNAUTHORIZED", "Long-term tokens are not allowed for this endpoint")


async def test_get_video_accepts_a_padded_id_in_the_path(client, factory):
    token, _ = await factory.user()
    await factory.note(token, A)
    resp = await client.get(f"/v2/videos/%20{A}%20", headers=auth(token))
    assert resp.status == 200
    assert (await resp.json())["video_id"] == A


# -- title (D9) ------------------------------------------------------------------------------------


async def get_title(client, token, video_id=A):
    resp = await client.get(f"/v2/videos/{video_id}", headers=auth(token))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["title"]


async def test_video_title_longer_than_255_characters_is_422(client, factory):
    token, _ = await factory.user()
    resp = await client.post(
        f"/v2/videos/{A}/notes", json={"timestamp": "0:01", "video_title": "t" * 256}, headers=auth(token)
    )
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, "VALIDATION_ERROR", "Request validation failed")
    assert body["error"]["details"] == [
        {"field": "body.video_title", "message": "String should have at most 255 characters", "type": "string_too_long"}
    ]
    await factory.note(token, A, video_title="t" * 255)
    assert await get_title(client, token) == "t" * 255


async def test_stored_metadata_title_replaces_a_user_title(client, factory):
    token, _ = await factory.user()
    await factory.note(token, A, video_title="Mine")
    assert await get_title(client, token) == "Mine"
    resp = await client.post(
        f"/v2/internal/videos/{A}/metadata", json={"metadata": {"title": "Official"}}, headers=ADMIN
    )
    assert resp.status == 200
    assert await get_title(client, token) == "Official"
    # Later user titles never replace it; metadata without a title leaves it.
    await factory.note(token, A, video_title="Another")
    assert await get_title(client, token) == "Official"
    resp = await client.post(f"/v2/internal/videos/{A}/metadata", json={"metadata": {"duration": 5}}, headers=ADMIN)
    assert resp.status == 200
    assert await get_title(client, token) == "Official"
    # Newer metadata with a title wins again.
    await client.post(f"/v2/internal/videos/{A}/metadata", json={"metadata": {"title": "Renamed"}}, headers=ADMIN)
    assert await get_title(client, token) == "Renamed"


async def test_metadata_stored_first_keeps_its_title_against_note_titles(client, factory):
    token, _ = await factory.user()
    resp = await client.post(
        f"/v2/internal/videos/{A}/metadata", json={"metadata": {"title": "Official"}}, headers=ADMIN
    )
    assert resp.status == 200
    await factory.note(token, A, video_title="Mine")
    assert await get_title(client, token) == "Official"
