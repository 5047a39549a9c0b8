#!/usr/bin/env python3
"""A minimal external transcript worker for VidWiz: a template for your own (docs/api.md §5.3).

It long-polls `GET /v2/internal/tasks?type=transcript`, fetches the transcript, and submits
`POST /v2/internal/tasks/{id}/result`: `{video_id, success: true, transcript}` or
`{video_id, success: false, error_message}` (the server retries a failed task up to 3 times).
Network errors and 5xx are retried with exponential backoff and jitter; 401/403 and other
4xx are not. Needs aiohttp (and youtube-transcript-api for the default fetch).

    ADMIN_TOKEN=... python examples/transcript_worker.py --api-url http://127.0.0.1:5000
"""

import argparse
import asyncio
import os
import random

import aiohttp


async def fetch_transcript(video_id):
    """Replace with your source. Items are {"text", "offset", "duration"}."""
    from youtube_transcript_api import YouTubeTranscriptApi

    fetched = await asyncio.to_thread(YouTubeTranscriptApi().fetch, video_id, languages=["en", "hi"])
    return [{"text": s["text"], "offset": s["start"], "duration": s["duration"]} for s in fetched.to_raw_data()]


async def call(http, method, url, attempts=8, **kwargs):
    """One API call; returns the JSON body, or None for 204 (no task within the timeout)."""
    for attempt in range(attempts):
        try:
            async with http.request(method, url, **kwargs) as resp:
                if resp.status < 500:
                    resp.raise_for_status()  # 4xx (e.g. a wrong token): retrying cannot help
                    return None if resp.status == 204 else await resp.json()
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            print(f"{method} {url}: {exc!r}")
        if attempt + 1 < attempts:
            await asyncio.sleep(min(30, 0.5 * 2**attempt) * random.uniform(0.5, 1))  # backoff with jitter
    raise RuntimeError(f"{method} {url}: giving up after {attempts} attempts")


async def work(api_url, token, fetch=fetch_transcript, timeout=30, max_tasks=None):
    tasks_url = f"{api_url.rstrip('/')}/v2/internal/tasks"
    poll = {
        "params": {"type": "transcript", "timeout": str(timeout)},
        "timeout": aiohttp.ClientTimeout(total=None, sock_read=timeout + 10),
    }  # the server holds the poll
    done = 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        while max_tasks is None or done < max_tasks:
            task = await call(http, "GET", tasks_url, **poll)
            if task is None:
                continue  # 204: nothing to do yet, poll again at once
            video_id = task["task_details"]["video_id"]
            try:
                result = {"video_id": video_id, "success": True, "transcript": await fetch(video_id)}
            except Exception as exc:  # report it, so the server hands the task out again
                result = {"video_id": video_id, "success": False, "error_message": f"{type(exc).__name__}: {exc}"}
            answer = await call(http, "POST", f"{tasks_url}/{task['task_id']}/result", json=result)
            print(f"task {task['task_id']} {video_id}: {'ok' if result['success'] else 'failed'} -> {answer['status']}")
            done += 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", default="http://127.0.0.1:5000")
    parser.add_argument("--timeout", type=int, default=30)
    parser.add_argument("--max-tasks", type=int)
    args = parser.parse_args()
    asyncio.run(work(args.api_url, os.environ["ADMIN_TOKEN"], timeout=args.timeout, max_tasks=args.max_tasks))
