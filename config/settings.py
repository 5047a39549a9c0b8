"""Typed settings loaded from the environment (and an optional `.env` file).

`load_settings()` is the only way to build a `Settings`; nothing here runs at import.
A bad value raises `SettingsError` with one line naming the variable.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload
from urllib.parse import urlsplit

from dotenv import dotenv_values
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

log = logging.getLogger(__name__)

ENVIRONMENTS = ("local", "staging", "production", "test")
LLM_PROVIDERS = ("gemini", "openai")
WORKER_FETCHERS = ("youtube", "dir")
DB_POOLERS = ("none", "pgbouncer")
# Shortest SECRET_KEY / ADMIN_TOKEN accepted outside local/test (HS256 wants 256-bit keys).
MIN_SECRET_LENGTH = 32
# Throttle defaults per environment: `local` is a developer's machine, where one address
# (localhost) makes every request and the embedded Redis keeps counters across restarts.
STRICT_LIMITS = {
    "LOGIN_ACCOUNT_LIMIT": 10,
    "LOGIN_ADDRESS_LIMIT": 50,
    "SIGNUP_ADDRESS_LIMIT": 20,
}
LOCAL_LIMITS = {
    "LOGIN_ACCOUNT_LIMIT": 100,
    "LOGIN_ADDRESS_LIMIT": 500,
    "SIGNUP_ADDRESS_LIMIT": 1000,
}


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A configuration value is missing or malformed (the message names the variable)."""


@dataclass(frozen=True)
class Settings:
    environment: str = "local"
    db_url: str = "sqlite:///./vidwiz.db"
    redis_url: str | None = None
    redis_key_prefix: str = "vidwiz:"
    # Redis Sentinel: the sentinels' addresses and the name of the primary they watch. When set,
    # every Redis user asks them for the current primary (REDIS_URL then gives only the
    # password and database number); no embedded Redis runs.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    data_dir: Path = Path("./vidwiz-data")
    secret_key: str | None = None
    admin_token: str | None = None
    jwt_expiry_hours: int = 24
    google_client_id: str | None = None
    google_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    sqs_ai_note_queue_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_region: str = "ap-south-1"
    aws_endpoint_url: str | None = None
    s3_bucket_name: str | None = None
    transcript_dir: Path = Path("./vidwiz-data/transcripts")
    llm_provider: str | None = None
    gemini_api_key: str | None = None
    gemini_model_name: str = "gemini-2.5-flash"
    gemini_base_url: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model_name: str = "gpt-4o-mini"
    wiz_user_daily_quota: int = 20
    wiz_guest_daily_quota: int = 5
    # Guest messages per client address per UTC day, whatever guest ids it sends.
    wiz_guest_address_daily_quota: int = 20
    wiz_max_tokens: int = 4096
    host: str = "127.0.0.1"
    port: int = 5000
    web_processes: int = 1
    actor_processes: int = 1
    builtin_workers: int = 0
    worker_fetcher: str = "youtube"
    worker_dir: Path | None = None
    builtin_summaries: bool = True
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 10 * 1024 * 1024
    log_level: str = "INFO"
    actor_job_timeout: float = 30.0
    # A waiting long-poller claims again this often even without a wake-up (the safety net for a
    # wake-up Redis lost).
    task_recheck_seconds: float = 3.0
    actor_job_logs: bool = False  # arq's per-job start/finish lines at INFO (else DEBUG)
    queue_dashboard: bool = False  # serve the queue page in production too
    supervisor_max_restarts: int = 5
    supervisor_max_seconds: float = 30.0
    supervisor_shutdown_timeout: float = 10.0
    # False: the supervisor starts no `migrate` child (the deployment migrates in a release step).
    migrate_on_start: bool = True
    # PostgreSQL connections per process: a pool of this size, plus this many more under load.
    db_pool_size: int = 10
    db_max_overflow: int = 20
    # "pgbouncer": DB_URL is a PgBouncer in transaction pooling mode (no prepared statement may
    # outlive its transaction).
    db_pooler: str = "none"
    # Login throttling (vidwiz/auth/throttle.py): failed logins per account and per client
    # address in a fixed window; registration and Google sign-in attempts per address.
    login_account_limit: int = 10
    login_address_limit: int = 50
    login_window_seconds: int = 900
    login_max_delay_seconds: float = 2.0
    signup_address_limit: int = 20
    signup_window_seconds: int = 3600
    # Proxies whose X-Forwarded-For is believed (none by default: the peer address counts).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def docs_enabled(self) -> bool:
        return self.environment in ("local", "staging")

    @property
    def s3_enabled(self) -> bool:
        return bool(self.s3_bucket_name)

    @property
    def chat_provider(self) -> str | None:
        """The configured LLM provider, or None when no provider has a key."""
        if self.llm_provider:
            return self.llm_provider
        if self.gemini_api_key:
            return "gemini"
        if self.openai_api_key:
            return "openai"
        return None

    @property
    def async_db_url(self) -> str:
        return to_async_db_url(self.db_url)

    @property
    def is_sqlite(self) -> bool:
        return self.async_db_url.startswith("sqlite")

    @property
    def fingerprint(self) -> str:
        """What every host of a fleet must agree on (SECRET_KEY, ADMIN_TOKEN, REDIS_KEY_PREFIX),
        as a short digest that /ready and the start-up log show: equal digests, equal values.
        The secrets are long and random outside local/test, so 48 bits of a hash reveal nothing."""
        shared = json.dumps(["vidwiz-fleet", self.secret_key, self.admin_token, self.redis_key_prefix])
        return hashlib.sha256(shared.encode()).hexdigest()[:12]


