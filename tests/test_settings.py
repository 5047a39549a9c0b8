"""config/settings.py: bad values stop start-up with one line naming the variable; secrets
outside `local` are required, in `local` generated once and reused; old DB_URL forms map to async drivers."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from config import load_settings
from config.settings import Settings, SettingsError, embedded_redis_password, to_async_db_url

SECRETS = {"SECRET_KEY": "k" * 40, "ADMIN_TOKEN": "a" * 32}
SUPERVISOR = Path(__file__).resolve().parent.parent / "supervisor.py"


def load(tmp_path: Path, **values: str) -> Settings:
    return load_settings(
        {"ENVIRONMENT": "test", "DATA_DIR": str(tmp_path / "data"), **SECRETS, **values}, env_file=None
    )


def fails(tmp_path: Path, variable: str, **values: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, **values)
    message = str(caught.value)
    assert message.startswith(f"{variable}:"), message
    assert "\n" not in message
    return message


def test_defaults(tmp_path):
    settings = load(tmp_path)
    assert (settings.environment, settings.host, settings.port, settings.jwt_expiry_hours) == (
        "test",
        "127.0.0.1",
        5000,
        24,
    )
    assert settings.db_url == "sqlite:///./vidwiz.db" and settings.async_db_url == "sqlite+aiosqlite:///./vidwiz.db"
    assert settings.cors_origins == ("*",)
    assert settings.google_certs_url == "https://www.googleapis.com/oauth2/v1/certs"
    assert settings.google_client_id is None and settings.redis_url is None


@pytest.mark.parametrize(
    "variable, value",
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("PORT", "50.5"),
        ("ENVIRONMENT", "dev"),
        ("ENVIRONMENT", "prod"),
        ("DB_URL", "not a url"),
        ("DB_URL", "mysql://u@h/db"),
        ("DB_URL", "postgresql://u@h:port/db"),
        ("DB_URL", "sqlite://somehost/x.db"),
        ("JWT_EXPIRY_HOURS", "0"),
        ("JWT_EXPIRY_HOURS", "soon"),
        ("MAX_BODY_BYTES", "10"),
        ("WEB_PROCESSES", "0"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("GOOGLE_CERTS_URL", "ftp://example.com/certs"),
        ("AWS_ENDPOINT_URL", "localhost:5000"),
        ("LOG_LEVEL", "LOUD"),
        ("BUILTIN_SUMMARIES", "maybe"),
        ("ACTOR_JOB_LOGS", "loud"),
        ("QUEUE_DASHBOARD", "sometimes"),
        ("LLM_PROVIDER", "llama"),
        ("SUPERVISOR_MAX_SECONDS", "-3"),
        ("LOGIN_ADDRESS_LIMIT", "0"),
        ("WIZ_GUEST_ADDRESS_DAILY_QUOTA", "-1"),
        ("MIGRATE_ON_START", "later"),
        ("DB_POOL_SIZE", "0"),
        ("DB_MAX_OVERFLOW", "-1"),
        ("DB_POOLER", "pgpool"),
        ("REDIS_SENTINELS", "10.0.0.1"),
        ("REDIS_SENTINELS", "10.0.0.2:port"),
        ("REDIS_SENTINELS", "10.0.0.1:0"),
    ],
)
def test_bad_values_name_the_variable(tmp_path, variable, value):
    message = fails(tmp_path, variable, **{variable: value})
    if variable not in ("DB_URL", "REDIS_URL"):
        assert value in message


def test_db_url_errors_do_not_echo_the_password(tmp_path):
    for url in (
        "postgresql://vidwiz:hunter2@db:notaport/vidwiz",
        "mysql://vidwiz:hunter2@db/vidwiz",
        "vidwiz:hunter2@db",
    ):
        assert "hunter2" not in fails(tmp_path, "DB_URL", DB_URL=url)


def test_redis_url_errors_do_not_echo_the_password(tmp_path):
    assert fails(tmp_path, "REDIS_URL", REDIS_URL="http://:hunter2@r:6379/0") == (
        "REDIS_URL: expected redis://, rediss:// or unix://, got http://"
    )
    assert "hunter2" not in fails(tmp_path, "REDIS_URL", REDIS_URL=":hunter2@r:6379/0")


@pytest.mark.parametrize("environment", ["production", "staging", "test"])
@pytest.mark.parametrize("missing", ["SECRET_KEY", "ADMIN_TOKEN"])
def test_secrets_required_outside_local(tmp_path, environment, missing):
    values = {"ENVIRONMENT": environment, "DATA_DIR": str(tmp_path), **SECRETS, missing: "  "}
    with pytest.raises(SettingsError) as caught:
        load_settings(values, env_file=None)
    assert str(caught.value) == f"{missing}: required when ENVIRONMENT={environment}"
    assert not (tmp_path / "secrets.json").exists()


@pytest.mark.parametrize("environment", ["production", "staging"])
@pytest.mark.parametrize("weak", ["SECRET_KEY", "ADMIN_TOKEN"])
def test_short_secrets_refused_outside_local_and_test(tmp_path, environment, weak):
    values = {"ENVIRONMENT": environment, "DATA_DIR": str(tmp_path), **SECRETS, weak: "s3cr3t-" + "x" * 24}
    with pytest.raises(SettingsError) as caught:
        load_settings(values, env_file=None)
    assert str(caught.value) == f"{weak}: must be at least 32 characters when ENVIRONMENT={environment}, got 31"
    assert "s3cr3t" not in str(caught.value)
    accepted = load_settings({**values, weak: "x" * 32}, env_file=None)
    assert getattr(accepted, weak.lower()) == "x" * 32


@pytest.mark.parametrize("environment", ["local", "test"])
def test_short_secrets_allowed_in_local_and_test(tmp_path, environment):
    settings = load_settings(
        {"ENVIRONMENT": environment, "DATA_DIR": str(tmp_path), "SECRET_KEY": "short", "ADMIN_TOKEN": "x"},
        env_file=None,
    )
    assert (settings.secret_key, settings.admin_token) == ("short", "x")


def test_supervisor_with_a_weak_secret_exits_2_with_one_line(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "ENVIRONMENT": "production",
        "SECRET_KEY": "short",
        "ADMIN_TOKEN": "x",
        "DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [sys.executable, str(SUPERVISOR)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done
    assert (done.stdout + done.stderr).splitlines() == [
        "supervisor: invalid configuration: "
        "SECRET_KEY: must be at least 32 characters when ENVIRONMENT=production, got 5"
    ]


# The guest cap per address is a product limit, not a developer's obstacle: 20 everywhere.
THROTTLE_VARIABLES = (
    "LOGIN_ACCOUNT_LIMIT",
    "LOGIN_ADDRESS_LIMIT",
    "SIGNUP_ADDRESS_LIMIT",
    "WIZ_GUEST_ADDRESS_DAILY_QUOTA",
)


def throttle_limits(settings: Settings) -> tuple[int, ...]:
    return (
        settings.login_account_limit,
        settings.login_address_limit,
        settings.signup_address_limit,
        settings.wiz_guest_address_daily_quota,
    )


def test_throttles_are_generous_in_local_and_strict_elsewhere(tmp_path):
    local = {"ENVIRONMENT": "local", "DATA_DIR": str(tmp_path / "data")}
    assert throttle_limits(load_settings(local, env_file=None)) == (100, 500, 1000, 20)
    for environment in ("production", "staging", "test"):
        assert throttle_limits(load(tmp_path, ENVIRONMENT=environment)) == (10, 50, 20, 20)
    # Explicit values win everywhere.
    explicit = {name: str(n) for n, name in enumerate(THROTTLE_VARIABLES, start=3)}
    assert throttle_limits(load_settings({**local, **explicit}, env_file=None)) == (3, 4, 5, 6)
    assert throttle_limits(load(tmp_path, ENVIRONMENT="production", **explicit)) == (3, 4, 5, 6)


def test_local_secrets_generated_once_and_reused(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    env = {"ENVIRONMENT": "local", "DATA_DIR": str(tmp_path / "data")}
    first = load_settings(env, env_file=None)
    assert first.secret_key and first.admin_token and first.secret_key != first.admin_token
    assert len(first.secret_key) >= 40
    path = tmp_path / "data" / "secrets.json"
    assert json.loads(path.read_text()) == {"SECRET_KEY": first.secret_key, "ADMIN_TOKEN": first.admin_token}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sum("generated" in r.getMessage() for r in caplog.records) == 1

    second = load_settings(env, env_file=None)
    assert (second.secret_key, second.admin_token) == (first.secret_key, first.admin_token)
    assert sum("generated" in r.getMessage() for r in caplog.records) == 1
    assert [p.name for p in path.parent.iterdir()] == ["secrets.json"]  # no drafts left behind

    explicit = load_settings({**env, "SECRET_KEY": "from-env"}, env_file=None)
    assert (explicit.secret_key, explicit.admin_token) == ("from-env", first.admin_token)


def _load_local_secret_key(data_dir: str) -> str:
    return load_settings({"ENVIRONMENT": "local", "DATA_DIR": data_dir}, env_file=None).secret_key


def test_concurrent_first_starts_agree_on_one_secret(tmp_path):
    data_dir = str(tmp_path / "data")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_load_local_secret_key, [data_dir] * 8)
    assert len(set(keys)) == 1


def test_unreadable_local_secrets_file_is_one_clear_error(tmp_path):
    (tmp_path / "secrets.json").write_text("{not json")
    with pytest.raises(SettingsError) as caught:
        load_settings({"ENVIRONMENT": "local", "DATA_DIR": str(tmp_path)}, env_file=None)
    assert str(caught.value).startswith("SECRET_KEY:") and "secrets.json" in str(caught.value)
    (tmp_path / "secrets.json").write_text('{"SECRET_KEY": ""}')
    with pytest.raises(SettingsError) as caught:
        load_settings({"ENVIRONMENT": "local", "DATA_DIR": str(tmp_path)}, env_file=None)
    assert str(caught.value).startswith("SECRET_KEY:")


def test_the_embedded_redis_password_is_kept_with_the_local_secrets_in_every_environment(tmp_path):
    data_dir = tmp_path / "data"
    password = embedded_redis_password(data_dir)  # e.g. ENVIRONMENT=production without REDIS_URL
    path = data_dir / "secrets.json"
    assert len(password) >= 32 and json.loads(path.read_text()) == {"REDIS_PASSWORD": password}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert embedded_redis_password(data_dir) == password

    local = load_settings({"ENVIRONMENT": "local", "DATA_DIR": str(data_dir)}, env_file=None)  # missing ones are added
    assert json.loads(path.read_text()) == {
        "REDIS_PASSWORD": password,
        "SECRET_KEY": local.secret_key,
        "ADMIN_TOKEN": local.admin_token,
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in data_dir.iterdir()] == ["secrets.json"]


@pytest.mark.parametrize(
    "old, new",
    [
        ("sqlite:///./vidwiz.db", "sqlite+aiosqlite:///./vidwiz.db"),
        ("sqlite:////var/lib/vidwiz.db", "sqlite+aiosqlite:////var/lib/vidwiz.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@db:5432/vidwiz", "postgresql+asyncpg://u:p@db:5432/vidwiz"),
        ("postgresql+psycopg2://u:p@db/vidwiz", "postgresql+asyncpg://u:p@db/vidwiz"),
        ("postgres://u@db/vidwiz", "postgresql+asyncpg://u@db/vidwiz"),
        ("postgresql+asyncpg://u@db/vidwiz", "postgresql+asyncpg://u@db/vidwiz"),
        ("postgresql:///vidwiz", "postgresql+asyncpg:///vidwiz"),  # libpq's local-socket form
    ],
)
def test_db_url_old_forms_map_to_async_drivers(tmp_path, old, new):
    assert to_async_db_url(old) == new
    settings = load(tmp_path, DB_URL=old)
    assert settings.db_url == old and settings.async_db_url == new
    assert settings.is_sqlite == new.startswith("sqlite")


def test_env_file_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=6000\nHOST=0.0.0.0\nGOOGLE_CLIENT_ID=from-file\n")
    settings = load_settings({"ENVIRONMENT": "test", **SECRETS, "PORT": "7000"}, env_file=env_file)
    assert (settings.port, settings.host, settings.google_client_id) == (7000, "0.0.0.0", "from-file")
    assert load_settings({"ENVIRONMENT": "test", **SECRETS}, env_file=tmp_path / "missing.env").port == 5000


def test_values_are_parsed(tmp_path):
    settings = load(
        tmp_path,
        PORT=" 8080 ",
        ENVIRONMENT="Production",
        CORS_ORIGINS="https://a.example, chrome-extension://x ,",
        JWT_EXPIRY_HOURS="2",
        MAX_BODY_BYTES="4096",
        BUILTIN_SUMMARIES="off",
        LOG_LEVEL="debug",
        GOOGLE_CLIENT_ID="cid",
        GOOGLE_CERTS_URL="http://127.0.0.1:9/certs",
        REDIS_URL="redis://r:6379/1",
    )
    assert (settings.port, settings.environment, settings.jwt_expiry_hours, settings.max_body_bytes) == (
        8080,
        "production",
        2,
        4096,
    )
    assert settings.cors_origins == ("https://a.example", "chrome-extension://x")
    assert settings.builtin_summaries is False and settings.log_level == "DEBUG"
    assert (settings.google_client_id, settings.google_certs_url, settings.redis_url) == (
        "cid",
        "http://127.0.0.1:9/certs",
        "redis://r:6379/1",
    )
    assert settings.docs_enabled is False and load(tmp_path, ENVIRONMENT="staging").docs_enabled is True


def test_job_logs_and_queue_dashboard_are_off_by_default(tmp_path):
    assert (load(tmp_path).actor_job_logs, load(tmp_path).queue_dashboard) == (False, False)
    settings = load(tmp_path, ACTOR_JOB_LOGS="true", QUEUE_DASHBOARD="1")
    assert (settings.actor_job_logs, settings.queue_dashboard) == (True, True)


def test_the_fingerprint_changes_with_each_shared_value_and_shows_none(tmp_path):
    base = load(tmp_path)
    assert len(base.fingerprint) == 12 and load(tmp_path).fingerprint == base.fingerprint
    others = [
        load(tmp_path, SECRET_KEY="s" * 40),
        load(tmp_path, ADMIN_TOKEN="t" * 32),
        load(tmp_path, REDIS_KEY_PREFIX="other:"),
    ]
    assert len({base.fingerprint, *(o.fingerprint for o in others)}) == 4
    assert not any(value[:6] in base.fingerprint for value in (*SECRETS.values(), "vidwiz:"))
    # Per-host values are not part of it.
    assert load(tmp_path, PORT="6000", DATA_DIR=str(tmp_path / "elsewhere")).fingerprint == base.fingerprint


def test_pool_settings(tmp_path):
    settings = load(tmp_path)
    assert (settings.db_pool_size, settings.db_max_overflow, settings.db_pooler) == (10, 20, "none")
    settings = load(tmp_path, DB_POOL_SIZE="3", DB_MAX_OVERFLOW="0", DB_POOLER="PgBouncer")
    assert (settings.db_pool_size, settings.db_max_overflow, settings.db_pooler) == (3, 0, "pgbouncer")


def test_redis_sentinels(tmp_path):
    settings = load(tmp_path)
    assert (settings.redis_sentinels, settings.redis_sentinel_master) == ((), "mymaster")
    settings = load(tmp_path, REDIS_SENTINELS=" s1:26379, [::1]:26380 ,", REDIS_SENTINEL_MASTER="vidwiz")
    assert settings.redis_sentinels == (("s1", 26379), ("::1", 26380))
    assert settings.redis_sentinel_master == "vidwiz"


def test_task_recheck_seconds(tmp_path):
    assert load(tmp_path).task_recheck_seconds == 3.0
    assert load(tmp_path, TASK_RECHECK_SECONDS="0.5").task_recheck_seconds == 0.5
    with pytest.raises(SettingsError, match="TASK_RECHECK_SECONDS"):
        load(tmp_path, TASK_RECHECK_SECONDS="0")


def test_migrate_on_start_is_on_unless_turned_off(tmp_path):
    assert load(tmp_path).migrate_on_start is True
    assert load(tmp_path, MIGRATE_ON_START="false").migrate_on_start is False
