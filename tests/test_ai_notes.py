"""The built-in AI-note writer (vidwiz/notes/ai_writer.py) behind the outbox relay, against the LLM
stand-in: the note's moment picks the transcript lines, only an empty note is filled, a
provider failure leaves the note untouched and the row pending, an impossible request is
rejected for good, and SQS wins whenever it is configured."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from actors.readiness import video_changed
from actors.relay import relay_outbox
from actors.resources import resources
from tests.conftest import ADMIN, auth, make_outbox_due, outbox_rows
from tests.moto import AWS_ENV, receive_all
from tests.standins import Reply
from vidwiz.models import Note, OutboxMessage
from vidwiz.notes.ai_writer import CONTEXT_MAX_CHARS, fill_empty_note, parse_timestamp, transcript_around
from vidwiz.notes.models import OutboxStatus

A = "aaaaaaaaaaa"
NOTE_TEXT = "The speaker explains how the starter is fed."
TRANSCRIPT = [
    {"text": "welcome to the channel", "offset": 0.0, "duration": 4.0},
    {"text": "first we feed the starter", "offset": 50.0, "duration": 5.0},
    {"text": "with equal parts flour and water", "offset": 62.5, "duration": 5.0},
    {"text": "then we wait twelve hours", "offset": 75.0, "duration": 4.0},
    {"text": "now the shaping", "offset": 300.0, "duration": 4.0},
]


@pytest.fixture
def provider() -> str:
    return "openai"  # both providers in the happy path below


@pytest.fixture
def env(env, llm_standin, provider):
    return {**env, **llm_standin.env(provider)}


async def store_transcript(client, video_id: str = A, transcript=TRANSCRIPT) -> None:
    resp = await client.post(
        f"/v2/internal/videos/{video_id}/transcript", json={"transcript": transcript}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()


async def requested_note(client, factory, actor_ctx, *, timestamp: str = "1:05") -> dict:
    """A blank note by a user with AI notes on, its outbox row written once the transcript came."""
    token, _ = await factory.user()
    await factory.enable_ai_notes(token)
    note = await factory.note(token, A, timestamp=timestamp)
    await store_transcript(client)
    assert (await video_changed(actor_ctx, A))["ai_notes_queued"] == 1
    note["token"] = token
    return note


# -- the happy path --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "gemini"])
async def test_a_blank_note_gets_ai_text_from_the_transcript_around_its_moment(
    client, factory, sessions, actor_ctx, llm_standin
):
    llm_standin.queue(Reply(chunks=[NOTE_TEXT]))
    note = await requested_note(client, factory, actor_ctx)

    assert await relay_outbox(actor_ctx) == {"sent": 1, "failed": 0, "rejected": 0, "delivery": "ai_notes"}
    stored = await factory.read_note(note["id"])
    assert stored.text == NOTE_TEXT and stored.generated_by_ai is True
    [row] = await outbox_rows(sessions)
    assert row.status == "sent" and row.attempts == 1 and row.last_error is None

    [call] = llm_standin.calls
    prompt = call.last_user_text
    assert "1:05" in prompt
    assert "0:50 first we feed the starter" in prompt and "1:15 then we wait twelve hours" in prompt
    assert "welcome to the channel" not in prompt and "now the shaping" not in prompt  # far from 1:05
    assert call.system_text and call.max_tokens

    resp = await client.get(f"/v2/videos/{A}/notes", headers=auth(note["token"]))
    [listed] = await resp.json()
    assert listed["text"] == NOTE_TEXT and listed["generated_by_ai"] is True


async def test_a_second_delivery_changes_nothing(client, factory, sessions, actor_ctx, llm_standin):
    llm_standin.queue(Reply(chunks=[NOTE_TEXT]))
    note = await requested_note(client, factory, actor_ctx)
    await relay_outbox(actor_ctx)
    # At-least-once: the same request comes again (a worker died before marking the row sent).
    async with sessions() as session:
        await session.execute(update(OutboxMessage).values(status=OutboxStatus.PENDING))
        await session.commit()
    await make_outbox_due(sessions)
    llm_standin.default = Reply(chunks=["a different note"])
    assert (await relay_outbox(actor_ctx))["sent"] == 1
    assert (await factory.read_note(note["id"])).text == NOTE_TEXT
    assert len(llm_standin.calls) == 1  # a filled note is not even sent to the model


# -- a user's text is never touched ----------------------------------------------------------------


async def test_text_written_by_the_user_before_the_relay_is_kept(client, factory, actor_ctx, llm_standin):
    note = await requested_note(client, factory, actor_ctx)
    resp = await client.patch(f"/v2/notes/{note['id']}", json={"text": "my own words"}, headers=auth(note["token"]))
    assert resp.status == 200, await resp.text()

    assert (await relay_outbox(actor_ctx))["sent"] == 1  # handled: nothing left to write
    stored = await factory.read_note(note["id"])
    assert stored.text == "my own words" and stored.generated_by_ai is False
    assert llm_standin.calls == []


async def test_the_write_only_fills_an_empty_note(client, factory, sessions):
    """The conditional UPDATE itself: text written while the model was answering wins."""
    token, _ = await factory.user()
    written = await factory.note(token, A, text="typed meanwhile")
    blank = await factory.note(token, A)
    empty = await factory.note(token, A)
    async with sessions() as session:
        await session.execute(update(Note).where(Note.id == empty["id"]).values(text=""))
        assert await fill_empty_note(session, written["id"], "AI text") is False
        assert await fill_empty_note(session, blank["id"], "AI text") is True
        assert await fill_empty_note(session, empty["id"], "AI text") is True
        await session.commit()
    assert (await factory.read_note(written["id"])).text == "typed meanwhile"
    assert not (await factory.read_note(written["id"])).generated_by_ai
    for note in (blank, empty):
        stored = await factory.read_note(note["id"])
        assert stored.text == "AI text" and stored.generated_by_ai is True


# -- failures --------------------------------------------------------------------------------------


async def test_a_provider_failure_is_retried_and_never_leaves_a_half_written_note(
    client, factory, sessions, actor_ctx, llm_standin
):
    note = await requested_note(client, factory, actor_ctx)
    llm_standin.queue(Reply(fail_before=True, status=503), Reply(chunks=[]))  # an error, then an empty reply

    for attempt in (1, 2):
        result = await relay_outbox(actor_ctx)
        assert result["sent"] == 0 and result["failed"] == 1
        [row] = await outbox_rows(sessions)
        assert row.status == "pending" and row.attempts == attempt and row.last_error
        stored = await factory.read_note(note["id"])
        assert stored.text is None and stored.generated_by_ai is False
        await make_outbox_due(sessions)
    assert "no text" in row.last_error  # the empty reply is a failure, not an empty note

    llm_standin.queue(Reply(chunks=["Feeding", " the starter."]))
    assert (await relay_outbox(actor_ctx))["sent"] == 1
    stored = await factory.read_note(note["id"])
    assert stored.text == "Feeding the starter." and stored.generated_by_ai is True
    [row] = await outbox_rows(sessions)
    assert row.status == "sent" and row.attempts == 3 and row.last_error is None


@pytest.mark.parametrize(
    "timestamp, reason",
    [
        ("12:ab", "is not MM:SS or HH:MM:SS"),
        ("1:2:3:4", "is not MM:SS or HH:MM:SS"),
        ("59:00", "no transcript text near 59:00"),
    ],
)
async def test_a_request_that_can_never_be_served_fails_for_good(
    client, factory, sessions, actor_ctx, llm_standin, timestamp, reason
):
    note = await requested_note(client, factory, actor_ctx, timestamp=timestamp)
    assert await relay_outbox(actor_ctx) == {"sent": 0, "failed": 0, "rejected": 1, "delivery": "ai_notes"}
    [row] = await outbox_rows(sessions)
    assert row.status == "failed" and reason in row.last_error and row.attempts == 1
    await make_outbox_due(sessions)
    assert (await relay_outbox(actor_ctx))["rejected"] == 0  # never claimed again
    assert (await video_changed(actor_ctx, A))["ai_notes_queued"] == 0  # nor requested again
    assert (await factory.read_note(note["id"])).text is None
    assert llm_standin.calls == []


# -- the external path wins ------------------------------------------------------------------------


class TestSqsConfigured:
    @pytest.fixture
    def env(self, env, moto_endpoint, sqs_queue_url):
        return {**env, **AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint, "SQS_AI_NOTE_QUEUE_URL": sqs_queue_url}

    async def test_the_outbox_row_goes_to_sqs_not_to_the_built_in_writer(
        self, client, factory, actor_ctx, llm_standin, sqs, sqs_queue_url
    ):
        assert resources(actor_ctx).chat_model is not None  # a provider is configured too
        note = await requested_note(client, factory, actor_ctx)
        assert await relay_outbox(actor_ctx) == {"sent": 1, "failed": 0, "rejected": 0, "delivery": "sqs"}
        [body] = await receive_all(sqs, sqs_queue_url)
        assert json.loads(body)["id"] == note["id"]
        assert (await factory.read_note(note["id"])).text is None  # left to the Lambda
        assert llm_standin.calls == []


# -- pure helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("0:00", 0),
        ("1:05", 65),
        ("01:05", 65),
        ("75:03", 4503),
        ("1:02:03", 3723),
        (" 00:10:00 ", 600),
        ("1:5", 65),
        ("12:ab", None),
        ("1", None),
        ("1:2:3:4", None),
        (":10", None),
        ("1:-5", None),
        ("１:05", None),
        ("1.5:00", None),
    ],
)
def test_parse_timestamp(value, seconds):
    assert parse_timestamp(value) == seconds


def test_transcript_around_is_bounded_and_skips_bad_segments():
    transcript = [
        {"text": "no offset"},
        "junk",
        {"text": "nan", "offset": "nan"},
        {"text": "x" * 400, "offset": 10},
    ] * 50
    context = transcript_around(transcript, 10)
    assert context and len(context) <= CONTEXT_MAX_CHARS
    assert "no offset" not in context and "nan" not in context
    assert transcript_around(transcript, 600) == ""
