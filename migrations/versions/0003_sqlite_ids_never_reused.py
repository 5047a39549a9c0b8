"""SQLite never reuses ids: AUTOINCREMENT on every table with a public id.

Without it SQLite hands the highest deleted id to the next row, so a late write meant for a
deleted row (an AI-note Lambda's `PATCH /v2/internal/notes/{id}`) lands on another user's
new one. SQLite cannot alter a primary key: each table is recreated (alembic batch mode)
with its data, indexes and foreign keys. PostgreSQL sequences never go back: a no-op there.

Revision ID: 0003_sqlite_ids_never_reused
Revises: 0002_rewrite_additions
Create Date: 2026-11-30
"""

import warnings

from alembic import op
from sqlalchemy.exc import SAWarning

from vidwiz.tasks.models import ACTIVE_TASK_INDEX

revision = "0003_sqlite_ids_never_reused"
down_revision = "0002_rewrite_additions"
branch_labels = None
depends_on = None

TABLES = ("users", "videos", "notes", "conversations", "messages", "tasks", "outbox")

# Ids deleted before this migration are gone from the tables, but the outbox still names
# the notes whose AI notes were requested: the new sequence starts above those too.
NOTES_ABOVE_REQUESTED = """
    UPDATE sqlite_sequence SET seq = (SELECT max(note_id) FROM outbox)
    WHERE name = 'notes' AND seq < (SELECT max(note_id) FROM outbox)
"""
NOTES_SEQUENCE_FROM_OUTBOX = """
    INSERT INTO sqlite_sequence (name, seq) SELECT 'notes', max(note_id) FROM outbox
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'notes') HAVING max(note_id) IS NOT NULL
"""


def _recreate(autoincrement: bool) -> None:
    # alembic's env.py connects without PRAGMA foreign_keys, so dropping a referenced table
    # while its copy takes its place leaves the referencing rows alone.
    with warnings.catch_warnings():
        # Reflection skips the expression index of 0002 (and says so): it is created again below.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index", SAWarning)
        for table in TABLES:
            kwargs = {"sqlite_autoincrement": True} if autoincrement else {}
            with op.batch_alter_table(table, recreate="always", table_kwargs=kwargs):
                pass
    op.execute(ACTIVE_TASK_INDEX["sqlite"])


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _recreate(autoincrement=True)
    op.execute(NOTES_ABOVE_REQUESTED)
    op.execute(NOTES_SEQUENCE_FROM_OUTBOX)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _recreate(autoincrement=False)
