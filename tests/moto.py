"""A moto server (S3, SQS, ...) in a subprocess on a free port, for tests that need AWS.

Its fixtures (`moto_endpoint`, `sqs`, `sqs_queue_url`) are registered by tests/conftest.py;
`run_moto_server()` starts a server of one's own.
The server binds port 0 itself and reports the port it got, so nothing can race for it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import aioboto3
import pytest

START_TIMEOUT = 30.0
_LISTENING = re.compile(r"Running on (http://[\d.]+:\d+)")

# Credentials moto accepts (any value works); tests put these in the app's env.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


@contextlib.contextmanager
def run_moto_server(host: str = "127.0.0.1") -> Iterator[str]:
    """Start `python -m moto.server` on `host` port 0; yield its endpoint URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        endpoint = _wait_for_endpoint(process)
        # Keep draining the output so a chatty server never blocks on a full pipe.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_endpoint(process: subprocess.Popen) -> str:
    found: list[str] = []
    seen: list[str] = []

    def scan() -> None:
        for line in process.stdout:
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                found.append(match.group(1))
                return

    reader = threading.Thread(target=scan, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    if not found:
        raise RuntimeError(f"moto server did not start (exit code {process.poll()}): {''.join(seen)[-2000:]}")
    return found[0]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the whole test session; tests isolate by bucket/queue name."""
    with run_moto_server() as endpoint:
        yield endpoint


@pytest.fixture
async def sqs(moto_endpoint):
    """An SQS client on the moto server."""
    async with aioboto3.Session().client(
        "sqs",
        endpoint_url=moto_endpoint,
        region_name=AWS_ENV["AWS_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        yield client


@pytest.fixture
async def sqs_queue_url(sqs, test_id) -> str:
    """A queue of this test's own on the moto server."""
    return (await sqs.create_queue(QueueName=f"ai-notes-{test_id}"))["QueueUrl"]


async def receive_all(sqs, queue_url: str) -> list[str]:
    """Every message body waiting in the queue (each received message is deleted)."""
    bodies: list[str] = []
    while True:
        response = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = response.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
