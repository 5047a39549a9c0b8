"""Where transcripts and metadata come from: YouTube (the optional `[youtube]` extra) or a
local directory of canned JSON files (air-gapped installs, tests).

Shapes are the ones external workers have always submitted (docs/api.md §5.3): transcript items
`{"text", "offset", "duration"}`, metadata the yt-dlp subset in METADATA_FIELDS.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

TRANSCRIPT_LANGUAGES = ("en", "hi")
METADATA_FIELDS = (
    "id",
    "title",
    "uploader",
    "upload_date",
    "duration",
    "view_count",
    "like_count",
    "channel_url",
    "description",
    "thumbnail",
)
YT_DLP_OPTIONS = {"quiet": True, "no_warnings": True, "skip_download": True, "socket_timeout": 30}
# Video ids come from the server, but they also name files here: never let one leave the directory.
SAFE_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

T = TypeVar("T")


class FetchError(Exception):
    """This video's transcript/metadata could not be fetched; the message becomes the task's
    `error_message` (so the task is retried, docs/api.md §5.1)."""


class FetcherUnavailable(Exception):
    """The fetcher cannot run here at all (missing optional dependency, missing directory)."""


class Fetcher(Protocol):
    async def transcript(self, video_id: str) -> list[dict[str, Any]]: ...

    async def metadata(self, video_id: str) -> dict[str, Any]: ...


async def run_in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking call off the event loop. Not asyncio.to_thread: its pool threads are
    joined at exit, so one hung download would keep a stopping worker alive for ever."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.cancelled():
            outcome()

    def target() -> None:
        try:
            result = function(*args)
        except Exception as exc:
            outcome = functools.partial(future.set_exception, exc)
        else:
            outcome = functools.partial(future.set_result, result)
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:
            pass  # the loop is closed: the worker stopped and nobody awaits this result any more

    threading.Thread(target=target, name=f"fetch-{getattr(function, '__name__', 'call')}", daemon=True).start()
    return await future


# --- YouTube --------------------------------------------------------------------------------


def transcript_items(raw: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """youtube-transcript-api raw data (`{"text","start","duration"}`) -> the submitted items,
    with `start` renamed to `offset`."""
    return [{"text": item["text"], "offset": item["start"], "duration": item["duration"]} for item in raw]


def metadata_subset(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """yt-dlp's info dict -> the submitted metadata object (absent fields are null)."""
    if not info:
        raise FetchError("yt-dlp returned no video information")
    return {field: info.get(field) for field in METADATA_FIELDS}


class YoutubeFetcher:
    """youtube-transcript-api + yt-dlp, both synchronous: each call runs in a thread."""

    def __init__(self, transcript_api: Any, yt_dlp: Any) -> None:
        self._transcript_api = transcript_api  # the YouTubeTranscriptApi class
        self._yt_dlp = yt_dlp  # the yt_dlp module

    @classmethod
    def from_installed(cls) -> YoutubeFetcher:
        try:
            import yt_dlp
            from youtube_transcript_api import YouTubeTranscriptApi
        except ImportError as exc:
            raise FetcherUnavailable(
                f"--fetcher youtube needs the optional extra (missing module {exc.name!r}): "
                "pip install 'vidwiz[youtube]', or use --fetcher dir"
            ) from exc
        return cls(YouTubeTranscriptApi, yt_dlp)

    async def transcript(self, video_id: str) -> list[dict[str, Any]]:
        items = transcript_items(await self._call(self._download_transcript, video_id))
        if not items:
            raise FetchError(f"YouTube returned an empty transcript for {video_id}")
        return items

    async def metadata(self, video_id: str) -> dict[str, Any]:
        return metadata_subset(await self._call(self._download_info, video_id))

    # Both libraries are untyped (and optional): their answers are annotated with the shapes they document.
    def _download_transcript(self, video_id: str) -> list[dict[str, Any]]:
        fetched = self._transcript_api().fetch(video_id, languages=list(TRANSCRIPT_LANGUAGES))
        raw: list[dict[str, Any]] = fetched.to_raw_data()
        return raw

    def _download_info(self, video_id: str) -> dict[str, Any] | None:
        with self._yt_dlp.YoutubeDL(dict(YT_DLP_OPTIONS)) as ydl:
            info: dict[str, Any] | None = ydl.extract_info(
                f"https://www.youtube.com/watch?v={video_id}", download=False
            )
            return info

    @staticmethod
    async def _call(download: Callable[[str], T], video_id: str) -> T:
        try:
            return await run_in_daemon_thread(download, video_id)
        except Exception as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc


# --- Directory ------------------------------------------------------------------------------


class DirFetcher:
    """Reads `<dir>/<video_id>.transcript.json` (a JSON list of `{"text","offset","duration"}`)
    and `<dir>/<video_id>.metadata.json` (a JSON object)."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise FetcherUnavailable(f"--from-dir {directory}: not a directory")
        self.directory = directory

    async def transcript(self, video_id: str) -> list[dict[str, Any]]:
        path = self._path(video_id, "transcript")
        data = await run_in_daemon_thread(_read_json, path)
        if not isinstance(data, list) or not data:
            raise FetchError(f"{path}: expected a non-empty JSON list of transcript segments")
        if not all(isinstance(item, dict) and isinstance(item.get("text"), str) for item in data):
            raise FetchError(f'{path}: every transcript segment must be an object with a "text" string')
        return data

    async def metadata(self, video_id: str) -> dict[str, Any]:
        path = self._path(video_id, "metadata")
        data = await run_in_daemon_thread(_read_json, path)
        if not isinstance(data, dict) or not data:
            raise FetchError(f"{path}: expected a non-empty JSON object")
        return data

    def _path(self, video_id: str, kind: str) -> Path:
        if not SAFE_VIDEO_ID.match(video_id):
            raise FetchError(f"refusing unsafe video id {video_id!r}")
        return self.directory / f"{video_id}.{kind}.json"


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        raise FetchError(f"{path}: no such file") from None
    except OSError as exc:
        raise FetchError(f"{path}: cannot read ({exc.strerror})") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise FetchError(f"{path}: not valid JSON ({exc})") from exc


def make_fetcher(name: str, directory: Path | None) -> Fetcher:
    if name == "youtube":
        return YoutubeFetcher.from_installed()
    if name == "dir":
        if directory is None:
            raise FetcherUnavailable("--fetcher dir needs --from-dir DIR (or WORKER_DIR)")
        return DirFetcher(directory)
    raise FetcherUnavailable(f"unknown fetcher {name!r} (use youtube or dir)")
