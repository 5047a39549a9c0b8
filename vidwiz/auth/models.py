from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, Text, func
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from vidwiz.db import NEVER_REUSE_IDS, Base, utcnow


class User(Base):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    name: Mapped[str | None] = mapped_column(Text)
    password_hash: Mapped[str | None] = mapped_column(Text)
    google_id: Mapped[str | None] = mapped_column(Text, unique=True)
    profile_image_url: Mapped[str | None] = mapped_column(Text)
    long_term_token: Mapped[str | None] = mapped_column(Text)
    profile_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow, server_default=func.now())

    @hybrid_property
    def ai_notes_enabled(self) -> bool:
        """The profile's `ai_notes_enabled` flag (false when absent); in a query, the same test
        on the JSON column (the reference's `->` cast to boolean)."""
        data = self.profile_data
        return bool(data.get("ai_notes_enabled", False)) if isinstance(data, dict) else False

    @ai_notes_enabled.inplace.expression
    @classmethod
    def _ai_notes_enabled_expression(cls) -> ColumnElement[bool]:
        # as_boolean() comes from the JSON type's comparator, which SQLAlchemy's annotations cannot see.
        flag: ColumnElement[bool] = cls.profile_data["ai_notes_enabled"].as_boolean()
        return flag
