"""A local LLM stand-in speaking the two wire formats the real SDKs expect, so tests and
benches run google-genai and openai end to end without the network.

- Gemini (google-genai): `POST /{v1|v1beta}/models/{model}:streamGenerateContent?alt=sse`
  answers SSE `data:` chunks carrying `candidates` (finish reason and usage in the last
  one, no `[DONE]`); `:generateContent` answers one JSON body. Base URL: `gemini_base_url`.
- OpenAI: `POST /v1/chat/completions` with `stream=true` answers `chat.completion.chunk`
  events ending with `data: [DONE]`; without `stream` one `chat.completion`. Base URL:
  `openai_base_url`.

Replies are scripted with `Reply` objects queued by `standin.queue(...)`; when the queue is
empty `standin.default` answers. Every request is recorded in `standin.calls`.

Tests use the `llm_standin` fixture (registered by tests/conftest.py), or the class directly:
`async with LLMStandin() as standin: ...`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Reply:
    """One scripted answer.

    chunks        texts sent one per streamed chunk (empty list: an empty reply, as a
                  reasoning model that spent its token budget thinking returns)
    delay         seconds slept before each chunk
    fail_before   answer `status` with the provider's error body instead of streaming
    fail_after    abort the connection after this many chunks (a failure mid-stream)
    hold_after    after this many chunks, wait until `standin.release()` (or the client leaves)
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " stand-in."])
    delay: float = 0.0
    fail_before: bool = False
    status: int = 500
    fail_after: int | None = None
    hold_after: int | None = None


@dataclass
class Call:
    """One request the stand-in received."""

    provider: str  # "gemini" | "openai"
    path: str
    body: dict[str, Any]
    stream: bool
    first_chunk_at: float | None = None  # time.perf_counter() just before the first chunk was written
    chunks_sent: int = 0
    disconnected: bool = False  # the client went away before the reply finished
    finished: bool = False

    @property
    def last_user_text(self) -> str:
        """The newest user message, whatever the wire format."""
        if self.provider == "openai":
            users = [m for m in self.body.get("messages", []) if m.get("role") == "user"]
            return users[-1]["content"] if users else ""
        contents = [c for c in self.body.get("contents", []) if c.get("role", "user") == "user"]
        if not contents:
            return ""
        return "".join(part.get("text", "") for part in contents[-1].get("parts", []))

    @property
    def system_text(self) -> str:
        if self.provider == "openai":
            return "".join(m["content"] for m in self.body.get("messages", []) if m.get("role") == "system")
        instruction = self.body.get("systemInstruction") or {}
        return "".join(part.get("text", "") for part in instruction.get("parts", []))

    @property
    def max_tokens(self) -> int | None:
        if self.provider == "openai":
            return self.body.get("max_completion_tokens") or self.body.get("max_tokens")
        return (self.body.get("generationConfig") or {}).get("maxOutputTokens")


