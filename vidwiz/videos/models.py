from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, Text, false, func
from sqlalchemy.orm import Mapped, mapped_column

from vidwiz.db import NEVER_REUSE_IDS, Base, utcnow

MAX_SUMMARY_LENGTH = 10_000  # characters: the internal writer's cap, and the built-in writer's


class Video(Base):
    __tablename__ = "videos"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    title: Mapped[str | None] = mapped_column(Text)
    video_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    transcript_available: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    summary: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, default=utcnow, onupdate=utcnow, server_default=func.now()
    )
