"""The old system's schema, exactly (docs/api.md §6).

A database created by the old system already has this: adopt it with
`alembic stamp 0001_reference_schema`, then `alembic upgrade head`.

Revision ID: 0001_reference_schema
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_reference_schema"
down_revision = None
branch_labels = None
depends_on = None

TASK_STATUS = sa.Enum("PENDING", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", name="taskstatus")


def _timestamps(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.DateTime(), nullable=False, server_default=sa.func.now()) for name in names]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.Text(), nullable=False, unique=True),
        sa.Column("name", sa.Text()),
        sa.Column("password_hash", sa.Text()),
        sa.Column("google_id", sa.Text(), unique=True),
        sa.Column("profile_image_url", sa.Text()),
        sa.Column("long_term_token", sa.Text()),
        sa.Column("profile_data", sa.JSON()),
        *_timestamps("created_at"),
    )
    op.create_table(
        "videos",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("video_id", sa.Text(), nullable=False, unique=True),
        sa.Column("title", sa.Text()),
        sa.Column("video_metadata", sa.JSON()),
        sa.Column("transcript_available", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("summary", sa.Text()),
        *_timestamps("created_at", "updated_at"),
    )
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("video_id", sa.Text(), sa.ForeignKey("videos.video_id"), nullable=False),
        sa.Column("timestamp", sa.Text(), nullable=False),
        sa.Column("text", sa.Text()),
        sa.Column("generated_by_ai", sa.Boolean(), nullable=False, server_default=sa.false()),
        *_timestamps("created_at", "updated_at"),
        sa.Column("user_id", sa.Integer(), nullable=False),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("video_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Integer()),
        sa.Column("guest_session_id", sa.Text()),
        *_timestamps("created_at", "updated_at"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("conversation_id", sa.Integer(), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON()),
        *_timestamps("created_at"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column("status", TASK_STATUS, nullable=False, server_default="PENDING"),
        sa.Column("task_details", sa.JSON()),
        sa.Column("worker_details", sa.JSON()),
        sa.Column("retry_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("completed_at", sa.DateTime()),
        *_timestamps("created_at", "updated_at"),
    )


def downgrade() -> None:
    for table in ("tasks", "messages", "conversations", "notes", "videos", "users"):
        op.drop_table(table)
    TASK_STATUS.drop(op.get_bind(), checkfirst=True)
