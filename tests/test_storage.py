"""Transcript store (docs/api.md §8): local directory and S3 (against a moto server)."""

from __future__ import annotations

import json
import uuid

import aioboto3
import pytest
from sqlalchemy import select

from tests.conftest import ADMIN, assert_error, claim_task
from tests.moto import AWS_ENV
from vidwiz.storage import LocalTranscriptStore, TranscriptStoreError, open_transcript_store
from vidwiz.tasks.models import Task, TaskStatus
from vidwiz.tasks.service import FETCH_TRANSCRIPT
from vidwiz.videos.models import Video

VID = "dQw4w9WgXcQ"
TRANSCRIPT = [
    {"text": "hi", "offset": 0.0, "duration": 1.2},
    {"text": "naïve “quotes”", "offset": 1.2, "duration": 0.5},
]


# -- local directory ----------------------------------------------------------------------------


async def test_local_store_round_trip(tmp_path):
    store = LocalTranscriptStore(tmp_path)
    assert await store.load(VID) is None
    await store.save(VID, TRANSCRIPT)
    assert (tmp_path / "transcripts" / f"{VID}.json").read_text(encoding="utf-8") == json.dumps(TRANSCRIPT)
    assert await store.load(VID) == TRANSCRIPT
    await store.save(VID, [{"text": "replaced"}])
    assert await store.load(VID) == [{"text": "replaced"}]
    assert [p.name for p in (tmp_path / "transcripts").iterdir()] == [f"{VID}.json"]  # no temp files left


async def test_local_store_rejects_paths_outside_its_root(tmp_path):
    store = LocalTranscriptStore(tmp_path / "root")
    with pytest.raises(ValueError):
        await store.save("../../escape", TRANSCRIPT)


async def test_local_store_write_failure_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(TranscriptStoreError):
        await LocalTranscriptStore(tmp_path / "file").save(VID, TRANSCRIPT)


# -- S3 (moto server) ---------------------------------------------------------------------------


@pytest.fixture
def bucket() -> str:
    return f"transcripts-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def env(env, moto_endpoint, bucket):  # extends conftest's env for S3
    return {**env, **AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint, "S3_BUCKET_NAME": bucket}


@pytest.fixture
async def s3(settings):
    from vidwiz.storage import aws_client_kwargs

    async with aioboto3.Session().client("s3", **aws_client_kwargs(settings)) as client:
        yield client


async def test_s3_store_round_trip(settings, s3, bucket):
    await s3.create_bucket(Bucket=bucket)
    async with open_transcript_store(settings) as store:
        assert await store.load(VID) is None
        await store.save(VID, TRANSCRIPT)
        assert await store.load(VID) == TRANSCRIPT


async def test_s3_store_unavailable_is_a_store_error(settings):
    async with open_transcript_store(settings) as store:  # the bucket was never created
        with pytest.raises(TranscriptStoreError):
            await store.save(VID, TRANSCRIPT)


async def assert_s3_object(s3, bucket: str, video_id: str, transcript) -> None:
    obj = await s3.get_object(Bucket=bucket, Key=f"transcripts/{video_id}.json")
    assert obj["ContentType"] == "application/json"
    async with obj["Body"] as stream:
        assert await stream.read() == json.dumps(transcript).encode("utf-8")


async def test_internal_transcript_write_lands_in_s3(client, s3, bucket):
    await s3.create_bucket(Bucket=bucket)
    resp = await client.post(f"/v2/internal/videos/{VID}/transcript", json={"transcript": TRANSCRIPT}, headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["transcript_available"] is True
    await assert_s3_object(s3, bucket, VID, TRANSCRIPT)


async def claim_transcript_task(client, factory) -> int:
    await factory.video(VID)
    await factory.task(VID, FETCH_TRANSCRIPT)
    return (await claim_task(client, "transcript"))["task_id"]


async def test_task_result_transcript_lands_in_s3(client, s3, bucket, factory):
    await s3.create_bucket(Bucket=bucket)
    task_id = await claim_transcript_task(client, factory)
    body = {"video_id": VID, "success": True, "transcript": TRANSCRIPT}
    resp = await client.post(f"/v2/internal/tasks/{task_id}/result", json=body, headers=ADMIN)
    assert (await resp.json())["status"] == "completed"
    await assert_s3_object(s3, bucket, VID, TRANSCRIPT)


async def test_s3_down_during_task_result_commits_nothing(client, s3, bucket, sessions, factory):
    task_id = await claim_transcript_task(client, factory)  # no bucket: every put fails
    body = {"video_id": VID, "success": True, "transcript": TRANSCRIPT}
    resp = await client.post(f"/v2/internal/tasks/{task_id}/result", json=body, headers=ADMIN)
    assert resp.status == 503
    assert_error(await resp.json(), "SERVICE_UNAVAILABLE")
    async with sessions() as session:
        task = await session.get(Task, task_id)
        video = await session.scalar(select(Video).where(Video.video_id == VID))
    assert (task.status, task.completed_at) == (TaskStatus.IN_PROGRESS, None)  # reclaimable after the window
    assert video.transcript_available is False
    await s3.create_bucket(Bucket=bucket)  # S3 is back: the same worker's retry succeeds
    resp = await client.post(f"/v2/internal/tasks/{task_id}/result", json=body, headers=ADMIN)
    assert (await resp.json())["status"] == "completed"
    await assert_s3_object(s3, bucket, VID, TRANSCRIPT)
