"""Bench: Wiz chat time-to-first-token overhead at N concurrent chats.

The app runs in this process on a free 127.0.0.1 port, talking through the real
google-genai / openai SDKs to the LLM stand-in (tests/standins.py), which sends every
token after a fixed delay. The stand-in and the N chatting clients run in a child process
(the outside world), so the app's event loop carries only the app, as in production.
N guests each open a conversation on a video whose transcript is ready; then each sends
`--rounds` messages back to back, all N at once (so N chats are always in flight, and the
first N start in the same instant).

Overhead per chat = the moment the client reads the first `data: {"content": …}` frame
minus the moment the stand-in wrote its first token (both `time.perf_counter()`, which is
CLOCK_MONOTONIC on Linux, one clock for both processes): everything the backend adds
between the provider's first byte and the client's — SDK parsing, our relay, SSE framing,
and the event loop shared by all chats. Prints p50/p99/max per provider, and the whole TTFT.

    python bench/chat.py                                    # SQLite temp file + Redis at 127.0.0.1:6379
    python bench/chat.py --chats 50 --rounds 4 --token-delay 0.02 --tokens 20
    python bench/chat.py --db-url postgresql://postgres@127.0.0.1:5432/test --provider openai
    python bench/chat.py --no-gc-freeze                     # without gc.freeze() after start-up
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web
from common import RunningApp, add_backend_options, bench_env, ms, new_prefix, percentile, serve_app
from sqlalchemy import update

from tests.standins import LLMStandin, Reply
from vidwiz.context import SESSIONS, TRANSCRIPTS
from vidwiz.models import Video
from vidwiz.videos.service import upsert_video

VIDEO = "dQw4w9WgXcQ"
TRANSCRIPT = [{"text": f"segment {n} about bread", "offset": n * 4.0, "duration": 4.0} for n in range(400)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_options(parser)
    parser.add_argument("--provider", default="gemini,openai", help="comma-separated: gemini, openai")
    parser.add_argument("--chats", type=int, default=50, help="concurrent chats per round")
    parser.add_argument("--rounds", type=int, default=4, help="chats per client, back to back")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per reply")
    parser.add_argument("--token-delay", type=float, default=0.02, help="stand-in delay before each token, seconds")
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="skip gc.freeze() after start-up (see the note in the report)",
    )
    parser.add_argument("--budget", type=float, default=300.0, help="hard limit for the whole run, seconds")
    return parser.parse_args()


# -- the outside world (child process): stand-in provider and chatting clients -------------------


def outside_world(conn, args: argparse.Namespace) -> None:
    asyncio.run(_outside_world(conn, args))


async def _outside_world(conn, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    async with LLMStandin() as standin:
        standin.default = Reply(chunks=[f" tok{n}" for n in range(args.tokens)], delay=args.token_delay)
        conn.send({"gemini": standin.env("gemini"), "openai": standin.env("openai")})
        while (job := await loop.run_in_executor(None, conn.recv)) is not None:
            standin.calls.clear()
            conn.send(await Clients(args, job["base"]).run(standin))


class Clients:
    def __init__(self, args: argparse.Namespace, base: str):
        self.args = args
        self.base = base
        self.first_content: dict[str, float] = {}
        self.sent_at: dict[str, float] = {}
        self.failures = 0

    async def run(self, standin: LLMStandin) -> dict:
        async with aiohttp.ClientSession(self.base, connector=aiohttp.TCPConnector(limit=0)) as http:
            guests = [{"X-Guest-Session-ID": f"bench-{uuid.uuid4().hex}"} for _ in range(self.args.chats)]
            conversations = [await self.conversation(http, guest) for guest in guests]
            await self.chat(http, conversations[0], guests[0], "warm-up")  # SDK imports, connection pools
            await asyncio.gather(
                *(
                    self.chat_in_turn(http, conversation, guest, index)
                    for index, (conversation, guest) in enumerate(zip(conversations, guests))
                )
            )
        first_token = {call.last_user_text: call.first_chunk_at for call in standin.calls if call.first_chunk_at}
        overhead, ttft = [], []
        for message, seen in self.first_content.items():
            if message != "warm-up" and message in first_token:
                overhead.append(seen - first_token[message])
                ttft.append(seen - self.sent_at[message])
        return {"overhead": overhead, "ttft": ttft, "failures": self.failures}

    async def conversation(self, http: aiohttp.ClientSession, guest: dict[str, str]) -> int:
        async with http.post("/v2/conversations", json={"video_id": VIDEO}, headers=guest) as resp:
            assert resp.status == 201, await resp.text()
            return (await resp.json())["id"]

    async def chat_in_turn(
        self, http: aiohttp.ClientSession, conversation: int, guest: dict[str, str], index: int
    ) -> None:
        """One of the N concurrent clients: its chats back to back (the first ones all start at once)."""
        for round_no in range(self.args.rounds):
            await self.chat(http, conversation, guest, f"c{index}-r{round_no}")

    async def chat(self, http: aiohttp.ClientSession, conversation: int, guest: dict[str, str], message: str) -> None:
        self.sent_at[message] = time.perf_counter()
        async with http.post(
            f"/v2/conversations/{conversation}/messages", json={"message": message}, headers=guest
        ) as resp:
            if resp.status != 200:
                self.failures += 1
                await resp.read()
                return
            last = b""
            async for line in resp.content:
                if line.startswith(b'data: {"content"') and message not in self.first_content:
                    self.first_content[message] = time.perf_counter()
                if line.startswith(b"data: "):
                    last = line
            if last.strip() != b"data: [DONE]":
                self.failures += 1


# -- the app under test (this process) -------------------------------------------------------------


class AppUnderTest:
    def __init__(self, args: argparse.Namespace, workdir: Path, provider: str, provider_env: dict[str, str]):
        self.args = args
        self.workdir = workdir
        self.provider = provider
        self.provider_env = provider_env

    async def run(self, conn) -> dict:
        env = bench_env(
            self.workdir,
            db_url=self.args.db_url,
            redis_url=self.args.redis_url,
            prefix=new_prefix(),
            db_file=f"{self.provider}.db",
            WIZ_GUEST_DAILY_QUOTA=str(self.args.rounds + 2),
            **self.provider_env,
        )
        async with serve_app(env) as running:
            await self.make_transcript_ready(running)
            if self.args.gc_freeze:
                # What a long-running web process should do once started: move start-up objects
                # (modules, SDK type tables) out of the collector's reach. Without it a full
                # collection pauses the event loop for ~100 ms here, which dominates the p99.
                gc.collect()
                gc.freeze()
            conn.send({"base": running.base})
            async with asyncio.timeout(self.args.budget):
                return await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    async def make_transcript_ready(self, running: RunningApp) -> None:
        app: web.Application = running.app
        await app[TRANSCRIPTS].save(VIDEO, TRANSCRIPT)
        async with app[SESSIONS]() as session:
            await upsert_video(session, VIDEO)
            await session.execute(update(Video).where(Video.video_id == VIDEO).values(transcript_available=True))
            await session.commit()

    def report(self, result: dict) -> None:
        overhead, ttft = result["overhead"], result["ttft"]
        print(
            f"\n{self.provider}: {self.args.chats} concurrent clients x {self.args.rounds} chats, "
            f"{self.args.tokens} tokens/reply, {self.args.token_delay * 1000:.0f} ms/token, "
            f"db={'postgresql' if self.args.db_url else 'sqlite'}, gc.freeze {'on' if self.args.gc_freeze else 'off'}, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(f"  samples {len(overhead)}, failed chats {result['failures']}")
        print(f"  {'':32}{'p50':>11}{'p99':>12}{'max':>12}")
        for label, values in (("first-token overhead (ours)", overhead), ("time to first token (total)", ttft)):
            worst = ms(max(values, default=float("nan")))
            print(f"  {label:32}{ms(percentile(values, 50))}  {ms(percentile(values, 99))}  {worst}")


async def main() -> None:
    args = parse_args()
    parent, child = multiprocessing.Pipe()
    world = multiprocessing.get_context("spawn").Process(target=outside_world, args=(child, args), daemon=True)
    world.start()
    loop = asyncio.get_running_loop()
    try:
        provider_envs = await loop.run_in_executor(None, parent.recv)
        with tempfile.TemporaryDirectory(prefix="vidwiz-bench-") as tmp:
            for provider in [p.strip() for p in args.provider.split(",") if p.strip()]:
                bench = AppUnderTest(args, Path(tmp), provider, provider_envs[provider])
                bench.report(await bench.run(parent))
    finally:
        parent.send(None)
        world.join(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
