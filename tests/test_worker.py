"""`vidwiz-worker` against the real app: tasks scheduled by note creation are fetched from a
canned directory and submitted through /v2/internal only (docs/api.md §5).

In-process runs (`run_worker`) cover the task flow; the CLI runs as a real subprocess for
exit codes and signals. A FIFO as the transcript file holds a worker mid-task: opening it
blocks until someone writes, exactly like a download that hangs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import ADMIN_TOKEN, eventually
from vidwiz.context import TASK_WAKEUPS, TRANSCRIPTS
from vidwiz.tasks.models import Task, TaskStatus
from vidwiz.videos.models import Video
from vidwiz.worker import cli
from vidwiz.worker.client import SHUTDOWN_MESSAGE, WorkerConfig, run_worker
from vidwiz.worker.fetchers import METADATA_FIELDS, DirFetcher, FetchError, YoutubeFetcher

VID = "dQw4w9WgXcQ"
TRANSCRIPT = [
    {"text": "never gonna give you up", "offset": 0.0, "duration": 2.5},
    {"text": "never gonna let you down", "offset": 2.5, "duration": 2.1},
]
METADATA = {"id": VID, "title": "Canned title", "uploader": "Rick", "duration": 213}
REPO = Path(__file__).resolve().parents[1]
HANG_GUARD = 60  # seconds; only stops a broken test from hanging, never asserts speed


@pytest.fixture
def canned(tmp_path) -> Path:
    directory = tmp_path / "canned"
    directory.mkdir()
    return directory


def write_canned(directory: Path, video_id: str = VID, transcript: Any = TRANSCRIPT, metadata: Any = METADATA) -> None:
    if transcript is not None:
        (directory / f"{video_id}.transcript.json").write_text(json.dumps(transcript))
    if metadata is not None:
        (directory / f"{video_id}.metadata.json").write_text(json.dumps(metadata))


async def create_note(factory, video_id: str = VID) -> None:
    """A user's note on a new video schedules its transcript and metadata tasks."""
    token, _ = await factory.user()
    await factory.note(token, video_id, timestamp="00:42")


def config_for(client, **overrides) -> WorkerConfig:
    values = dict(api_url=str(client.make_url("")), admin_token=ADMIN_TOKEN, poll_timeout=5, concurrency=1)
    values.update(overrides)
    return WorkerConfig(**values)


async def run_until_done(config: WorkerConfig, fetcher, stop: asyncio.Event | None = None) -> None:
    await asyncio.wait_for(run_worker(config, fetcher, stop or asyncio.Event()), HANG_GUARD)


async def task_of(sessions, task_type: str, video_id: str = VID) -> Task:
    async with sessions() as session:
        tasks = (await session.scalars(select(Task).where(Task.task_type == task_type).order_by(Task.id))).all()
    matching = [task for task in tasks if (task.task_details or {}).get("video_id") == video_id]
    assert len(matching) == 1, matching
    return matching[0]


async def video_row(sessions, video_id: str = VID) -> Video:
    async with sessions() as session:
        return await session.scalar(select(Video).where(Video.video_id == video_id))


# --- the task flow, in process -----------------------------------------------------------------


async def test_transcript_and_metadata_tasks_are_completed_from_the_directory(client, factory, sessions, canned):
    write_canned(canned)
    await create_note(factory)

    await run_until_done(config_for(client, kinds=("transcript", "metadata"), max_tasks=2), DirFetcher(canned))

    video = await video_row(sessions)
    assert video.transcript_available is True
    assert video.video_metadata == METADATA
    assert await client.app[TRANSCRIPTS].load(VID) == TRANSCRIPT
    for task_type in ("fetch_transcript", "fetch_metadata"):
        task = await task_of(sessions, task_type)
        assert task.status == TaskStatus.COMPLETED
        assert task.retry_count == 1


