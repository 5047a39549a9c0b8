"""Transcript store: S3 (aioboto3) when S3_BUCKET_NAME is set, else a local directory.

Key layout and body are the external contract (docs/api.md §8): `transcripts/{video_id}.json`,
`json.dumps(transcript)` UTF-8, `ContentType: application/json`. The local directory
uses the same relative key, so moving to S3 is a plain copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from config import Settings

log = logging.getLogger(__name__)


def transcript_key(video_id: str) -> str:
    return f"transcripts/{video_id}.json"


class TranscriptStoreError(Exception):
    """A transcript could not be written (S3 or disk unavailable); the caller commits nothing."""


class TranscriptStore(Protocol):
    async def save(self, video_id: str, transcript: list[dict[str, Any]]) -> None:
        """Write the transcript; raises TranscriptStoreError when it could not be stored."""

    async def load(self, video_id: str) -> list[dict[str, Any]] | None: ...


class LocalTranscriptStore:
    def __init__(self, root: Path):
        self.root = root

    def _path(self, video_id: str) -> Path:
        path = (self.root / transcript_key(video_id)).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"invalid video id for a transcript path: {video_id!r}")
        return path

    async def save(self, video_id: str, transcript: list[dict[str, Any]]) -> None:
        try:
            await asyncio.to_thread(self._write, self._path(video_id), json.dumps(transcript))
        except OSError as exc:
            raise TranscriptStoreError(f"could not write transcript {video_id}: {exc}") from exc

    @staticmethod
    def _write(path: Path, body: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a reader never sees half a transcript.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.replace(tmp, path)

    async def load(self, video_id: str) -> list[dict[str, Any]] | None:
        try:
            raw = await asyncio.to_thread(self._path(video_id).read_text, encoding="utf-8")
            data = json.loads(raw)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, list) else None


class S3Objects(Protocol):
    """The calls made on aioboto3's S3 client (which has no type information)."""

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict[str, Any]: ...

    async def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]: ...


class S3TranscriptStore:
    def __init__(self, client: S3Objects, bucket: str):
        self.client = client
        self.bucket = bucket

    async def save(self, video_id: str, transcript: list[dict[str, Any]]) -> None:
        try:
            await self.client.put_object(
                Bucket=self.bucket,
                Key=transcript_key(video_id),
                Body=json.dumps(transcript).encode("utf-8"),
                ContentType="application/json",
            )
        except (BotoCoreError, ClientError) as exc:
            raise TranscriptStoreError(f"could not write transcript {video_id} to S3: {exc}") from exc

    async def load(self, video_id: str) -> list[dict[str, Any]] | None:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=transcript_key(video_id))
            async with response["Body"] as stream:
                data = json.loads(await stream.read())
        except Exception:
            log.warning("could not read transcript %s from S3", video_id, exc_info=True)
            return None
        return data if isinstance(data, list) else None


def aws_client_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"region_name": settings.aws_region}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        kwargs["aws_access_key_id"] = settings.aws_access_key_id
        kwargs["aws_secret_access_key"] = settings.aws_secret_access_key
    return kwargs


@contextlib.asynccontextmanager
async def open_transcript_store(settings: Settings) -> AsyncIterator[TranscriptStore]:
    """The store for these settings, with its S3 client open for the block's lifetime."""
    bucket = settings.s3_bucket_name
    if not bucket:  # not settings.s3_enabled
        yield LocalTranscriptStore(settings.transcript_dir)
        return
    import aioboto3
    from aiobotocore.config import AioConfig

    # Bounded waits: a request handler must fail fast (503) rather than hang on a dead S3.
    config = AioConfig(connect_timeout=5, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"})
    async with aioboto3.Session().client("s3", config=config, **aws_client_kwargs(settings)) as client:
        yield S3TranscriptStore(client, bucket)
