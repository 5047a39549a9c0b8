"""Every table, imported in one place for alembic and the test fixtures."""

from vidwiz.auth.models import User
from vidwiz.conversations.models import Conversation, Message
from vidwiz.db import Base
from vidwiz.notes.models import Note, OutboxMessage
from vidwiz.tasks.models import Task, TaskStatus
from vidwiz.videos.models import Video

__all__ = ["Base", "Conversation", "Message", "Note", "OutboxMessage", "Task", "TaskStatus", "User", "Video"]
