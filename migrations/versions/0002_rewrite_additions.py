"""The rewrite's additions: the outbox table, lookup indexes, one active task per (video, type).

Revision ID: 0002_rewrite_additions
Revises: 0001_reference_schema
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from vidwiz.tasks.models import ACTIVE_TASK_INDEX

revision = "0002_rewrite_additions"
down_revision = "0001_reference_schema"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_notes_user_id_video_id", "notes", ["user_id", "video_id"]),
    ("ix_notes_video_id", "notes", ["video_id"]),
    ("ix_conversations_user_id", "conversations", ["user_id"]),
    ("ix_conversations_guest_session_id", "conversations", ["guest_session_id"]),
    ("ix_messages_conversation_id_created_at", "messages", ["conversation_id", "created_at"]),
    ("ix_tasks_task_type_status", "tasks", ["task_type", "status"]),
)

# An adopted database may hold duplicate active tasks (the old system raced): keep the
# oldest of each (type, video) and cancel the rest, so the unique index can be built.
DEDUPE_ACTIVE_TASKS = {
    "postgresql": """
        UPDATE tasks SET status = 'CANCELLED' WHERE id IN (
            SELECT id FROM (
                SELECT id, row_number() OVER (
                    PARTITION BY task_type, task_details->>'video_id' ORDER BY id) AS rn
                FROM tasks WHERE status IN ('PENDING', 'IN_PROGRESS')) ranked
            WHERE rn > 1)
    """,
    "sqlite": """
        UPDATE tasks SET status = 'CANCELLED' WHERE status IN ('PENDING', 'IN_PROGRESS') AND id NOT IN (
            SELECT min(id) FROM tasks WHERE status IN ('PENDING', 'IN_PROGRESS')
            GROUP BY task_type, json_extract(task_details, '$.video_id'))
    """,
}


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False, server_default="ai_note"),
        sa.Column("note_id", sa.Integer()),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("created_at", sa.DateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime()),
    )
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"])
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    dialect = op.get_bind().dialect.name
    op.execute(DEDUPE_ACTIVE_TASKS[dialect])
    op.execute(ACTIVE_TASK_INDEX[dialect])


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS uq_tasks_active_video")
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_index("ix_outbox_status_next_attempt_at", table_name="outbox")
    op.drop_table("outbox")
