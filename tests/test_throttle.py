"""Login throttling (vidwiz/auth/throttle.py): failed logins per account and per address are
slowed, then refused with 429 for a fixed window; registration and Google sign-in per address;
Redis down fails open."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from tests.conftest import assert_error, closed_port
from tests.google_certs import CLIENT_ID
from vidwiz.auth import service, throttle

PASSWORD = "password123"
LIMITS = {
    "LOGIN_ACCOUNT_LIMIT": "3",
    "LOGIN_ADDRESS_LIMIT": "5",
    "LOGIN_MAX_DELAY_SECONDS": "0.01",
    "SIGNUP_ADDRESS_LIMIT": "4",
}


@pytest.fixture
def env(env, request, google_certs):
    """Small limits; a test may add settings with `@pytest.mark.parametrize("env", [{...}], indirect=True)`."""
    return {
        **env,
        **LIMITS,
        "GOOGLE_CLIENT_ID": CLIENT_ID,
        "GOOGLE_CERTS_URL": google_certs.url,
        **getattr(request, "param", {}),
    }


async def register(client, email: str, **headers) -> int:
    resp = await client.post(
        "/v2/auth/register", json={"email": email, "password": PASSWORD, "name": "Throttled"}, headers=headers
    )
    return resp.status


async def login(client, email: str, password: str = PASSWORD, **headers):
    return await client.post("/v2/auth/login", json={"email": email, "password": password}, headers=headers)


async def fail_logins(client, email: str, times: int, **headers) -> None:
    for _ in range(times):
        resp = await login(client, email, "wrong-password", **headers)
        assert resp.status == 401, await resp.text()


async def assert_throttled(resp, message: str = throttle.LOGIN_REFUSED, window: int = 900) -> int:
    assert resp.status == 429, await resp.text()
    body = await resp.json()
    assert_error(body, "RATE_LIMIT_EXCEEDED", message)
    retry_after = body["error"]["details"]["retry_after_seconds"]
    assert set(body["error"]["details"]) == {"retry_after_seconds"}
    assert 1 <= retry_after <= window
    assert resp.headers["Retry-After"] == str(retry_after)
    return retry_after


async def test_failed_logins_are_refused_then_even_the_right_password_waits(client):
    assert await register(client, "victim@example.com") == 201
    await fail_logins(client, "victim@example.com", 3)
    await assert_throttled(await login(client, "victim@example.com", "wrong-password"))
    await assert_throttled(await login(client, "victim@example.com"))  # a guess that is right reveals nothing


@pytest.mark.parametrize("env", [{"LOGIN_WINDOW_SECONDS": "3"}], indirect=True)
async def test_the_lock_ends_with_its_window_whatever_is_sent_meanwhile(client):
    assert await register(client, "victim@example.com") == 201
    await fail_logins(client, "victim@example.com", 3)
    retry_after = await assert_throttled(await login(client, "victim@example.com", "wrong-password"), window=3)
    for _ in range(5):  # refused attempts neither count nor extend the window
        await assert_throttled(await login(client, "victim@example.com", "wrong-password"), window=3)
    await asyncio.sleep(retry_after + 0.2)
    resp = await login(client, "victim@example.com")
    assert resp.status == 200, await resp.text()
    # The success cleared the account: a new typo is a plain 401 again.
    resp = await login(client, "victim@example.com", "typo")
    assert resp.status == 401


async def test_other_accounts_are_unaffected(client):
    for email in ("victim@example.com", "bystander@example.com"):
        assert await register(client, email) == 201
    await fail_logins(client, "victim@example.com", 3)
    await assert_throttled(await login(client, "victim@example.com"))
    resp = await login(client, "bystander@example.com", "wrong-password")
    assert resp.status == 401
    resp = await login(client, "bystander@example.com")
    assert resp.status == 200, await resp.text()


async def test_a_success_resets_the_account_counter(client):
    assert await register(client, "user@example.com") == 201
    await fail_logins(client, "user@example.com", 2)
    assert (await login(client, "user@example.com")).status == 200
    await fail_logins(client, "user@example.com", 2)  # 4 failures in the window, but not in a row
    assert (await login(client, "USER@example.com")).status == 200  # same account, normalised email


async def test_unknown_emails_count_too(client):
    await fail_logins(client, "nobody@example.com", 3)
    await assert_throttled(await login(client, "nobody@example.com"))


async def test_failures_per_address_across_accounts(client):
    assert await register(client, "user@example.com") == 201
    for n in range(5):  # below every account's limit, but the address reaches its own
        await fail_logins(client, f"guess{n}@example.com", 1)
    await assert_throttled(await login(client, "user@example.com"))
    # X-Forwarded-For is ignored without TRUSTED_PROXIES: a forged one does not escape.
    await assert_throttled(await login(client, "user@example.com", **{"X-Forwarded-For": "203.0.113.9"}))


@pytest.mark.parametrize("env", [{"TRUSTED_PROXIES": "127.0.0.1,::1"}], indirect=True)
async def test_behind_a_trusted_proxy_the_forwarded_address_counts(client):
    assert await register(client, "user@example.com") == 201
    attacker = {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"}  # the left hop is the client's to invent
    for n in range(5):
        await fail_logins(client, f"guess{n}@example.com", 1, **attacker)
    await assert_throttled(await login(client, "user@example.com", **attacker))
    await assert_throttled(await login(client, "user@example.com", **{"X-Forwarded-For": "1.2.3.4, 203.0.113.1"}))
    resp = await login(client, "user@example.com", **{"X-Forwarded-For": "203.0.113.2"})
    assert resp.status == 200, await resp.text()


async def test_the_delay_grows_with_failures(client, monkeypatch):
    delays = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds):
        delays.append(seconds)
        await real_sleep(seconds)

    monkeypatch.setattr(throttle.asyncio, "sleep", recording_sleep)
    assert await register(client, "user@example.com") == 201
    assert (await login(client, "user@example.com")).status == 200
    await fail_logins(client, "user@example.com", 3)
    # None before the first failure; then failures/limit of the 0.01 s cap (the address: x/5).
    assert delays == pytest.approx([0.01 * 1 / 3, 0.01 * 2 / 3])


@pytest.fixture
def verifications(monkeypatch) -> list[str]:
    """The passwords checked (our own verify_password, wrapped)."""
    checked: list[str] = []
    real_verify = service.verify_password

    async def counting_verify(stored, password):
        checked.append(password)
        return await real_verify(stored, password)

    monkeypatch.setattr(service, "verify_password", counting_verify)
    return checked


@pytest.mark.parametrize("env", [{"LOGIN_ADDRESS_LIMIT": "8", "LOGIN_ACCOUNT_LIMIT": "1000"}], indirect=True)
async def test_concurrent_guesses_across_accounts_check_at_most_the_address_limit(client, verifications):
    responses = await asyncio.gather(*(login(client, f"guess{n}@example.com", "wrong-password") for n in range(100)))
    statuses = [resp.status for resp in responses]
    assert sorted(statuses) == [401] * 8 + [429] * 92
    assert len(verifications) == 8
    for resp in responses:
        if resp.status == 429:
            await assert_throttled(resp)


@pytest.mark.parametrize("env", [{"LOGIN_ACCOUNT_LIMIT": "8", "LOGIN_ADDRESS_LIMIT": "1000"}], indirect=True)
async def test_concurrent_guesses_on_one_account_check_at_most_the_account_limit(client, verifications):
    assert await register(client, "victim@example.com") == 201
    responses = await asyncio.gather(*(login(client, "victim@example.com", f"guess-{n}") for n in range(100)))
    assert sorted(resp.status for resp in responses) == [401] * 8 + [429] * 92
    assert len(verifications) == 8
    # Locked for the window, the right password included.
    await assert_throttled(await login(client, "victim@example.com"))


async def test_successes_and_abandoned_attempts_give_their_address_slots_back(client, verifications, monkeypatch):
    assert await register(client, "user@example.com") == 201
    await fail_logins(client, "guess@example.com", 2)
    for _ in range(6):  # more than the address limit (5): successes do not stay reserved
        assert (await login(client, "user@example.com")).status == 200
    real_login = service.login

    async def broken_login(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(service, "login", broken_login)
    for _ in range(6):  # neither do attempts that never got a verdict
        assert (await login(client, "user@example.com", "wrong-password")).status == 500
    monkeypatch.setattr(service, "login", real_login)
    await fail_logins(client, "user@example.com", 3)  # 2 + 3 failures: the address limit
    await assert_throttled(await login(client, "other@example.com"))
    assert len(verifications) == 2 + 6 + 3


async def test_registration_is_throttled_per_address(client):
    statuses = [await register(client, f"new{n}@example.com") for n in range(4)]
    assert statuses == [201, 201, 201, 201]
    body = {"email": "late@example.com", "password": PASSWORD, "name": "Late"}
    resp = await client.post("/v2/auth/register", json=body)
    await assert_throttled(resp, throttle.SIGNUP_REFUSED, window=3600)
    # Invalid bodies are answered first and do not count (they never reach the database).
    resp = await client.post("/v2/auth/register", json={"email": "x"})
    assert resp.status == 422


async def test_google_sign_in_is_throttled_per_address(client):
    for _ in range(4):
        resp = await client.post("/v2/auth/google", json={"credential": "not-a-google-token"})
        assert resp.status == 401, await resp.text()
    resp = await client.post("/v2/auth/google", json={"credential": "not-a-google-token"})
    await assert_throttled(resp, throttle.SIGNUP_REFUSED, window=3600)
    # Registration has its own counter.
    assert await register(client, "fresh@example.com") == 201


async def test_redis_down_fails_open(make_client, caplog):
    dead = aioredis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
    client = await make_client(redis=dead)
    assert await register(client, "user@example.com") == 201
    await fail_logins(client, "user@example.com", 5)  # past the limit: nothing counts without Redis
    resp = await login(client, "user@example.com")
    assert resp.status == 200, await resp.text()
    assert "throttle counters unavailable; login attempt not throttled" in caplog.text
    await dead.aclose()
