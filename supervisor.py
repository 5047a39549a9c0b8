"""Start the VidWiz process tree: `python supervisor.py` (logic in vidwiz/supervision/).

Exit status: 0 after a requested stop, 1 when the tree gave up (see the last log line),
2 for invalid configuration.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from config import SettingsError, load_settings
from vidwiz.logs import configure_logging
from vidwiz.supervision.tree import Supervisor


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"supervisor: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings, "supervisor")
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        # 3.11's default child watcher waits in one thread per child; pidfds keep it all on the loop.
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    return asyncio.run(Supervisor(settings, root=Path(__file__).resolve().parent).run())


if __name__ == "__main__":
    sys.exit(main())
