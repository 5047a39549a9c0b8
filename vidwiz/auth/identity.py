"""Who a request or a job acts for: a user, or a guest known only by its session id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Viewer:
    user_id: int | None = None
    guest_session_id: str | None = None

    @property
    def is_guest(self) -> bool:
        return self.user_id is None

    @property
    def key(self) -> str:
        """A stable per-viewer key (quota counters, logs)."""
        return f"user:{self.user_id}" if self.user_id is not None else f"guest:{self.guest_session_id}"

    @property
    def log_label(self) -> str:
        """Who, for logs: the guest id is a bearer secret, so only a digest of it is shown."""
        if self.user_id is not None:
            return f"user:{self.user_id}"
        assert self.guest_session_id is not None, "a viewer is a user or a guest"
        return "guest:" + hashlib.sha256(self.guest_session_id.encode()).hexdigest()[:12]