def to_async_db_url(url: str) -> str:
    """Map the old system's sync URLs to the async drivers (aiosqlite, asyncpg)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise SettingsError("DB_URL: not a database URL (expected sqlite:///path or postgresql://host/db)")
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise SettingsError(f"DB_URL: unsupported database {scheme!r} (use sqlite:/// or postgresql://)")


def _read(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _read(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _read(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name}: must be positive, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _read(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}: expected a boolean (1/0, true/false), got {raw!r}")


@overload
def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str: ...
@overload
def _choice(env: Mapping[str, str], name: str, default: None, choices: tuple[str, ...]) -> str | None: ...
def _choice(env: Mapping[str, str], name: str, default: str | None, choices: tuple[str, ...]) -> str | None:
    raw = _read(env, name)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise SettingsError(f"{name}: must be one of {', '.join(choices)}, got {raw!r}")
    return raw.lower()


@overload
def _url(env: Mapping[str, str], name: str, default: str) -> str: ...
@overload
def _url(env: Mapping[str, str], name: str, default: None = None) -> str | None: ...
def _url(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = _read(env, name)
    if raw is None:
        return default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name}: expected an http(s) URL, got {raw!r}")
    return raw


def _db_url(env: Mapping[str, str]) -> str:
    raw = _read(env, "DB_URL") or "sqlite:///./vidwiz.db"
    async_url = to_async_db_url(raw)  # names an unsupported scheme itself
    try:
        url = make_url(async_url)
    except (ArgumentError, ValueError) as exc:
        # The URL itself is not echoed: it may hold a password.
        raise SettingsError(f"DB_URL: malformed database URL ({exc})") from None
    if url.get_backend_name() == "sqlite" and url.host:
        raise SettingsError("DB_URL: a SQLite URL has no host, use sqlite:///relative.db or sqlite:////absolute.db")
    return raw


def _redis_url(env: Mapping[str, str]) -> str | None:
    raw = _read(env, "REDIS_URL")
    scheme = urlsplit(raw).scheme if raw is not None else "redis"
    if scheme not in ("redis", "rediss", "unix"):
        # Only the scheme is echoed: the URL may hold a password.
        raise SettingsError(
            f"REDIS_URL: expected redis://, rediss:// or unix://, got {f'{scheme}://' if scheme else 'no scheme'}"
        )
    return raw


# Generated together the first time either is needed (only in `local`).
LOCAL_SECRETS = ("SECRET_KEY", "ADMIN_TOKEN")


def _local_secret(data_dir: Path, name: str) -> str:
    """A secret generated once and kept in the data directory (DATA_DIR/secrets.json, 0600).

    Every process of the tree reads the same file, so tokens survive restarts and are valid
    across web processes. A missing secret is added under a lock on the directory and the
    file is replaced whole, so concurrent first starts agree on one value and a reader never
    sees half a file.
    """
    path = data_dir / "secrets.json"
    values = _read_secrets(path, name)
    if name not in values:
        try:
            values = _add_secrets(path, name, LOCAL_SECRETS if name in LOCAL_SECRETS else (name,))
        except OSError as exc:
            raise SettingsError(f"DATA_DIR: cannot write {path} ({exc})") from None
    value = values[name]
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{name}: not a non-empty string in {path}; fix or delete the file")
    return value


def embedded_redis_password(data_dir: Path) -> str:
    """The password of the embedded Redis, which runs whenever REDIS_URL is unset (in every
    environment): the supervisor's own secret, not a setting; children get it in REDIS_URL."""
    return _local_secret(data_dir, "REDIS_PASSWORD")


