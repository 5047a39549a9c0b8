"""Bench: 1,000 open readiness streams (GET /v2/videos/{id}/stream) fed by the real pipeline.

Starts one web process (`python -m vidwiz.web`) and one actor process (`python -m actors`)
on a temp SQLite file (or --db-url) and a real Redis, opens N guest streams (one video
each), lets them sit idle while sampling the web process's CPU, then for every video POSTs
the internal metadata, transcript and summary writers. Each POST commits and enqueues
`video_changed`; the actor publishes; the web process's ReadinessHub fans it out.

Prints delivery latency (internal POST's response -> the client has the `update`/`done`
frame) p50/p99/max, streams completed (`done` received: must be all), and the web
process's CPU while the streams sat idle. Targets: p99 < 100 ms, idle CPU < 2 %.

    python bench/readiness.py                       # 1,000 streams, SQLite temp file, Redis at 127.0.0.1:6379
    python bench/readiness.py --streams 200 --idle 5
    python bench/readiness.py --db-url postgresql://postgres@127.0.0.1:5432/test
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import psutil
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import load_settings  # noqa: E402
from vidwiz.db import create_engine, utcnow  # noqa: E402
from vidwiz.models import Base, Video  # noqa: E402

ADMIN_TOKEN = "bench-admin-token"
WRITERS = (  # the three internal writers, in the order a video becomes ready
    ("metadata", {"metadata": {"title": "Bench video", "duration": 60}}),
    ("transcript", {"transcript": [{"text": "hello", "offset": 0.0, "duration": 1.0}]}),
    ("summary", {"summary": "A short summary."}),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling")
    parser.add_argument("--db-url", help="default: a SQLite file in a temp directory")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="internal POSTs per second (0: as fast as the server answers)")
    return parser.parse_args()


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    return hard


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


class Stream:
    """One client: reads frames and timestamps every `update`/`done`."""

    def __init__(self, video_id: str):
        self.video_id = video_id
        self.events: list[tuple[str, float]] = []
        self.snapshot = asyncio.Event()
        self.done = False

    async def run(self, session: aiohttp.ClientSession, base: str) -> None:
        headers = {"X-Guest-Session-ID": f"bench-{self.video_id}"}
        async with session.get(f"{base}/v2/videos/{self.video_id}/stream", headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"stream {self.video_id}: HTTP {resp.status} {await resp.text()}")
            async for line in resp.content:
                if not line.startswith(b"event: "):
                    continue
                name = line[len(b"event: "):].strip().decode()
                now = time.perf_counter()
                if name == "snapshot":
                    self.snapshot.set()
                else:
                    self.events.append((name, now))
                if name == "done":
                    self.done = True
                    return


async def wait_for_http(base: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"web process exited with {process.returncode}")
            try:
                async with session.get(f"{base}/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("web process did not become ready")


async def seed(env: dict[str, str], video_ids: list[str]) -> None:
    engine = create_engine(load_settings(env, env_file=None))
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        now = utcnow()
        await conn.execute(Video.__table__.insert(), [
            {"video_id": v, "transcript_available": False, "created_at": now, "updated_at": now} for v in video_ids
        ])
    await engine.dispose()


async def post_round(session, base, video_ids, writer, body, rate) -> dict[str, float]:
    """POST one writer for every video, `rate` per second (0: all at once, 50 in flight);
    returns video id -> time its response arrived."""
    answered: dict[str, float] = {}
    gate = asyncio.Semaphore(50)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def one(video_id: str) -> None:
        async with gate:
            async with session.post(f"{base}/v2/internal/videos/{video_id}/{writer}", json=body, headers=headers) as resp:
                await resp.read()
                answered[video_id] = time.perf_counter()
                if resp.status != 200:
                    raise RuntimeError(f"{writer} {video_id}: HTTP {resp.status}")

    pending = []
    start = time.perf_counter()
    for index, video_id in enumerate(video_ids):
        if rate:
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
        pending.append(asyncio.create_task(one(video_id)))
    await asyncio.gather(*pending)
    return answered


async def main() -> int:
    args = parse_args()
    nofile = raise_open_files_limit()
    if nofile < args.streams + 200:
        print(f"RLIMIT_NOFILE hard limit {nofile} is too low for {args.streams} streams", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="vidwiz-bench-readiness-"))
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test", "SECRET_KEY": "bench-secret-key-0123456789abcdef0123", "ADMIN_TOKEN": ADMIN_TOKEN,
        "DB_URL": args.db_url or f"sqlite:///{workdir}/vidwiz.db", "REDIS_URL": args.redis_url,
        "REDIS_KEY_PREFIX": prefix, "DATA_DIR": str(workdir / "data"), "HOST": "127.0.0.1", "PORT": str(port),
        "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
    }
    for name in ("SQS_AI_NOTE_QUEUE_URL", "S3_BUCKET_NAME", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    video_ids = [f"b{i:010d}" for i in range(args.streams)]
    await seed(env, video_ids)

    base = f"http://127.0.0.1:{port}"
    web_proc = subprocess.Popen([sys.executable, "-m", "vidwiz.web"], env=env, cwd=workdir)
    actor_proc = subprocess.Popen([sys.executable, "-m", "actors"], env=env, cwd=workdir)
    redis = Redis.from_url(args.redis_url)
    try:
        await wait_for_http(base, web_proc)
        web = psutil.Process(web_proc.pid)
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            streams = [Stream(v) for v in video_ids]
            opened = time.perf_counter()
            tasks = [asyncio.create_task(s.run(session, base)) for s in streams]
            await asyncio.wait_for(asyncio.gather(*(s.snapshot.wait() for s in streams)), 60)
            open_seconds = time.perf_counter() - opened

            await asyncio.sleep(1.0)  # let the open burst settle
            cpu_before, wall_before = web.cpu_times(), time.perf_counter()
            await asyncio.sleep(args.idle)
            cpu_after, wall_after = web.cpu_times(), time.perf_counter()
            idle_cpu = 100 * ((cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)) / (
                wall_after - wall_before)

            latencies: list[float] = []
            early = 0
            rounds = []
            for index, (writer, body) in enumerate(WRITERS):
                started = time.perf_counter()
                answered = await post_round(session, base, video_ids, writer, body, args.rate)
                # Every stream gets one `update` per round (plus `done` in the last one).
                expected = index + 1
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and any(
                    sum(1 for name, _ in s.events if name == "update") < expected for s in streams
                ):
                    await asyncio.sleep(0.05)
                for stream in streams:
                    updates = [t for name, t in stream.events if name == "update"]
                    if len(updates) >= expected:
                        delta = updates[expected - 1] - answered[stream.video_id]
                        early += delta < 0
                        latencies.append(max(delta, 0.0))
                    if index == len(WRITERS) - 1:
                        latencies.extend(max(t - answered[stream.video_id], 0.0) for name, t in stream.events if name == "done")
                rounds.append((writer, time.perf_counter() - started))
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
            completed = sum(s.done for s in streams)
    finally:
        for process in (actor_proc, web_proc):
            process.terminate()
        for process in (actor_proc, web_proc):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()

    ms = [v * 1000 for v in latencies]
    print()
    pace = f"{args.rate:g} POST/s" if args.rate else "unpaced POSTs"
    print(f"readiness bench: {args.streams} streams, {pace}, DB {env['DB_URL'].split('://')[0]}, Redis {args.redis_url}")
    print(f"  {'streams opened (snapshot received)':42s} {args.streams} in {open_seconds:.2f} s")
    for writer, seconds in rounds:
        print(f"  {'round ' + writer + ' (POST all + deliver)':42s} {seconds:.2f} s")
    print(f"  {'deliveries measured (update + done)':42s} {len(ms)} (expected {args.streams * 4})")
    if ms:
        print(f"  {'delivery latency p50 / p99 / max':42s} {statistics.median(ms):.1f} / {percentile(ms, 99):.1f} / {max(ms):.1f} ms"
              f"   (target p99 < 100 ms)")
    print(f"  {'delivered before the POST response arrived':42s} {early} (counted as 0 ms)")
    print(f"  {'streams completed (done received)':42s} {completed} / {args.streams}")
    print(f"  {'web process CPU, streams idle':42s} {idle_cpu:.2f} % of one core over {args.idle:.0f} s   (target < 2 %)")
    ok = completed == args.streams and ms and percentile(ms, 99) < 100 and idle_cpu < 2
    print(f"  result: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
