"""A fleet for tests (and bench/fleet.py): N supervisors as separate hosts sharing one
PostgreSQL database, one Redis and one key prefix, as an operator would run them.

Each host is a Linux network namespace with its own address on a bridge in the root
namespace (veth pairs; needs root). The bridge's address is the "hub": the shared
services listen there, since the machine's PostgreSQL and Redis listen on 127.0.0.1 only,
which no namespace reaches:
- a private `redis-server` on a free port;
- a private `pgbouncer` (session pooling) in front of PostgreSQL 127.0.0.1:5432, serving a
  fresh database made for the fleet and dropped after it.
Tests start their own stand-ins (LLM, moto) on the hub address too. When namespaces cannot
be made, hosts are distinct loopback addresses (127.0.<n>.2, …) and the reason is logged.

Every run owns a directory /tmp/vidwiz-fleet/<id>/ naming its owner pid, namespaces,
bridge, service pids and database; a run whose owner is gone (an aborted pytest) is cleaned
up by the next one. Names carry the run id, so parallel runs never collide.

Registered in tests/conftest.py's pytest_plugins; `fleet_network` is its fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
import pytest
import pytest_asyncio

from tests.conftest import ADMIN_TOKEN, BACKENDS, PG_URL, SECRET_KEY, eventually
from tests.fleet_support import pg_admin
from tests.supervised_tree import Tree, append_to

log = logging.getLogger(__name__)

RUNS = Path("/tmp/vidwiz-fleet")
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
REDIS_SERVER = shutil.which("redis-server") or "redis-server"
FLEET_SIZE = 3


# -- commands -------------------------------------------------------------------------------------


async def run(*argv: str, check: bool = True) -> str:
    """Run a command to its end; its stdout (stderr in the error when it fails and `check`)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def owner_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def same_process(pid: int, started: float) -> bool:
    """`pid` is still the process that started at `started` (pids are reused)."""
    try:
        return psutil.Process(pid).create_time() == started
    except psutil.NoSuchProcess:
        return False


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def require_pgbouncer() -> None:
    if not os.path.isfile(PGBOUNCER):
        raise RuntimeError(f"{PGBOUNCER} not found: apt-get install pgbouncer (.ci/run installs it)")


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- the run's record, and cleaning up after runs that died -------------------------------------


@dataclass
class Record:
    """What a run made, on disk as it is made, so that another run can undo it."""

    path: Path
    namespaces: list[str] = field(default_factory=list)
    bridge: str | None = None
    pids: list[tuple[int, float]] = field(default_factory=list)  # with each one's start time
    database: str | None = None

    @classmethod
    def new(cls, run_id: str) -> Record:
        path = RUNS / run_id
        path.mkdir(parents=True)
        path.chmod(0o755)  # pgbouncer runs as another user and reads its files here
        record = cls(path)
        record.save()
        return record

    def save(self) -> None:
        body = {"owner": os.getpid(), "namespaces": self.namespaces, "bridge": self.bridge}
        body |= {"pids": self.pids, "database": self.database}
        (self.path / "record.json").write_text(json.dumps(body))

    async def undo(self) -> None:
        """Remove everything recorded (whatever is already gone is skipped)."""
        for namespace in self.namespaces:  # a host's processes first: killing them frees its addresses
            kill_pids(int(pid) for pid in (await run("ip", "netns", "pids", namespace, check=False)).split())
            await run("ip", "netns", "del", namespace, check=False)
        kill_pids(pid for pid, started in self.pids if same_process(pid, started))
        if self.bridge:
            await run("ip", "link", "del", self.bridge, check=False)
        if self.database:
            await drop_database(self.database)
        shutil.rmtree(self.path, ignore_errors=True)


async def clean_stale_runs() -> None:
    """Undo the runs whose owner process is gone."""
    for record in stale_records():
        log.warning("fleet: cleaning up run %s left by a process that is gone", record.path.name)
        await record.undo()


def stale_records() -> list[Record]:
    """Records of runs whose owner is gone (local files: reading them does not block)."""
    found = []
    for path in RUNS.iterdir() if RUNS.is_dir() else ():
        try:
            body = json.loads((path / "record.json").read_text())
        except (OSError, ValueError):
            continue
        if not owner_alive(body.pop("owner")):
            found.append(Record(path, **body))
    return found


async def drop_database(name: str) -> None:
    await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the network ------------------------------------------------------------------------------------


@dataclass
class Network:
    """Where hosts live: `hub` is the root namespace's address on their link (services and
    clients), `addresses[i]` is host i's, reached from the hub; `wrappers[i]` runs a command
    on host i."""

    hub: str
    addresses: list[str]
    wrappers: list[list[str]]
    isolated: bool  # namespaces (False: loopback addresses of one network stack)


async def make_network(record: Record, run_id: str, hosts: int) -> Network:
    try:
        return await _namespaces(record, run_id, hosts)
    except (RuntimeError, OSError) as exc:
        log.warning("fleet: no network namespaces (%s); hosts are loopback addresses instead", exc)
        subnet = random.randint(1, 254)
        addresses = [f"127.0.{subnet}.{2 + i}" for i in range(hosts)]
        return Network("127.0.0.1", addresses, [[] for _ in addresses], isolated=False)