def _read_secrets(path: Path, name: str) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{name}: could not read it from {path} ({exc!r}); fix or delete the file") from None
    if not isinstance(values, dict):
        raise SettingsError(f"{name}: could not read it from {path} (not a JSON object); fix or delete the file")
    return values


def _add_secrets(path: Path, name: str, names: tuple[str, ...]) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)  # released when closed
        values = _read_secrets(path, name)  # another process may have added them meanwhile
        missing = [n for n in names if n not in values]
        if not missing:
            return values
        values = {**values, **{n: secrets.token_urlsafe(48 if n == "SECRET_KEY" else 32) for n in missing}}
        draft = path.with_name(f".secrets.{os.getpid()}.{secrets.token_hex(4)}.json")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle)
        os.replace(draft, path)
        log.warning("generated %s in %s", ", ".join(missing), path)
        return values
    finally:
        os.close(directory)


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Build Settings from `environ` (default os.environ) over an optional .env file."""
    env: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)

    environment = _choice(env, "ENVIRONMENT", "local", ENVIRONMENTS)
    data_dir = Path(_read(env, "DATA_DIR") or "./vidwiz-data")
    secret_key = _read(env, "SECRET_KEY")
    admin_token = _read(env, "ADMIN_TOKEN")
    if environment == "local":
        secret_key = secret_key or _local_secret(data_dir, "SECRET_KEY")
        admin_token = admin_token or _local_secret(data_dir, "ADMIN_TOKEN")
    else:
        for name, value in (("SECRET_KEY", secret_key), ("ADMIN_TOKEN", admin_token)):
            if not value:
                raise SettingsError(f"{name}: required when ENVIRONMENT={environment}")
            if environment != "test" and len(value) < MIN_SECRET_LENGTH:
                # The value itself is never echoed.
                raise SettingsError(
                    f"{name}: must be at least {MIN_SECRET_LENGTH} characters when "
                    f"ENVIRONMENT={environment}, got {len(value)}"
                )
    limits = LOCAL_LIMITS if environment == "local" else STRICT_LIMITS

    origins = tuple(o.strip() for o in (_read(env, "CORS_ORIGINS") or "*").split(",") if o.strip())
    worker_dir = _read(env, "WORKER_DIR")
    return Settings(
        environment=environment,
        db_url=_db_url(env),
        redis_url=_redis_url(env),
        redis_key_prefix=_read(env, "REDIS_KEY_PREFIX") or "vidwiz:",
        redis_sentinels=_addresses(env, "REDIS_SENTINELS"),
        redis_sentinel_master=_read(env, "REDIS_SENTINEL_MASTER") or "mymaster",
        data_dir=data_dir,
        secret_key=secret_key,
        admin_token=admin_token,
        jwt_expiry_hours=_int(env, "JWT_EXPIRY_HOURS", 24, minimum=1),
        google_client_id=_read(env, "GOOGLE_CLIENT_ID"),
        google_certs_url=_url(env, "GOOGLE_CERTS_URL", Settings.google_certs_url),
        sqs_ai_note_queue_url=_url(env, "SQS_AI_NOTE_QUEUE_URL"),
        aws_access_key_id=_read(env, "AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_read(env, "AWS_SECRET_ACCESS_KEY"),
        aws_region=_read(env, "AWS_REGION") or "ap-south-1",
        aws_endpoint_url=_url(env, "AWS_ENDPOINT_URL"),
        s3_bucket_name=_read(env, "S3_BUCKET_NAME"),
        transcript_dir=Path(_read(env, "TRANSCRIPT_DIR") or data_dir / "transcripts"),
        llm_provider=_choice(env, "LLM_PROVIDER", None, LLM_PROVIDERS),
        gemini_api_key=_read(env, "GEMINI_API_KEY"),
        gemini_model_name=_read(env, "GEMINI_MODEL_NAME") or "gemini-2.5-flash",
        gemini_base_url=_url(env, "GEMINI_BASE_URL"),
        openai_api_key=_read(env, "OPENAI_API_KEY"),
        openai_base_url=_url(env, "OPENAI_BASE_URL"),
        openai_model_name=_read(env, "OPENAI_MODEL_NAME") or "gpt-4o-mini",
        wiz_user_daily_quota=_int(env, "WIZ_USER_DAILY_QUOTA", 20),
        wiz_guest_daily_quota=_int(env, "WIZ_GUEST_DAILY_QUOTA", 5),
        wiz_guest_address_daily_quota=_int(env, "WIZ_GUEST_ADDRESS_DAILY_QUOTA", 20),
        wiz_max_tokens=_int(env, "WIZ_MAX_TOKENS", 4096, minimum=16),
        host=_read(env, "HOST") or "127.0.0.1",
        port=_port(env),
        web_processes=_int(env, "WEB_PROCESSES", 1, minimum=1),
        actor_processes=_int(env, "ACTOR_PROCESSES", 1, minimum=0),
        builtin_workers=_int(env, "BUILTIN_WORKERS", 0),
        worker_fetcher=_choice(env, "WORKER_FETCHER", "youtube", WORKER_FETCHERS),
        worker_dir=Path(worker_dir) if worker_dir else None,
        builtin_summaries=_bool(env, "BUILTIN_SUMMARIES", True),
        cors_origins=origins or ("*",),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024),
        log_level=_log_level(env),
        actor_job_timeout=_float(env, "ACTOR_JOB_TIMEOUT", 30.0),
        task_recheck_seconds=_float(env, "TASK_RECHECK_SECONDS", 3.0),
        actor_job_logs=_bool(env, "ACTOR_JOB_LOGS", False),
        queue_dashboard=_bool(env, "QUEUE_DASHBOARD", False),
        supervisor_max_restarts=_int(env, "SUPERVISOR_MAX_RESTARTS", 5, minimum=1),
        supervisor_max_seconds=_float(env, "SUPERVISOR_MAX_SECONDS", 30.0),
        supervisor_shutdown_timeout=_float(env, "SUPERVISOR_SHUTDOWN_TIMEOUT", 10.0),
        migrate_on_start=_bool(env, "MIGRATE_ON_START", True),
        db_pool_size=_int(env, "DB_POOL_SIZE", 10, minimum=1),
        db_max_overflow=_int(env, "DB_MAX_OVERFLOW", 20),
        db_pooler=_choice(env, "DB_POOLER", "none", DB_POOLERS),
        login_account_limit=_limit(env, "LOGIN_ACCOUNT_LIMIT", limits),
        login_address_limit=_limit(env, "LOGIN_ADDRESS_LIMIT", limits),
        login_window_seconds=_int(env, "LOGIN_WINDOW_SECONDS", 900, minimum=1),
        login_max_delay_seconds=_float(env, "LOGIN_MAX_DELAY_SECONDS", 2.0),
        signup_address_limit=_limit(env, "SIGNUP_ADDRESS_LIMIT", limits),
        signup_window_seconds=_int(env, "SIGNUP_WINDOW_SECONDS", 3600, minimum=1),
        trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
        extra=env,
    )


def _limit(env: Mapping[str, str], name: str, defaults: Mapping[str, int], minimum: int = 1) -> int:
    """A throttle limit: the variable when set, else the environment's default."""
    return _int(env, name, defaults[name], minimum=minimum)


def _port(env: Mapping[str, str]) -> int:
    port = _int(env, "PORT", 5000)
    if not 0 <= port <= 65535:
        raise SettingsError(f"PORT: must be between 0 and 65535, got {port}")
    return port


def _networks(env: Mapping[str, str], name: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR networks (`10.0.0.1, 172.16.0.0/12`)."""
    networks = []
    for item in (_read(env, name) or "").split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise SettingsError(f"{name}: expected IP addresses or networks, got {item.strip()!r}") from None
    return tuple(networks)


def _addresses(env: Mapping[str, str], name: str) -> tuple[tuple[str, int], ...]:
    """Comma-separated host:port pairs (`10.0.0.1:26379, [::1]:26379`)."""
    addresses = []
    for item in (_read(env, name) or "").split(","):
        host, _, port = item.strip().rpartition(":")
        if not item.strip():
            continue
        if not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise SettingsError(f"{name}: expected host:port pairs separated by commas, got {item.strip()!r}")
        addresses.append((host.strip("[]"), int(port)))
    return tuple(addresses)


def _log_level(env: Mapping[str, str]) -> str:
    raw = (_read(env, "LOG_LEVEL") or "INFO").upper()
    if raw not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(f"LOG_LEVEL: must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return raw
