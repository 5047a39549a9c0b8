from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, Text, false, func
from sqlalchemy.orm import Mapped, mapped_column

from vidwiz.db import NEVER_REUSE_IDS, Base, utcnow


class Note(Base):
    __tablename__ = "notes"
    __table_args__ = (
        Index("ix_notes_user_id_video_id", "user_id", "video_id"),
        Index("ix_notes_video_id", "video_id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[str] = mapped_column(Text, ForeignKey("videos.video_id"), nullable=False)
    timestamp: Mapped[str] = mapped_column(Text, nullable=False)
    text: Mapped[str | None] = mapped_column(Text)
    generated_by_ai: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)


AI_NOTE = "ai_note"  # the one kind of outbox row: an AI-note request


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for (or leased to) a delivery
    SENT = "sent"  # accepted by SQS or written by the built-in AI-note writer
    FAILED = "failed"  # a request its delivery can never serve; the reason is in last_error


class OutboxMessage(Base):
    """An AI-note request written in the note's transaction; the relay actor delivers it.

    `body` is the exact SQS message body of docs/api.md §3.3. A row stays `pending` until SQS
    (or the built-in AI-note actor) has accepted it, so nothing is lost across crashes.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False, default=AI_NOTE, server_default=AI_NOTE)
    note_id: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(
        Text, nullable=False, default=OutboxStatus.PENDING, server_default=OutboxStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, default=utcnow, server_default=func.now()
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow, server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
