"""Bench: login and `GET /v2/users/me` throughput and latency at 50 concurrent clients, and
`/v2/users/me` latency while logins run (argon2 runs off the event loop, so it should stay low).

The app runs in this process on a free 127.0.0.1 port; the load comes from a child process
(so client work does not share the server's event loop). Each scenario runs for a fixed time.
The server's event-loop lag (how late a 10 ms timer fires) is sampled throughout.

    python bench/auth.py                                  # SQLite temp file + Redis at 127.0.0.1:6379
    python bench/auth.py --db-url postgresql://postgres@127.0.0.1:5432/test
    python bench/auth.py --clients 50 --seconds 5 --login-clients 10
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

import aiohttp
from common import (
    PASSWORD,
    LoadGroup,
    LoopLag,
    add_backend_options,
    bench_env,
    client_process_pool,
    new_prefix,
    percentile,
    print_table,
    register,
    register_and_login,
    run_load,
    serve_app,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backend_options(parser)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients per scenario")
    parser.add_argument("--login-clients", type=int, default=10, help="concurrent logins in the mixed scenario")
    parser.add_argument("--users", type=int, default=10, help="accounts registered for the logins")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each scenario")
    return parser.parse_args()


async def make_users(base: str, count: int) -> tuple[list[dict], str]:
    """`count` accounts to log in with, and a token for the profile reads."""
    logins = [{"email": f"bench{n}-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD} for n in range(count)]
    async with aiohttp.ClientSession(base) as http:
        await asyncio.gather(*(register(http, creds["email"]) for creds in logins[1:]))
        token = await register_and_login(http, logins[0]["email"])
    return logins, token


async def measure(args: argparse.Namespace, base: str) -> list[tuple]:
    logins, token = await make_users(base, args.users)
    login = [("POST", "/v2/auth/login", creds) for creds in logins]
    me = [("GET", "/v2/users/me", None)]
    me_headers = {"Authorization": f"Bearer {token}"}
    loop = asyncio.get_running_loop()
    lag = LoopLag(0.01)
    lag_task = asyncio.create_task(lag.run())
    rows: list[tuple] = []
    try:
        with client_process_pool() as pool:

            async def scenario(label: str, groups: list[tuple[str, LoadGroup]]) -> None:
                lag.take()
                results = await loop.run_in_executor(pool, run_load, base, [g for _, g in groups], args.seconds)
                lags = lag.take()
                for (name, group), result in zip(groups, results):
                    rows.append((label, name, group.clients, result, lags))

            def logging_in(clients: int) -> tuple[str, LoadGroup]:
                return "POST /v2/auth/login", LoadGroup(login, clients, repeat=True)

            def reading(clients: int) -> tuple[str, LoadGroup]:
                return "GET /v2/users/me", LoadGroup(me, clients, me_headers, repeat=True)

            await loop.run_in_executor(pool, run_load, base, [reading(2)[1]], 0.5)  # spawn + warm-up
            await scenario("logins alone", [logging_in(args.clients)])
            await scenario("profile reads alone", [reading(args.clients)])
            await scenario("reads while logging in", [reading(args.clients), logging_in(args.login_clients)])
    finally:
        lag_task.cancel()
    return rows


def report(rows: list[tuple]) -> None:
    columns = [
        ("scenario", -24),
        ("endpoint", -20),
        ("clients", 7),
        ("ok", 7),
        ("errors", 6),
        ("req/s", 8),
        ("p50 ms", 8),
        ("p99 ms", 8),
        ("max ms", 8),
        ("loop lag p99/max ms", 20),
    ]
    print_table(
        columns,
        (
            (
                label,
                name,
                clients,
                len(result.latencies),
                sum(result.errors.values()),
                f"{result.rate:.1f}",
                f"{percentile(result.latencies, 50) * 1000:.1f}",
                f"{percentile(result.latencies, 99) * 1000:.1f}",
                f"{max(result.latencies, default=0) * 1000:.1f}",
                f"{percentile(lags, 99) * 1000:.1f}/{max(lags, default=0) * 1000:.1f}",
            )
            for label, name, clients, result, lags in rows
        ),
    )


async def run(args: argparse.Namespace, workdir: Path) -> None:
    env = bench_env(workdir, db_url=args.db_url, redis_url=args.redis_url, prefix=new_prefix())
    async with serve_app(env) as running:
        print(
            f"db={running.db_kind} redis={args.redis_url} app={running.base} "
            f"clients={args.clients} seconds/scenario={args.seconds}"
        )
        rows = await measure(args, running.base)
    report(rows)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="vidwiz-bench-") as workdir:
        asyncio.run(run(args, Path(workdir)))


if __name__ == "__main__":
    main()
