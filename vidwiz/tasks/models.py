from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import DDL, JSON, DateTime, Enum, Index, Integer, Text, event, func
from sqlalchemy.orm import Mapped, mapped_column

from vidwiz.db import NEVER_REUSE_IDS, Base, utcnow


class TaskStatus(enum.Enum):
    # The database stores the member NAMES (docs/api.md §6, D15); the API shows the values.
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_task_type_status", "task_type", "status"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_type: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[TaskStatus] = mapped_column(
        Enum(TaskStatus, name="taskstatus"), nullable=False, default=TaskStatus.PENDING, server_default="PENDING"
    )
    task_details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    worker_details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    retry_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, nullable=False, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


# At most one pending/in-progress task per (video, type) (docs/api.md D7), enforced by the
# database so concurrent note creations cannot race past each other.
ACTIVE_TASK_INDEX = {
    "postgresql": (
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_tasks_active_video ON tasks "
        "(task_type, (task_details->>'video_id')) WHERE status IN ('PENDING', 'IN_PROGRESS')"
    ),
    "sqlite": (
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_tasks_active_video ON tasks "
        "(task_type, json_extract(task_details, '$.video_id')) WHERE status IN ('PENDING', 'IN_PROGRESS')"
    ),
}
for _dialect, _sql in ACTIVE_TASK_INDEX.items():
    # DDL.__init__ is unannotated in SQLAlchemy.
    event.listen(Task.__table__, "after_create", DDL(_sql).execute_if(dialect=_dialect))  # type: ignore[no-untyped-call]
