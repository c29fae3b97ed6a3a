"""A SIGTERM ends the command from its first line: as PID 1 (a container's), where the
kernel drops a signal with no handler, and elsewhere (systemd), where it must still die of
the signal, as a process without a handler would.

A PID namespace (``unshare --pid``, root) makes the command its PID 1 without a container.
Its config is a FIFO nobody writes: the command blocks reading it, before any service code,
and only a SIGTERM can end it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.deploy.helpers import unavailable

COMMAND = Path(sys.executable).with_name("autoscaler")  # the console script the image runs


def _blocked_on(tmp_path: Path, prefix: list[str]) -> subprocess.Popen[str]:
    assert COMMAND.exists(), f"{COMMAND}: the package is not installed in this venv"
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    return subprocess.Popen(
        [*prefix, str(COMMAND), "check", str(fifo)], stderr=subprocess.PIPE, text=True
    )


def _terminate(proc: subprocess.Popen[str], pid: Callable[[], int | None]) -> str:
    """SIGTERM to ``pid()`` until ``proc`` ends, 20 s at most; its stderr."""
    deadline = time.monotonic() + 20
    # A signal sent before the interpreter has run our first line is lost either way: keep
    # sending until the command is gone (with no handler, as PID 1, it never is: the FIFO
    # read blocks for ever).
    while proc.poll() is None and time.monotonic() < deadline:
        target = pid()
        if target is not None:
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    ignored = proc.poll() is None
    if ignored:
        proc.kill()
    _, stderr = proc.communicate()
    assert not ignored, "SIGTERM was ignored for 20 s"
    return stderr


def _child(pid: int) -> int | None:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else None


def test_sigterm_ends_the_command_as_pid_1_while_it_is_still_loading_its_config(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        unavailable("needs root and unshare (util-linux) for a PID namespace")
    proc = _blocked_on(tmp_path, ["unshare", "--pid", "--fork", "--kill-child"])
    stderr = _terminate(proc, lambda: _child(proc.pid))
    # unshare exits with its child's status: 128 + 15, the exit PID 1 falls back to
    assert proc.returncode == 128 + signal.SIGTERM, stderr


def test_sigterm_while_loading_the_config_ends_the_command_by_the_signal_elsewhere(
    tmp_path: Path,
) -> None:
    # systemd counts a death by SIGTERM as a clean stop; an exit status of 143 it would not
    proc = _blocked_on(tmp_path, [])
    stderr = _terminate(proc, lambda: proc.pid)
    assert proc.returncode == -signal.SIGTERM, stderr