@pytest.mark.parametrize(
    "transcript, expected",
    [
        (None, "no such file"),
        ("not json", "not valid JSON"),
        ([], "expected a non-empty JSON list"),
        ([{"offset": 1.0}], 'must be an object with a "text" string'),
    ],
)
async def test_a_bad_transcript_file_is_a_failed_result_and_the_task_goes_back_to_pending(
    client, factory, sessions, canned, transcript, expected
):
    if transcript == "not json":
        (canned / f"{VID}.transcript.json").write_text("{oops")
    else:
        write_canned(canned, transcript=transcript, metadata=None)
    await create_note(factory)

    await run_until_done(config_for(client, kinds=("transcript",), max_tasks=1), DirFetcher(canned))

    task = await task_of(sessions, "fetch_transcript")
    assert task.status == TaskStatus.PENDING
    assert task.started_at is None
    assert expected in task.worker_details["error_message"]
    assert f"{VID}.transcript.json" in task.worker_details["error_message"]
    assert task.worker_details["retry_attempt"] == 1
    assert (await video_row(sessions)).transcript_available is False


async def test_a_metadata_file_that_is_not_an_object_fails_the_task(client, factory, sessions, canned):
    write_canned(canned, transcript=None, metadata=["not", "an", "object"])
    await create_note(factory)

    await run_until_done(config_for(client, kinds=("metadata",), max_tasks=1), DirFetcher(canned))

    task = await task_of(sessions, "fetch_metadata")
    assert task.status == TaskStatus.PENDING
    assert "expected a non-empty JSON object" in task.worker_details["error_message"]
    assert (await video_row(sessions)).video_metadata is None


class HeldFetcher:
    """A fetcher whose transcript is ready only after `finish_after` is set (never when None)."""

    def __init__(self, finish_after: asyncio.Event | None) -> None:
        self.started = asyncio.Event()
        self.finish_after = finish_after or asyncio.Event()

    async def transcript(self, video_id: str) -> list[dict[str, Any]]:
        self.started.set()
        await self.finish_after.wait()
        await asyncio.sleep(0.05)  # still busy when the worker sees the stop
        return TRANSCRIPT

    async def metadata(self, video_id: str) -> dict[str, Any]:
        raise AssertionError("not polled in this test")


async def test_stop_lets_the_task_in_hand_finish_within_the_grace_period(client, factory, sessions):
    await create_note(factory)
    stop = asyncio.Event()
    fetcher = HeldFetcher(finish_after=stop)
    config = config_for(client, kinds=("transcript",), shutdown_grace=HANG_GUARD)
    worker = asyncio.create_task(run_until_done(config, fetcher, stop))
    await asyncio.wait_for(fetcher.started.wait(), HANG_GUARD)

    stop.set()
    await worker

    assert (await task_of(sessions, "fetch_transcript")).status == TaskStatus.COMPLETED
    assert (await video_row(sessions)).transcript_available is True


async def test_stop_releases_a_task_that_outlives_the_grace_period(client, factory, sessions):
    await create_note(factory)
    stop = asyncio.Event()
    fetcher = HeldFetcher(finish_after=None)
    worker = asyncio.create_task(
        run_until_done(config_for(client, kinds=("transcript",), shutdown_grace=0), fetcher, stop)
    )
    await asyncio.wait_for(fetcher.started.wait(), HANG_GUARD)

    stop.set()
    await worker

    task = await task_of(sessions, "fetch_transcript")
    assert task.status == TaskStatus.PENDING
    assert task.worker_details["error_message"] == SHUTDOWN_MESSAGE


async def test_a_result_the_server_refuses_is_logged_and_the_worker_goes_on(client, factory, sessions, canned, caplog):
    """The task was taken back meanwhile (e.g. reclaimed): the late result gets 400 and is dropped."""
    write_canned(canned)
    await create_note(factory)

    class ReleasingFetcher(DirFetcher):
        async def transcript(self, video_id):
            async with sessions() as session:
                task = await session.scalar(select(Task).where(Task.task_type == "fetch_transcript"))
                task.status = TaskStatus.PENDING
                await session.commit()
            return await super().transcript(video_id)

    with caplog.at_level("WARNING", logger="vidwiz.worker"):
        await run_until_done(config_for(client, kinds=("transcript",), max_tasks=1), ReleasingFetcher(canned))

    assert "result refused" in caplog.text and "Task is not in progress" in caplog.text
    assert (await task_of(sessions, "fetch_transcript")).status == TaskStatus.PENDING