class LLMStandin:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.default = Reply()
        self.calls: list[Call] = []
        self._replies: deque[Reply] = deque()
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- scripting -----------------------------------------------------------------------------

    def queue(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    def release(self) -> None:
        """Let every reply waiting at `hold_after` continue."""
        self._released.set()

    def _next_reply(self) -> Reply:
        return self._replies.popleft() if self._replies else self.default

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> LLMStandin:
        app = web.Application()
        app.router.add_post("/{version}/models/{model_action}", self._gemini)
        app.router.add_post("/v1/chat/completions", self._openai)
        # handler_cancellation: a client that hangs up cancels its handler, which records it.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LLMStandin:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def gemini_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def openai_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def env(self, provider: str) -> dict[str, str]:
        """Settings environment pointing the app's `provider` at this stand-in."""
        if provider == "gemini":
            return {"LLM_PROVIDER": "gemini", "GEMINI_API_KEY": "standin-key", "GEMINI_BASE_URL": self.gemini_base_url}
        return {"LLM_PROVIDER": "openai", "OPENAI_API_KEY": "standin-key", "OPENAI_BASE_URL": self.openai_base_url}

    # -- handlers ------------------------------------------------------------------------------

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        version = request.match_info["version"]
        model, _, action = request.match_info["model_action"].partition(":")
        if version not in ("v1", "v1beta") or action not in ("streamGenerateContent", "generateContent"):
            raise web.HTTPNotFound()
        stream = action == "streamGenerateContent"
        call = Call("gemini", request.path, await request.json(), stream)
        self.calls.append(call)
        reply = self._next_reply()
        if reply.fail_before:
            status = {500: "INTERNAL", 503: "UNAVAILABLE", 429: "RESOURCE_EXHAUSTED"}.get(reply.status, "INTERNAL")
            body = {"error": {"code": reply.status, "message": "stand-in failure", "status": status}}
            return web.json_response(body, status=reply.status)
        if not stream:
            text = "".join(reply.chunks)
            parts = [{"text": text}] if text else []
            return web.json_response(_gemini_chunk(model, parts, finish="STOP", usage=len(reply.chunks)))

        def frame(index: int, chunk: str) -> bytes:
            last = index == len(reply.chunks) - 1
            payload = _gemini_chunk(
                model, [{"text": chunk}], finish="STOP" if last else None, usage=index + 1 if last else None
            )
            return f"data: {json.dumps(payload)}\r\n\r\n".encode()

        empty = _gemini_chunk(model, [], finish="MAX_TOKENS", usage=0)
        return await self._stream(
            request, call, reply, "text/event-stream", frame, empty_frame=f"data: {json.dumps(empty)}\r\n\r\n".encode()
        )

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        stream = bool(body.get("stream"))
        call = Call("openai", request.path, body, stream)
        self.calls.append(call)
        reply = self._next_reply()
        model = body.get("model", "stand-in")
        if reply.fail_before:
            error = {"error": {"message": "stand-in failure", "type": "server_error", "param": None, "code": None}}
            return web.json_response(error, status=reply.status)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if not stream:
            text = "".join(reply.chunks)
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop" if text else "length",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 1,
                        "completion_tokens": len(reply.chunks),
                        "total_tokens": 1 + len(reply.chunks),
                    },
                }
            )

        def chunk_event(delta: dict[str, Any], finish: str | None) -> bytes:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n".encode()

        def frame(index: int, chunk: str) -> bytes:
            delta = {"role": "assistant", "content": chunk} if index == 0 else {"content": chunk}
            return chunk_event(delta, None)

        tail = chunk_event({}, "stop") + b"data: [DONE]\n\n"
        empty = chunk_event({"role": "assistant", "content": ""}, "length") + b"data: [DONE]\n\n"
        return await self._stream(request, call, reply, "text/event-stream", frame, tail=tail, empty_frame=empty)

    async def _stream(
        self, request, call: Call, reply: Reply, content_type: str, frame, *, tail: bytes = b"", empty_frame: bytes
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        try:
            if not reply.chunks:
                await asyncio.sleep(reply.delay)
                await response.write(empty_frame)
            for index, chunk in enumerate(reply.chunks):
                if reply.fail_after is not None and index >= reply.fail_after:
                    request.transport.abort()  # no terminating chunk: the client sees a broken stream
                    call.finished = True
                    return response
                if reply.hold_after is not None and index >= reply.hold_after:
                    await self._released.wait()
                await asyncio.sleep(reply.delay)
                if call.first_chunk_at is None:
                    call.first_chunk_at = time.perf_counter()
                await response.write(frame(index, chunk))
                call.chunks_sent += 1
            if tail:
                await response.write(tail)
            await response.write_eof()
            call.finished = True
        except (asyncio.CancelledError, ConnectionResetError):
            call.disconnected = True
            raise
        return response


def _gemini_chunk(model: str, parts: list[dict[str, Any]], *, finish: str | None, usage: int | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if not parts:
        candidate["content"] = {"role": "model"}
    if finish:
        candidate["finishReason"] = finish
    chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": uuid.uuid4().hex[:16]}
    if usage is not None:
        chunk["usageMetadata"] = {"promptTokenCount": 10, "candidatesTokenCount": usage, "totalTokenCount": 10 + usage}
    return chunk


def parse_sse(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order (comment lines such as keep-alives skipped)."""
    frames = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        data = [line[len("data: ") :] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            frames.append("\n".join(data))
    return frames


@pytest.fixture
async def llm_standin():
    """A started stand-in; `llm_standin.env(provider)` gives the settings environment."""
    async with LLMStandin() as standin:
        yield standin
        standin.release()
