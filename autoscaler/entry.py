"""The ``autoscaler`` command: a SIGTERM handler first, then the CLI.

In a container the command is PID 1, and the kernel drops a signal sent to PID 1 that has
no handler. Until the service installs its own (``live``), which happens after the imports,
the config load and the start-up reads, ``docker stop`` would be ignored and the task
killed when the grace period ends. This module imports nothing heavy and installs a
handler at once. A SIGTERM before the service's handler ends the process as it would
have without one: by the signal (what systemd counts as a clean stop); as PID 1, where the
signal cannot end it, by exiting with the status a shell gives for it, 128 + 15.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def _terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # ends any process but PID 1, which ignores it
    # PID 1: exit at once, as the signal would have ended any other process. Not by raising
    # SystemExit: the handler runs wherever the interpreter happens to be, and the code it
    # interrupts may catch the exception or replace it (an import in progress turned it
    # into "TypeError: expected a message argument", exit status 1).
    os._exit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    from autoscaler.cli import main as cli_main  # the slow part: imports and parsers

    try:
        code = cli_main()
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except BrokenPipeError:
        # The reader went away (``autoscaler eval | head``): end quietly, as a program that
        # keeps SIGPIPE's default action would, instead of a traceback. stdout goes to
        # /dev/null so the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