# --- the CLI as a real process ------------------------------------------------------------------


class WorkerProcess:
    """`python -m vidwiz.worker …` with its stderr collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, client, *args: str, token: str = ADMIN_TOKEN) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "WORKER_DIR", "WORKER_FETCHER")}
        env["PYTHONUNBUFFERED"] = "1"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vidwiz.worker",
            "--api-url", str(client.make_url("")), "--admin-token", token, *args,
            cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        async for line in self.proc.stderr:
            self.lines.append(line.decode().rstrip())

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def exit_code(self) -> int:
        code = await asyncio.wait_for(self.proc.wait(), HANG_GUARD)
        await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._reader


@pytest.fixture
async def processes():
    started: list[WorkerProcess] = []

    async def start(client, *args, **kwargs) -> WorkerProcess:
        started.append(await WorkerProcess.start(client, *args, **kwargs))
        return started[-1]

    yield start
    for process in started:
        await process.kill()


async def test_a_wrong_admin_token_exits_non_zero_after_bounded_tries(client, processes, canned):
    worker = await processes(client, "--fetcher", "dir", "--from-dir", str(canned), token="wrong-token")

    assert await worker.exit_code() == 1
    assert "admin token rejected" in worker.output
    assert "403 Invalid admin token" in worker.output
    assert "gave up after 3 tries" in worker.output
    assert "wrong-token" not in worker.output


async def test_sigterm_while_waiting_exits_zero(client, processes, canned):
    worker = await processes(
        client, "--type", "transcript", "--fetcher", "dir", "--from-dir", str(canned), "--timeout", "30"
    )
    wakeups = client.app[TASK_WAKEUPS]

    async def polling() -> bool:
        return wakeups.waiting("fetch_transcript") == 2  # both concurrent polls are parked at the server

    await eventually(polling, "the worker's long polls", timeout=HANG_GUARD)
    worker.proc.send_signal(signal.SIGTERM)

    assert await worker.exit_code() == 0
    assert "SIGTERM: stopping" in worker.output
    assert "vidwiz-worker stopped" in worker.output


async def in_progress(sessions) -> bool:
    async with sessions() as session:
        task = await session.scalar(select(Task).where(Task.task_type == "fetch_transcript"))
    return task is not None and task.status == TaskStatus.IN_PROGRESS


async def test_sigterm_mid_task_releases_the_task_and_exits_zero(client, factory, sessions, processes, canned):
    os.mkfifo(canned / f"{VID}.transcript.json")  # opening it blocks: the fetch hangs
    await create_note(factory)
    worker = await processes(
        client, "--type", "transcript", "--concurrency", "1", "--fetcher", "dir", "--from-dir", str(canned),
        "--shutdown-grace", "0.2",
    )  # fmt: skip
    await eventually(lambda: in_progress(sessions), "the task to be claimed", timeout=HANG_GUARD)

    worker.proc.send_signal(signal.SIGTERM)

    assert await worker.exit_code() == 0
    task = await task_of(sessions, "fetch_transcript")
    assert task.status == TaskStatus.PENDING
    assert task.worker_details["error_message"] == SHUTDOWN_MESSAGE
    assert f"task {task.id} transcript {VID}: failed: {SHUTDOWN_MESSAGE} -> task pending" in worker.output


async def test_a_worker_killed_mid_task_leaves_the_task_in_progress_for_reclaim(
    client, factory, sessions, processes, canned
):
    os.mkfifo(canned / f"{VID}.transcript.json")
    await create_note(factory)
    worker = await processes(
        client, "--type", "transcript", "--concurrency", "1", "--fetcher", "dir", "--from-dir", str(canned)
    )
    await eventually(lambda: in_progress(sessions), "the task to be claimed", timeout=HANG_GUARD)

    await worker.kill()

    task = await task_of(sessions, "fetch_transcript")
    assert task.status == TaskStatus.IN_PROGRESS
    assert task.started_at is not None
    assert task.retry_count == 1


async def test_cli_completes_tasks_and_logs_one_line_per_task(client, factory, sessions, processes, canned):
    write_canned(canned)
    await create_note(factory)
    worker = await processes(
        client, "--concurrency", "1", "--max-tasks", "2", "--fetcher", "dir", "--from-dir", str(canned)
    )

    assert await worker.exit_code() == 0
    task_lines = [line for line in worker.lines if f" {VID}: " in line]
    assert len(task_lines) == 2, worker.output
    assert any("transcript" in line and "2 segments -> task completed" in line for line in task_lines)
    assert any("metadata" in line and "4 metadata fields -> task completed" in line for line in task_lines)
    assert (await video_row(sessions)).video_metadata == METADATA


# --- options --------------------------------------------------------------------------------------


def test_options_default_from_the_environment(tmp_path):
    args = cli.build_parser(
        {"HOST": "0.0.0.0", "PORT": "8080", "ADMIN_TOKEN": "t", "WORKER_FETCHER": "dir", "WORKER_DIR": str(tmp_path)}
    ).parse_args([])
    assert (args.api_url, args.admin_token, args.fetcher, args.from_dir) == (
        "http://127.0.0.1:8080",
        "t",
        "dir",
        tmp_path,
    )
    assert (args.type, args.timeout, args.concurrency, args.max_tasks) == ("all", 30, 2, None)
    assert cli.build_parser({}).parse_args([]).api_url == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "argv, environ, message",
    [
        (["--fetcher", "dir", "--from-dir", "."], {}, "no admin token"),
        (["--fetcher", "dir"], {"ADMIN_TOKEN": "t"}, "--fetcher dir needs --from-dir DIR"),
        (["--fetcher", "dir", "--from-dir", "/nonexistent/dir"], {"ADMIN_TOKEN": "t"}, "not a directory"),
        (["--concurrency", "0"], {"ADMIN_TOKEN": "t"}, "must be at least 1"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(argv, environ, message, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv, environ)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# --- YouTube shapes (no network: the libraries are replaced by fakes) ----------------------------------


class FakeTranscriptApi:
    calls: list[tuple[str, list[str]]] = []

    def fetch(self, video_id, languages):
        FakeTranscriptApi.calls.append((video_id, languages))
        return self

    def to_raw_data(self):
        return [{"text": "hello", "start": 1.5, "duration": 2.0}, {"text": "world", "start": 3.5, "duration": 1.25}]


class FakeYtDlp:
    """The yt_dlp module surface used: YoutubeDL(opts) as a context manager."""

    info: dict[str, Any] | None = {
        "id": VID, "title": "T", "uploader": "U", "upload_date": "20091025", "duration": 213, "view_count": 10,
        "like_count": 2, "channel_url": "https://youtube.com/c/x", "description": "D", "thumbnail": "https://i/x.jpg",
        "formats": [{"huge": "list"}], "tags": ["not", "kept"],
    }  # fmt: skip

    class YoutubeDL:
        def __init__(self, options):
            self.options = options

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def extract_info(self, url, download):
            assert url == f"https://www.youtube.com/watch?v={VID}" and download is False
            return FakeYtDlp.info


async def test_youtube_transcript_items_rename_start_to_offset():
    fetcher = YoutubeFetcher(FakeTranscriptApi, FakeYtDlp)
    assert await fetcher.transcript(VID) == [
        {"text": "hello", "offset": 1.5, "duration": 2.0},
        {"text": "world", "offset": 3.5, "duration": 1.25},
    ]
    assert FakeTranscriptApi.calls[-1] == (VID, ["en", "hi"])


async def test_youtube_metadata_is_the_documented_subset():
    metadata = await YoutubeFetcher(FakeTranscriptApi, FakeYtDlp).metadata(VID)
    assert tuple(metadata) == METADATA_FIELDS
    assert metadata["upload_date"] == "20091025" and "formats" not in metadata


async def test_youtube_library_errors_become_fetch_errors():
    class Broken(FakeTranscriptApi):
        def fetch(self, video_id, languages):
            raise LookupError("Could not retrieve a transcript")

    with pytest.raises(FetchError, match="LookupError: Could not retrieve a transcript"):
        await YoutubeFetcher(Broken, FakeYtDlp).transcript(VID)
