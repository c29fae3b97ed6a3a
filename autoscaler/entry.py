"""The ``autoscaler`` command: a SIGTERM handler first, then the CLI.

In a container the command is PID 1, and the kernel drops a signal sent to PID 1 that has
no handler. Until the service installs its own (``live``), which happens after the imports,
the config load and the start-up reads, ``docker stop`` would be ignored and the task
killed when the grace period ends. This module imports nothing heavy and installs a
handler that exits with the status a SIGTERM gives (128 + 15); ``finally`` blocks and
context managers run on the way out.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    from autoscaler.cli import main as cli_main  # the slow part: imports and parsers

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
