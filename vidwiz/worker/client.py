"""The worker loop over the internal task API (docs/api.md §5): long-poll, fetch, submit.

Network errors and 5xx are retried with exponential backoff and jitter; a rejected admin
token is retried a few times and then stops the worker (WorkerError). On stop, waiting polls
are cancelled and a task being fetched gets a grace period; if it does not finish it is
released with a failure result, so the server hands it out again (docs/api.md §5.1).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from vidwiz.worker.fetchers import Fetcher, FetchError

log = logging.getLogger("vidwiz.worker")

TASK_KINDS = ("transcript", "metadata")
SHUTDOWN_MESSAGE = "worker shutting down"
MAX_ERROR_MESSAGE = 2000
T = TypeVar("T")


class WorkerError(Exception):
    """Fatal: the worker cannot go on (admin token rejected, request refused as invalid)."""


class ServerError(Exception):
    """A 5xx or an unreadable answer: worth retrying."""


class Refused(Exception):
    """A 4xx other than auth: retrying the same request cannot help."""


class AuthRejected(Exception):
    """401/403 from the internal API: the admin token is missing or wrong."""


RETRYABLE = (aiohttp.ClientError, TimeoutError, ServerError)


@dataclass(frozen=True)
class WorkerConfig:
    api_url: str
    admin_token: str
    kinds: tuple[str, ...] = TASK_KINDS
    poll_timeout: int = 30
    concurrency: int = 2
    max_tasks: int | None = None
    shutdown_grace: float = 10.0
    auth_attempts: int = 3
    submit_attempts: int = 5
    backoff_initial: float = 0.5
    backoff_cap: float = 30.0


class TaskApi:
    """The two task endpoints, with retries."""

    def __init__(self, http: aiohttp.ClientSession, config: WorkerConfig) -> None:
        self._http = http
        self._config = config
        self._tasks_url = f"{config.api_url.rstrip('/')}/v2/internal/tasks"
        self._headers = {"Authorization": f"Bearer {config.admin_token}"}

    async def claim(self, kind: str) -> dict[str, Any] | None:
        """Long-poll for a task of this kind; None when the server had none in time (204).
        Network trouble is retried until it passes (or the caller cancels)."""
        try:
            return await self._retrying(f"poll for {kind} tasks", lambda: self._claim_once(kind), attempts=None)
        except Refused as exc:
            raise WorkerError(f"the server refused the poll: {exc}") from None

    async def submit(self, task_id: int, result: dict[str, Any]) -> dict[str, Any]:
        """Submit a result; raises Refused (e.g. the task was reclaimed meanwhile) or, after
        `submit_attempts`, the last network error."""
        return await self._retrying(
            f"submit result of task {task_id}",
            lambda: self._submit_once(task_id, result),
            attempts=self._config.submit_attempts,
        )

    async def _claim_once(self, kind: str) -> dict[str, Any] | None:
        timeout = self._config.poll_timeout
        # The server holds the request up to `timeout` seconds; allow it 10 s more to answer.
        client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout + 10)
        params = {"type": kind, "timeout": str(timeout)}
        async with self._http.get(
            self._tasks_url, params=params, headers=self._headers, timeout=client_timeout
        ) as resp:
            if resp.status == 204:
                return None
            if resp.status == 200:
                task = await _json(resp)
                if not isinstance(task.get("task_id"), int):  # no result could be submitted for it
                    raise ServerError(f"{resp.status} with a task without an integer task_id")
                return task
            raise await _failure(resp)

    async def _submit_once(self, task_id: int, result: dict[str, Any]) -> dict[str, Any]:
        url = f"{self._tasks_url}/{task_id}/result"
        client_timeout = aiohttp.ClientTimeout(total=30, sock_connect=10)
        async with self._http.post(url, json=result, headers=self._headers, timeout=client_timeout) as resp:
            if resp.status == 200:
                return await _json(resp)
            raise await _failure(resp)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]], attempts: int | None) -> T:
        auth_failures = failures = 0
        while True:
            try:
                return await call()
            except AuthRejected as exc:
                auth_failures += 1
                if auth_failures >= self._config.auth_attempts:
                    hint = f"gave up after {auth_failures} tries; check --admin-token / ADMIN_TOKEN"
                    raise WorkerError(f"{exc} ({hint})") from None
                error: Exception = exc
            except RETRYABLE as exc:
                failures += 1
                if attempts is not None and failures >= attempts:
                    raise
                error = exc
            delay = self._backoff(auth_failures + failures)
            log.warning("%s failed (%s); retrying in %.1fs", what, _describe(error), delay)
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with jitter so that many workers do not retry in step."""
        # The exponent stops growing far past the cap: polls retry for ever, and 2**1024 overflows a float.
        doubling: int = 2 ** min(attempt - 1, 64)
        ceiling = min(self._config.backoff_cap, self._config.backoff_initial * doubling)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json()
    except (aiohttp.ContentTypeError, ValueError) as exc:
        raise ServerError(f"{resp.status} with an unreadable body ({exc})") from exc
    if not isinstance(body, dict):
        raise ServerError(f"{resp.status} with a non-object body")
    return body