async def _namespaces(record: Record, run_id: str, hosts: int) -> Network:
    if os.geteuid() != 0:
        raise RuntimeError("not root")
    used = await run("ip", "-o", "-4", "addr", "show")
    while True:  # a /24 of 10.0.0.0/8 no interface here is on
        prefix = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
        if f" {prefix}." not in used:
            break
    bridge = f"vwb{run_id}"
    record.bridge = bridge
    record.save()
    await run("ip", "link", "add", bridge, "type", "bridge")
    await run("ip", "addr", "add", f"{prefix}.1/24", "dev", bridge)
    await run("ip", "link", "set", bridge, "up")
    addresses, wrappers = [], []
    for i in range(hosts):
        namespace, outside, inside = f"vwf-{run_id}-{i}", f"vwv{run_id}{i}", f"vwp{run_id}{i}"
        record.namespaces.append(namespace)
        record.save()
        await run("ip", "netns", "add", namespace)
        await run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        await run("ip", "link", "set", inside, "netns", namespace)
        await run("ip", "link", "set", outside, "master", bridge, "up")
        await run("ip", "-n", namespace, "addr", "add", f"{prefix}.{10 + i}/24", "dev", inside)
        await run("ip", "-n", namespace, "link", "set", inside, "up")
        await run("ip", "-n", namespace, "link", "set", "lo", "up")
        addresses.append(f"{prefix}.{10 + i}")
        wrappers.append(["ip", "netns", "exec", namespace])
    return Network(f"{prefix}.1", addresses, wrappers, isolated=True)


# -- the shared services ------------------------------------------------------------------------------


async def start_service(record: Record, argv: list[str], log_name: str) -> asyncio.subprocess.Process:
    with append_to(record.path / log_name) as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    with contextlib.suppress(psutil.NoSuchProcess):
        record.pids.append((proc.pid, psutil.Process(proc.pid).create_time()))
    record.save()
    return proc


async def wait_for_port(host: str, port: int, proc: asyncio.subprocess.Process, what: str, log_path: Path) -> None:
    async def accepting() -> bool:
        assert proc.returncode is None, f"{what} exited: {tail(log_path)}"
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            return False
        writer.close()
        return True

    await eventually(accepting, f"{what} on {host}:{port}", timeout=30, interval=0.05)


async def start_redis(record: Record, hub: str) -> str:
    port = free_port(hub)
    argv = [REDIS_SERVER, "--bind", hub, "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--protected-mode", "no", "--dir", str(record.path)]
    proc = await start_service(record, argv, "redis.log")
    await wait_for_port(hub, port, proc, "redis-server", record.path / "redis.log")
    return f"redis://{hub}:{port}/0"


async def start_pgbouncer(record: Record, hub: str, database: str, server_connections: int) -> str:
    """PgBouncer in session mode on the hub for `database` on the machine's PostgreSQL.

    Its clients queue for one of `server_connections`, so the fleet stays inside
    PostgreSQL's max_connections (shared with other test runs). In session mode an idle
    client keeps its server connection, and each process's pool keeps up to 10 idle ones:
    idle clients are closed after a few seconds (the pools' pre-ping reconnects them), or
    idle pools would starve busy processes."""
    port = free_port(hub)
    (record.path / "users.txt").write_text('"postgres" ""\n')
    (record.path / "pgbouncer.ini").write_text(
        f"[databases]\n{database} = host=127.0.0.1 port=5432 dbname={database}\n"
        f"[pgbouncer]\nlisten_addr = {hub}\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {record.path}/users.txt\npool_mode = session\n"
        f"max_client_conn = 5000\ndefault_pool_size = {server_connections}\nclient_idle_timeout = 10\n"
    )
    argv = [PGBOUNCER, str(record.path / "pgbouncer.ini")]
    if os.geteuid() == 0:
        argv[1:1] = ["-u", "nobody"]  # PgBouncer refuses to run as root
    proc = await start_service(record, argv, "pgbouncer.log")
    await wait_for_port(hub, port, proc, "pgbouncer", record.path / "pgbouncer.log")
    return f"postgresql://postgres@{hub}:{port}/{database}"


# -- hosts and the fleet -------------------------------------------------------------------------------


