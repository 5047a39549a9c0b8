"""Conversation handlers (docs/api.md §3.4) and the Wiz chat stream (§4.2): parse -> service -> render.

The reply streams as data-only SSE frames, each provider chunk forwarded as it arrives:
`data: {"content": …}` …, then (assistant message saved) `data: [DONE]`; a provider
failure sends `data: {"error": "Processing error"}` and ends without `[DONE]`; an empty reply
is just `data: [DONE]`. What each outcome stores is described in vidwiz/conversations/service.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from vidwiz.auth.guards import client_address, resolve_viewer
from vidwiz.context import CHAT_MODEL, KEYS, REDIS, SESSIONS, SETTINGS, TRANSCRIPTS, UNITS
from vidwiz.conversations import schemas, service
from vidwiz.conversations.quota import DailyQuota
from vidwiz.llm import EmptyReply, LLMError
from vidwiz.system.openapi import operation
from vidwiz.validation import load_body, load_path

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# How often a stream checks that its client is still there while the model is silent
# (aiohttp does not cancel handlers on disconnect; a failed write is noticed at once).
DISCONNECT_POLL_SECONDS = 0.5
PROCESSING_ERROR = json.dumps({"error": "Processing error"})
NO_CONVERSATION = "Conversation not found (NOT_FOUND)"


def _quota(app: web.Application) -> DailyQuota:
    return DailyQuota(app[REDIS], app[KEYS], app[SETTINGS])


@routes.post("/v2/conversations")
@operation(
    "Start a Wiz conversation about a video",
    "conversations",
    auth="viewer",
    body=schemas.CreateConversationSchema,
    responses={201: schemas.ConversationSchema},
)
async def create_conversation(request: web.Request) -> web.Response:
    viewer = resolve_viewer(request)
    body = await load_body(request, schemas.CreateConversationSchema)
    async with request.app[UNITS]() as work:
        conversation = await service.create_conversation(work.session, work.effects, viewer, body["video_id"])
    return web.json_response(schemas.render_conversation(conversation), status=201)


@routes.get("/v2/conversations/{conversation_id}")
@operation(
    "A conversation of the caller",
    "conversations",
    auth="viewer",
    path=schemas.ConversationPathSchema,
    responses={200: schemas.ConversationSchema, 404: NO_CONVERSATION},
)
async def get_conversation(request: web.Request) -> web.Response:
    viewer = resolve_viewer(request)
    path = load_path(request, schemas.ConversationPathSchema)
    async with request.app[SESSIONS]() as session:
        conversation = await service.get_conversation(session, viewer, path["conversation_id"])
    return web.json_response(schemas.render_conversation(conversation))


@routes.get("/v2/conversations/{conversation_id}/messages")
@operation(
    "The messages of a conversation, oldest first",
    "conversations",
    auth="viewer",
    path=schemas.ConversationPathSchema,
    responses={200: schemas.MessageSchema(many=True), 404: NO_CONVERSATION},
)
async def list_messages(request: web.Request) -> web.Response:
    viewer = resolve_viewer(request)
    path = load_path(request, schemas.ConversationPathSchema)
    async with request.app[SESSIONS]() as session:
        conversation = await service.get_conversation(session, viewer, path["conversation_id"])
        messages = await service.list_messages(session, conversation.id)
    return web.json_response([schemas.render_message(message) for message in messages])


@routes.post("/v2/conversations/{conversation_id}/messages")
@operation(
    "Ask Wiz: the reply streams as SSE",
    "conversations",
    auth="viewer",
    path=schemas.ConversationPathSchema,
    body=schemas.SendMessageSchema,
    responses={
        200: (
            "text/event-stream",
            'data: {"content": …} frames, then data: [DONE]; '
            'or data: {"error": "Processing error"} and the end. X-Quota-* headers carry the daily usage.',
            schemas.CHAT_EVENT,
        ),
        202: schemas.ProcessingSchema,
        404: "Conversation not found, Video not found, or Transcript data missing (NOT_FOUND)",
        429: "Daily limit reached, per viewer or (guests) per client address (RATE_LIMIT_EXCEEDED, "
        "details.reset_in_seconds)",
        500: "No LLM provider configured: Gemini (or OpenAI) API key not configured (INTERNAL_ERROR)",
        503: "The quota store is unreachable (SERVICE_UNAVAILABLE)",
    },
)
async def send_message(request: web.Request) -> web.StreamResponse:
    app = request.app
    viewer = resolve_viewer(request)
    path = load_path(request, schemas.ConversationPathSchema)
    await request.read()  # the whole body is here before a database connection is taken
    quota = _quota(app)
    async with app[UNITS]() as work:
        # Ownership wins over body errors (docs/api.md §1.3).
        conversation = await service.get_conversation(work.session, viewer, path["conversation_id"])
        body = await load_body(request, schemas.SendMessageSchema)
        turn = await service.start_turn(
            work.session,
            work.effects,
            viewer=viewer,
            address=client_address(request),
            conversation=conversation,
            text=body["message"],
            quota=quota,
            transcripts=app[TRANSCRIPTS],
            chat_model=app[CHAT_MODEL],
            settings=app[SETTINGS],
        )
    if isinstance(turn, service.TranscriptPending):
        usage = await quota.release(turn.reservation)  # a turn that waits for its transcript does not count
        return web.json_response(
            {"status": "processing", "message": "Transcript processing"}, status=202, headers=usage.headers()
        )
    return await _stream_reply(request, turn, quota)


class ClientGone(Exception):
    """The client closed the connection (or stalled past the send timeout)."""


async def _send(sse: EventSourceResponse, data: str) -> None:
    try:
        await sse.send(data)
    except (ConnectionResetError, TimeoutError) as exc:
        raise ClientGone() from exc


async def _relay(sse: EventSourceResponse, chunks: AsyncGenerator[str, None], sent: list[str]) -> None:
    async with contextlib.aclosing(chunks):
        async for text in chunks:
            await _send(sse, json.dumps({"content": text}))
            sent.append(text)


async def _until_disconnected(request: web.Request) -> None:
    # A poll: aiohttp offers no event or callback for a transport closed under a running handler.
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(DISCONNECT_POLL_SECONDS)


async def _stream_reply(request: web.Request, turn: service.Turn, quota: DailyQuota) -> web.StreamResponse:
    app = request.app
    chat_model = app[CHAT_MODEL]
    assert chat_model is not None, "a Turn is only started with a chat model (service.ensure_chat_configured)"
    sse = EventSourceResponse(headers=turn.reservation.usage.headers(), sep="\n", allow_all_methods=True)
    sse.headers["Content-Type"] = "text/event-stream; charset=utf-8"
    await sse.prepare(request)
    async with sse:
        sent: list[str] = []
        chunks = chat_model.stream_chat(turn.system, turn.history, turn.message, app[SETTINGS].wiz_max_tokens)
        relay = asyncio.create_task(_relay(sse, chunks, sent))
        watcher = asyncio.create_task(_until_disconnected(request))
        try:
            await asyncio.wait({relay, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Cancelling the relay closes the provider stream (vidwiz.llm); nothing is stored.
            relay.cancel()
            watcher.cancel()
            await asyncio.gather(relay, watcher, return_exceptions=True)
        error = None if relay.cancelled() else relay.exception()
        if relay.cancelled() or isinstance(error, ClientGone):
            log.info("wiz turn %s: client left after %d chunks", turn.user_message_id, len(sent))
        elif error is None:
            await _finish(app, sse, turn, "".join(sent))
        else:
            await _fail(app, sse, turn, quota, error, sent_any=bool(sent))
    return sse


async def _finish(app: web.Application, sse: EventSourceResponse, turn: service.Turn, reply: str) -> None:
    try:
        async with app[UNITS]() as work:
            await service.complete_turn(work.session, turn, reply)
    except Exception:
        log.exception("wiz turn %s: could not store the reply", turn.user_message_id)
        await _send_if_connected(sse, PROCESSING_ERROR)
        return
    await _send_if_connected(sse, "[DONE]")


async def _fail(
    app: web.Application,
    sse: EventSourceResponse,
    turn: service.Turn,
    quota: DailyQuota,
    error: BaseException,
    *,
    sent_any: bool,
) -> None:
    log.warning(
        "wiz turn %s failed after %s: %s",
        turn.user_message_id,
        "content" if sent_any else "no content",
        error,
        exc_info=None if isinstance(error, LLMError) else error,
    )
    if not sent_any:
        reason = "empty_reply" if isinstance(error, EmptyReply) else "provider_error"
        try:
            async with app[UNITS]() as work:
                await service.fail_turn(work.session, quota, turn, reason)
        except Exception:
            log.exception("wiz turn %s: could not record the failed turn", turn.user_message_id)
    # An empty reply ends like the reference's: nothing saved, then [DONE] (docs/api.md §4.2); it
    # just does not count against the quota.
    empty = isinstance(error, EmptyReply) and not sent_any
    await _send_if_connected(sse, "[DONE]" if empty else PROCESSING_ERROR)


async def _send_if_connected(sse: EventSourceResponse, data: str) -> None:
    with contextlib.suppress(ClientGone):  # a client that left has nobody to tell
        await _send(sse, data)
