"""LLM providers behind one small interface: Gemini (google-genai) and OpenAI (openai).

    stream_chat(system, history, message, max_tokens) -> AsyncIterator[str]   text as it arrives
    complete(system, prompt, max_tokens) -> str                               one whole answer

Both raise `LLMError` for any provider failure, and `EmptyReply` (a subclass) when the model
produced no text at all — what a reasoning model does when its token cap is spent on
thinking. Callers must treat that as a failure, never as a valid empty answer.

Neither SDK retries here (a chat turn is better failed fast; actors have their own retries).
Chunks are read in the caller's task (no queue hop: every event-loop turn counts at the
first token). Closing a `stream_chat` iterator early, or cancelling its reader, closes the
provider's HTTP stream at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from types import AsyncGeneratorType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from config import Settings

if TYPE_CHECKING:  # the SDKs are imported when a provider is created (they are slow to import)
    from google import genai
    from google.genai import types as genai_types
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam

# A whole answer of WIZ_MAX_TOKENS may take minutes; a stalled provider must still end.
REQUEST_TIMEOUT_SECONDS = 300.0
CONNECT_TIMEOUT_SECONDS = 10.0


class LLMError(Exception):
    """The provider failed (HTTP error, broken stream, timeout) or gave no usable answer."""


class EmptyReply(LLMError):
    """The provider finished without any text."""


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str


class ChatModel(Protocol):
    provider: str
    model: str

    def stream_chat(
        self, system: str, history: Sequence[ChatMessage], message: str, max_tokens: int
    ) -> AsyncGenerator[str, None]: ...

    async def complete(self, system: str, prompt: str, max_tokens: int) -> str: ...

    async def aclose(self) -> None: ...


class _Provider:
    """Shared behaviour: error mapping and the empty-reply rule around `_stream`."""

    provider = ""
    model = ""

    def _stream(
        self, system: str, history: Sequence[ChatMessage], message: str, max_tokens: int
    ) -> AsyncGenerator[str, None]:
        raise NotImplementedError

    async def stream_chat(
        self, system: str, history: Sequence[ChatMessage], message: str, max_tokens: int
    ) -> AsyncGenerator[str, None]:
        produced = False
        try:
            async with contextlib.aclosing(self._stream(system, history, message, max_tokens)) as chunks:
                async for text in chunks:
                    if text:
                        produced = True
                        yield text
        except Exception as exc:
            raise LLMError(f"{self.provider} request failed: {type(exc).__name__}: {exc}") from exc
        if not produced:
            raise EmptyReply(f"{self.provider} model {self.model} returned no text (token cap {max_tokens})")

    async def _complete(self, system: str, prompt: str, max_tokens: int) -> str | None:
        raise NotImplementedError

    async def complete(self, system: str, prompt: str, max_tokens: int) -> str:
        try:
            text = await self._complete(system, prompt, max_tokens)
        except Exception as exc:
            raise LLMError(f"{self.provider} request failed: {type(exc).__name__}: {exc}") from exc
        if not text or not text.strip():
            raise EmptyReply(f"{self.provider} model {self.model} returned no text (token cap {max_tokens})")
        return text


class GeminiChat(_Provider):
    provider = "gemini"

    def __init__(self, api_key: str, model: str, base_url: str | None = None):
        from google import genai
        from google.genai import types

        self.model = model
        options = types.HttpOptions(base_url=base_url, timeout=int(REQUEST_TIMEOUT_SECONDS * 1000))
        self._client: genai.Client = genai.Client(api_key=api_key, http_options=options)

    def _contents(self, history: Sequence[ChatMessage], message: str) -> list[genai_types.Content]:
        from google.genai import types  # imported by __init__ already

        contents = [
            types.Content(role="model" if item.role == "assistant" else "user", parts=[types.Part(text=item.content)])
            for item in history
        ]
        contents.append(types.Content(role="user", parts=[types.Part(text=message)]))
        return contents

    def _config(self, system: str, max_tokens: int) -> genai_types.GenerateContentConfig:
        from google.genai import types  # imported by __init__ already

        return types.GenerateContentConfig(
            system_instruction=system,
            max_output_tokens=max_tokens,
            # No tools: skip the SDK's automatic function calling loop (and its per-call log line).
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    async def _stream(
        self, system: str, history: Sequence[ChatMessage], message: str, max_tokens: int
    ) -> AsyncGenerator[str, None]:
        stream = await self._client.aio.models.generate_content_stream(
            model=self.model, contents=self._contents(history, message), config=self._config(system, max_tokens)
        )
        try:
            async for chunk in stream:
                yield _gemini_text(chunk)
        finally:
            await _close_from_inside(stream)

    async def _complete(self, system: str, prompt: str, max_tokens: int) -> str:
        response = await self._client.aio.models.generate_content(
            model=self.model, contents=self._contents((), prompt), config=self._config(system, max_tokens)
        )
        return _gemini_text(response)

    async def aclose(self) -> None:
        await self._client.aio.aclose()


async def _close_from_inside(stream: AsyncIterator[Any]) -> None:
    """Close a google-genai response stream so that its HTTP connection closes now.

    The SDK nests async generators. `aclose()` on the outer one, suspended at a `yield`
    (our reader stopped early), never reaches the inner ones that hold the HTTP response:
    the provider would go on generating until the garbage collector finds them. An
    exception raised where the chain awaits the network does reach them all, so step the
    chain once in a task and cancel that step while it waits.
    """
    assert isinstance(stream, AsyncGeneratorType), "google-genai streams with async generators"
    while stream.ag_frame is not None and not stream.ag_running:
        step = asyncio.ensure_future(stream.__anext__())
        try:
            await asyncio.sleep(0)  # the step runs until it waits for the network, or yields a buffered chunk
        finally:
            step.cancel()
        await asyncio.wait([step])
        if step.cancelled() or step.exception() is not None:
            break  # the chain ended (cancelled inside, exhausted or failed)
    await stream.aclose()


def _gemini_text(chunk: genai_types.GenerateContentResponse) -> str:
    """Visible text of a streamed chunk (thought parts skipped; `chunk.text` would warn on them)."""
    candidates = chunk.candidates or []
    if not candidates or candidates[0].content is None:
        return ""
    return "".join(part.text for part in candidates[0].content.parts or () if part.text and not part.thought)


class OpenAIChat(_Provider):
    provider = "openai"

    def __init__(self, api_key: str, model: str, base_url: str | None = None):
        import openai

        self.model = model
        self._client: AsyncOpenAI = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=openai.Timeout(REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
        )

    def _messages(self, system: str, history: Sequence[ChatMessage], message: str) -> list[ChatCompletionMessageParam]:
        messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": system}]
        for item in history:
            if item.role == "assistant":
                messages.append({"role": "assistant", "content": item.content})
            else:
                messages.append({"role": "user", "content": item.content})
        messages.append({"role": "user", "content": message})
        return messages

    async def _stream(
        self, system: str, history: Sequence[ChatMessage], message: str, max_tokens: int
    ) -> AsyncGenerator[str, None]:
        stream = await self._client.chat.completions.create(
            model=self.model,
            messages=self._messages(system, history, message),
            max_completion_tokens=max_tokens,  # not max_tokens: reasoning models reject that
            stream=True,
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices:
                    yield chunk.choices[0].delta.content or ""

    async def _complete(self, system: str, prompt: str, max_tokens: int) -> str | None:
        response = await self._client.chat.completions.create(
            model=self.model, messages=self._messages(system, (), prompt), max_completion_tokens=max_tokens
        )
        return response.choices[0].message.content if response.choices else ""

    async def aclose(self) -> None:
        await self._client.close()


def create_chat_model(settings: Settings) -> ChatModel | None:
    """The configured provider, or None when it has no API key."""
    provider = settings.chat_provider
    if provider == "gemini" and settings.gemini_api_key:
        return GeminiChat(settings.gemini_api_key, settings.gemini_model_name, settings.gemini_base_url)
    if provider == "openai" and settings.openai_api_key:
        return OpenAIChat(settings.openai_api_key, settings.openai_model_name, settings.openai_base_url)
    return None


@contextlib.asynccontextmanager
async def open_chat_model(settings: Settings) -> AsyncIterator[ChatModel | None]:
    """The provider for these settings, closed (connection pools) when the block ends."""
    model = create_chat_model(settings)
    try:
        yield model
    finally:
        if model is not None:
            await model.aclose()
