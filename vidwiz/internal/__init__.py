"""The /v2/internal API: tasks for external workers, and direct video/note writers."""
