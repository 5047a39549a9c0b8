"""The queue dashboard in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright; .ci/run installs it) against the test app's server while an arq worker runs the real
actors. The page shows live jobs of both queues while notes are created, opens a job, and its
buttons abort, re-enqueue, retry and cancel (checked through the API and the database)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright import async_api as playwright_api
from playwright.async_api import expect

from actors.worker import build_worker_settings
from tests.conftest import ADMIN, ADMIN_TOKEN, claim_task, eventually, submit_result
from vidwiz.context import KEYS, REDIS
from vidwiz.tasks.models import TaskStatus
from vidwiz.tasks.service import FETCH_METADATA, FETCH_TRANSCRIPT

CHROMIUM = Path("/usr/bin/chromium")


def chromium() -> str:
    """Debian's chromium: missing, the test fails saying so (it is never skipped)."""
    assert CHROMIUM.exists(), "needs Debian's chromium: apt-get install -y chromium (.ci/run installs it)"
    return str(CHROMIUM)


A, B, C = "aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc"
WAIT_MS = 15_000


@pytest.fixture
def env(env):
    env["QUEUE_DASHBOARD"] = "true"  # the page is served outside local/staging only when enabled
    return env


async def api(client, path, **params):
    resp = await client.get(f"/v2/internal/queue{path}", params=params, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_the_dashboard_shows_both_queues_live_and_its_buttons_act(client, factory, actor_worker, settings):
    functions = build_worker_settings(settings).functions  # the real actors
    async with (
        actor_worker(functions, max_tries=1) as _,
        playwright_api.async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            await page.goto(str(client.make_url("/v2/internal/queue/ui")))
            await page.fill("#token", ADMIN_TOKEN)
            await page.click("#use-token")
            await expect(page.locator("#n-health")).not_to_have_text("–", timeout=WAIT_MS)

            # The service works: notes create tasks, a worker's result makes an actor job; both
            # queues show them.
            token, _ = await factory.user()
            for video_id in (A, B):
                await factory.note(token, video_id, text=f"note on {video_id}")
            pending = page.locator("#tasks-pending tbody tr")
            await expect(pending).to_have_count(4, timeout=WAIT_MS)  # transcript and metadata, per video
            task = await claim_task(client, "metadata")
            video_id = task["task_details"]["video_id"]
            body = {"video_id": video_id, "success": True, "metadata": {"title": "A video"}}
            resp = await submit_result(client, task["task_id"], body)
            assert resp.status == 200, await resp.text()
            await page.click("#job-tabs button[data-state=finished]")
            finished = page.locator("#jobs tbody tr", has_text="video_changed")
            await expect(finished.first).to_be_visible(timeout=WAIT_MS)
            await expect(finished.first).to_contain_text(video_id)
            await expect(pending).to_have_count(3, timeout=WAIT_MS)

            # A job's detail.
            await finished.first.locator("button.job-link").click()
            await expect(page.locator("#detail")).to_be_visible()
            await expect(page.locator("#detail-body")).to_contain_text('"function": "video_changed"', timeout=WAIT_MS)

            # Abort a deferred job.
            deferred = await client.app[REDIS].enqueue_job(
                "summarize_video",
                C,
                _queue_name=client.app[KEYS].arq_queue,
                _defer_until=datetime.now(UTC) + timedelta(hours=1),
            )
            await page.click("#job-tabs button[data-state=deferred]")
            row = page.locator(f"#jobs tbody tr[data-job-id='{deferred.job_id}']")
            await row.locator("button.abort").click()
            await expect(row).to_have_count(0, timeout=WAIT_MS)
            aborted = (await api(client, "/jobs", state="finished", status="aborted"))["jobs"]
            assert [job["job_id"] for job in aborted] == [deferred.job_id]

            # Re-enqueue it: the actor runs it again (a summary with summaries off stores nothing).
            await page.click("#job-tabs button[data-state=finished]")
            await page.locator(f"#jobs tbody tr[data-job-id='{deferred.job_id}'] button.reenqueue").click()

            async def ran_again():
                runs = (await api(client, "/jobs", state="finished", function="summarize_video"))["jobs"]
                return [job for job in runs if job["status"] == "complete" and job["args"] == [C]]

            await eventually(ran_again, "the re-enqueued job to run")

            # Cancel a pending task.
            metadata_task = await factory.task("ddddddddddd", FETCH_METADATA)
            cancel = page.locator(f"#tasks-pending tbody tr[data-task-id='{metadata_task}'] button.cancel")
            await cancel.click()
            await expect(cancel).to_have_count(0, timeout=WAIT_MS)
            assert (await factory.get_task(metadata_task)).status == TaskStatus.CANCELLED

            # Retry a failed task, and see a worker claim it.
            for kind in ("transcript", "transcript"):  # the pending transcript tasks of A and B
                await claim_task(client, kind)
            failed_task = await factory.task(
                "eeeeeeeeeee",
                FETCH_TRANSCRIPT,
                status=TaskStatus.FAILED,
                retry_count=3,
                worker_details={"error_message": "no captions"},
            )
            retry = page.locator(f"#tasks-failed tbody tr[data-task-id='{failed_task}'] button.retry")
            await expect(page.locator("#tasks-failed")).to_contain_text("no captions", timeout=WAIT_MS)
            claimed = asyncio.create_task(claim_task(client, "transcript"))
            await retry.click()
            assert (await asyncio.wait_for(claimed, WAIT_MS / 1000))["task_id"] == failed_task
            await expect(retry).to_have_count(0, timeout=WAIT_MS)
            assert (await factory.get_task(failed_task)).status == TaskStatus.IN_PROGRESS
        finally:
            await browser.close()
