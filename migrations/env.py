"""Alembic environment: async engine from DB_URL (old sync forms accepted), schema from vidwiz.models."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from config import load_settings
from vidwiz.db import MIGRATION_LOCK_KEY, postgres_connect_args
from vidwiz.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    # Tests and tools may pass a URL explicitly; otherwise the service's settings decide.
    return config.attributes.get("url") or load_settings().async_db_url


def _engine() -> AsyncEngine:
    url = config.attributes.get("url")
    if url:
        return create_async_engine(url)
    settings = load_settings()
    connect_args = {} if settings.is_sqlite else postgres_connect_args(settings)
    return create_async_engine(settings.async_db_url, connect_args=connect_args)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    if connection.dialect.name == "postgresql":
        # Held until the migration transaction ends (commit or rollback), whatever happens.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        await connection.run_sync(_run)
        return
    engine = _engine()
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