class Host:
    """One supervisor on one host of the fleet; it can be stopped, killed and started again."""

    def __init__(self, index: int, address: str, wrapper: list[str], env: dict[str, str], workdir: Path) -> None:
        self.index = index
        self.address = address
        self.wrapper = wrapper
        self.workdir = workdir
        self.env = env
        self.base_url = f"http://{address}:{env['PORT']}"
        self.tree: Tree | None = None
        self.past: list[Tree] = []  # earlier runs, for their output

    async def start(self) -> None:
        assert self.tree is None or self.tree.proc.returncode is not None, "already running"
        if self.tree is not None:
            self.past.append(self.tree)
        self.tree = await Tree.start(self.env, cwd=self.workdir, wrapper=self.wrapper)

    async def up(self) -> None:
        assert self.tree is not None
        await self.tree.up()

    async def stop(self) -> int:
        """SIGTERM: the graceful stop of a deploy; the supervisor's exit status."""
        assert self.tree is not None
        return await self.tree.signal_and_wait(signal.SIGTERM)

    async def kill(self) -> None:
        """The host dies at once: every process of its tree gets SIGKILL together."""
        assert self.tree is not None
        self.tree.remember_descendants()
        kill_pids([self.tree.proc.pid, *(proc.pid for proc in self.tree.leftovers())])
        await self.tree.exit_status()
        await eventually(lambda: not self.tree.leftovers(), f"host {self.index}'s processes gone")

    async def close(self) -> None:
        for tree in [*self.past, *([self.tree] if self.tree else [])]:
            await tree.close()

    def output(self) -> str:
        return "\n".join(tree.output() for tree in [*self.past, *([self.tree] if self.tree else [])])


@dataclass
class FleetNetwork:
    """The hosts' network and the shared PostgreSQL database and Redis, before any host runs."""

    network: Network
    db_url: str  # through PgBouncer on the hub
    direct_db_url: str  # the same database at 127.0.0.1 (the tests' own queries)
    redis_url: str  # the private redis-server on the hub
    workdir: Path
    prefix: str = field(default_factory=lambda: f"fleet:{uuid.uuid4().hex[:8]}:")

    @property
    def hub(self) -> str:
        return self.network.hub

    def env(self, **extra: str) -> dict[str, str]:
        """What every host shares (each adds its own HOST, PORT and DATA_DIR)."""
        basics = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "VIRTUAL_ENV")}
        return {
            **basics,
            "ENVIRONMENT": "test",
            "SECRET_KEY": SECRET_KEY,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DB_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "REDIS_KEY_PREFIX": self.prefix,
            # One transcript store for the fleet (S3 in production; one machine's disk here).
            "TRANSCRIPT_DIR": str(self.workdir / "transcripts"),
            "WEB_PROCESSES": "1",
            "ACTOR_PROCESSES": "1",
            "SUPERVISOR_SHUTDOWN_TIMEOUT": "5",
            # Long-polls answer through wake-ups only, so a test sees that they cross hosts.
            "TASK_RECHECK_SECONDS": "3600",
            **extra,
        }

    def hosts(self, env: dict[str, str]) -> list[Host]:
        hosts = []
        for i, (address, wrapper) in enumerate(zip(self.network.addresses, self.network.wrappers, strict=True)):
            workdir = self.workdir / f"host{i}"
            workdir.mkdir(exist_ok=True)
            own = {"HOST": address, "PORT": str(free_port("127.0.0.1")), "DATA_DIR": str(workdir / "data")}
            hosts.append(Host(i, address, wrapper, {**env, **own}, workdir))
        return hosts


@contextlib.asynccontextmanager
async def open_fleet_network(
    workdir: Path, hosts: int = FLEET_SIZE, server_connections: int = 60
) -> AsyncIterator[FleetNetwork]:
    """The network, database and Redis of a fleet of `hosts`; all removed on exit."""
    require_pgbouncer()
    await clean_stale_runs()
    run_id = uuid.uuid4().hex[:6]
    record = Record.new(run_id)
    try:
        network = await make_network(record, run_id, hosts)
        record.database = f"fleet_{run_id}"
        record.save()
        await pg_admin(f'CREATE DATABASE "{record.database}"')
        redis_url = await start_redis(record, network.hub)
        db_url = await start_pgbouncer(record, network.hub, record.database, server_connections)
        direct_url = PG_URL.rsplit("/", 1)[0] + f"/{record.database}"
        yield FleetNetwork(network, db_url, direct_url, redis_url, workdir)
    finally:
        await record.undo()


@contextlib.asynccontextmanager
async def running(hosts: list[Host]) -> AsyncIterator[list[Host]]:
    """Start the hosts at the same moment, as a rolling deploy or a reboot would (their
    migrations take turns under PostgreSQL's advisory lock), and wait until all serve."""
    try:
        for host in hosts:
            await host.start()
        await asyncio.gather(*(host.up() for host in hosts))
        yield hosts
    finally:
        for host in hosts:
            await host.close()


async def metric_total(
    http: aiohttp.ClientSession, hosts: Iterable[Host], name: str, headers: dict[str, str], **labels: str
) -> float:
    """The sum over hosts of a Prometheus sample (each host's /metrics adds up its processes)."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for host in hosts:
        async with http.get(f"{host.base_url}/metrics", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            for line in (await resp.text()).splitlines():
                sample, _, value = line.rpartition(" ")
                if sample.split("{")[0] == name and all(label in sample for label in wanted):
                    total += float(value)
    return total


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet_network(tmp_path_factory) -> AsyncIterator[FleetNetwork]:
    """A module's fleet network (three hosts' addresses), PostgreSQL database and Redis."""
    if "postgres" not in BACKENDS:
        pytest.skip("a fleet shares PostgreSQL (VIDWIZ_TEST_BACKENDS excludes it)")
    async with open_fleet_network(tmp_path_factory.mktemp("fleet")) as made:
        yield made
