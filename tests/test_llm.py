"""vidwiz/llm.py: both providers through their real SDKs against the local stand-in."""

from __future__ import annotations

import asyncio

import pytest

from config import load_settings
from tests.conftest import eventually
from tests.standins import Reply
from vidwiz.llm import ChatMessage, EmptyReply, GeminiChat, LLMError, OpenAIChat, create_chat_model

PROVIDERS = ["gemini", "openai"]
HISTORY = [ChatMessage("user", "What is this?"), ChatMessage("assistant", "A bread class.")]


@pytest.fixture(params=PROVIDERS)
async def model(request, llm_standin):
    if request.param == "gemini":
        chat = GeminiChat("standin-key", "gemini-2.5-flash", llm_standin.gemini_base_url)
    else:
        chat = OpenAIChat("standin-key", "gpt-4o-mini", llm_standin.openai_base_url)
    yield chat
    await chat.aclose()


async def collect(model, message="How long?", history=HISTORY, max_tokens=256):
    return [chunk async for chunk in model.stream_chat("You are Wiz.", history, message, max_tokens)]


async def test_stream_chat_request_and_chunks(model, llm_standin):
    llm_standin.queue(Reply(chunks=["Ten", " minutes", " [1:15]."]))
    assert await collect(model) == ["Ten", " minutes", " [1:15]."]
    call = llm_standin.calls[-1]
    assert call.stream and call.max_tokens == 256
    assert call.system_text == "You are Wiz." and call.last_user_text == "How long?"
    if model.provider == "gemini":
        assert call.path == "/v1/models/gemini-2.5-flash:streamGenerateContent"
        assert [c["role"] for c in call.body["contents"]] == ["user", "model", "user"]
    else:
        assert call.path == "/v1/chat/completions" and call.body["model"] == "gpt-4o-mini"
        assert [m["role"] for m in call.body["messages"]] == ["system", "user", "assistant", "user"]
        assert "max_tokens" not in call.body  # reasoning models only take max_completion_tokens


async def test_chunks_are_forwarded_as_they_arrive(model, llm_standin):
    llm_standin.queue(Reply(chunks=["a", "b", "c"], hold_after=2))
    stream = model.stream_chat("s", [], "m", 16)
    # Two chunks come through while the provider is still holding the third.
    assert [await anext(stream), await anext(stream)] == ["a", "b"]
    llm_standin.release()
    assert [chunk async for chunk in stream] == ["c"]


async def test_complete(model, llm_standin):
    llm_standin.queue(Reply(chunks=["A short", " summary."]))
    assert await model.complete("Summarise.", "transcript…", 128) == "A short summary."
    call = llm_standin.calls[-1]
    assert not call.stream and call.max_tokens == 128 and call.last_user_text == "transcript…"


async def test_errors(model, llm_standin):
    llm_standin.queue(Reply(fail_before=True))
    with pytest.raises(LLMError) as failed:
        await collect(model)
    assert not isinstance(failed.value, EmptyReply)

    llm_standin.queue(Reply(chunks=["x", "y", "z"], fail_after=1))
    received = []
    with pytest.raises(LLMError):
        async for chunk in model.stream_chat("s", [], "m", 16):
            received.append(chunk)
    assert received == ["x"]

    llm_standin.queue(Reply(chunks=[]), Reply(chunks=[]), Reply(fail_before=True, status=429))
    with pytest.raises(EmptyReply):
        await collect(model)
    with pytest.raises(EmptyReply):
        await model.complete("s", "p", 16)
    with pytest.raises(LLMError):
        await model.complete("s", "p", 16)


async def wait_disconnected(call) -> None:
    await eventually(lambda: call.disconnected, "the provider saw the client go")


@pytest.mark.parametrize("buffered", [0, 1])
async def test_closing_early_closes_the_provider_stream(model, llm_standin, buffered):
    # `buffered`: chunks already received but not read when the reader stops.
    llm_standin.queue(Reply(chunks=["a", "b", "c"], hold_after=1 + buffered))
    stream = model.stream_chat("s", [], "m", 16)
    assert await anext(stream) == "a"
    call = llm_standin.calls[-1]
    await wait_until_sent(call, 1 + buffered)
    await stream.aclose()
    await wait_disconnected(call)
    assert call.disconnected and call.chunks_sent == 1 + buffered


async def test_cancelling_the_reader_closes_the_provider_stream(model, llm_standin):
    llm_standin.queue(Reply(chunks=["a", "b"], hold_after=1))
    first = asyncio.Event()

    async def read():
        async for _ in model.stream_chat("s", [], "m", 16):
            first.set()

    reader = asyncio.create_task(read())
    await first.wait()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await wait_disconnected(llm_standin.calls[-1])
    assert llm_standin.calls[-1].disconnected


async def wait_until_sent(call, count: int) -> None:
    await eventually(lambda: call.chunks_sent >= count, f"{count} chunk(s) sent")
    await asyncio.sleep(0.02)  # and, most likely, on our side of the socket (asserted either way)


def test_provider_selection(tmp_path):
    def settings(**env):
        return load_settings({"ENVIRONMENT": "test", "SECRET_KEY": "k", "ADMIN_TOKEN": "a", **env}, env_file=None)

    assert create_chat_model(settings()) is None
    assert create_chat_model(settings(LLM_PROVIDER="openai", GEMINI_API_KEY="g")) is None
    assert isinstance(create_chat_model(settings(GEMINI_API_KEY="g")), GeminiChat)
    assert isinstance(create_chat_model(settings(OPENAI_API_KEY="o")), OpenAIChat)
    chosen = create_chat_model(
        settings(LLM_PROVIDER="openai", GEMINI_API_KEY="g", OPENAI_API_KEY="o", OPENAI_MODEL_NAME="o4-mini")
    )
    assert isinstance(chosen, OpenAIChat) and chosen.model == "o4-mini"
