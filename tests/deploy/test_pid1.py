"""The command as PID 1, as in a container: the kernel drops a signal sent to PID 1 that
has no handler, so a stop must work from the start, not only once the service runs.

A PID namespace (``unshare --pid``, root) makes the command its PID 1 without a container.
Its config is a FIFO nobody writes: the command blocks reading it, before any service code,
and only a handled SIGTERM can end it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.deploy.helpers import unavailable


def _child(pid: int) -> int | None:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else None


def test_sigterm_ends_the_command_as_pid_1_while_it_is_still_loading_its_config(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        unavailable("needs root and unshare (util-linux) for a PID namespace")
    command = Path(sys.executable).with_name("autoscaler")  # the console script the image runs
    assert command.exists(), f"{command}: the package is not installed in this venv"
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", str(command), "check", str(fifo)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    # Signals sent before the interpreter has run our first line are lost either way: keep
    # sending until the command is gone (with no handler it never is: the FIFO read blocks
    # for ever).
    while proc.poll() is None and time.monotonic() < deadline:
        child = _child(proc.pid)
        if child is not None:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    ignored = proc.poll() is None
    if ignored:
        proc.kill()
    _, stderr = proc.communicate()
    assert not ignored, "SIGTERM to PID 1 was ignored for 20 s"
    assert proc.returncode == 128 + signal.SIGTERM, stderr