async def _failure(resp: aiohttp.ClientResponse) -> Exception:
    """The exception for a non-success answer, carrying the envelope's message (docs/api.md §1.2)."""
    text = await resp.text()
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, TypeError, KeyError):
        message = text[:200]
    description = f"{resp.method} {resp.url.path} -> {resp.status} {message}"
    if resp.status in (401, 403):
        return AuthRejected(f"admin token rejected by {resp.url.origin()}: {resp.status} {message}")
    if resp.status >= 500:
        return ServerError(description)
    return Refused(description)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class TaskBudget:
    """How many more tasks may be claimed (--max-tasks); None means no limit."""

    def __init__(self, limit: int | None) -> None:
        self.remaining = limit

    def take(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    def give_back(self) -> None:
        if self.remaining is not None:
            self.remaining += 1


async def wait_or_stop(work: asyncio.Future[Any], stop: asyncio.Event, grace: float = 0.0) -> bool:
    """Wait for `work`; once `stop` is set, allow it `grace` more seconds. Returns whether it
    finished; if it did not, it is cancelled."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done() and grace > 0:
            await asyncio.wait({work}, timeout=grace)
        return work.done()
    finally:
        stopper.cancel()
        if not work.done():
            work.cancel()


class Worker:
    def __init__(self, config: WorkerConfig, fetcher: Fetcher, api: TaskApi) -> None:
        self.config = config
        self.fetcher = fetcher
        self.api = api
        self.budget = TaskBudget(config.max_tasks)

    async def run(self, stop: asyncio.Event) -> None:
        """`concurrency` polling loops per task kind, until `stop` is set or the budget is
        spent. A WorkerError in any loop stops them all and is raised."""
        try:
            async with asyncio.TaskGroup() as group:
                for kind in self.config.kinds:
                    for _ in range(self.config.concurrency):
                        group.create_task(self._loop(kind, stop))
        except* WorkerError as errors:
            raise errors.exceptions[0] from None

    async def _loop(self, kind: str, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.budget.take():
            poll = asyncio.ensure_future(self.api.claim(kind))
            task = poll.result() if await wait_or_stop(poll, stop) else None
            if task is None:
                self.budget.give_back()
                continue
            await self._handle(kind, task, stop)

    async def _handle(self, kind: str, task: dict[str, Any], stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        task_id: int = task["task_id"]  # checked by TaskApi.claim
        video_id = (task.get("task_details") or {}).get("video_id") or ""
        fetch = asyncio.ensure_future(self._fetch(kind, video_id))
        if await wait_or_stop(fetch, stop, grace=self.config.shutdown_grace):
            result, outcome = fetch.result()
        else:
            result, outcome = _failed(video_id, SHUTDOWN_MESSAGE)
        label = f"task {task_id} {kind} {video_id or '-'}"
        try:
            answer = await self.api.submit(task_id, result)
        except Refused as exc:
            log.warning("%s: %s; result refused (%s)", label, outcome, exc)
            return
        except RETRYABLE as exc:
            log.error(
                "%s: %s; result not delivered (%s), the server will reclaim the task", label, outcome, _describe(exc)
            )
            return
        log.info("%s: %s -> task %s (%.1fs)", label, outcome, answer.get("status"), loop.time() - started)

    async def _fetch(self, kind: str, video_id: str) -> tuple[dict[str, Any], str]:
        """(result payload, short outcome for the log). Never raises: every failure becomes a
        failed result, so the server retries the task."""
        if not video_id:
            return _failed(video_id, "task has no video_id")
        try:
            if kind == "transcript":
                transcript = await self.fetcher.transcript(video_id)
                return {"video_id": video_id, "success": True, "transcript": transcript}, f"{len(transcript)} segments"
            metadata = await self.fetcher.metadata(video_id)
            return {"video_id": video_id, "success": True, "metadata": metadata}, f"{len(metadata)} metadata fields"
        except FetchError as exc:
            return _failed(video_id, str(exc))
        except Exception as exc:
            log.exception("unexpected error fetching %s for %s", kind, video_id)
            return _failed(video_id, f"unexpected error: {type(exc).__name__}: {exc}")


def _failed(video_id: str, message: str) -> tuple[dict[str, Any], str]:
    message = message[:MAX_ERROR_MESSAGE]
    return {"video_id": video_id, "success": False, "error_message": message}, f"failed: {message}"


async def run_worker(config: WorkerConfig, fetcher: Fetcher, stop: asyncio.Event) -> None:
    """Work until `stop` is set or `max_tasks` are done; raises WorkerError when it cannot go on."""
    async with aiohttp.ClientSession() as http:
        await Worker(config, fetcher, TaskApi(http, config)).run(stop)
