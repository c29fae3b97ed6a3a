"""The harness sweeps only what a dead test run left: never a live run's objects."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.harness.dockerd import orphaned


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_the_objects_of_a_run_that_is_gone_are_orphans() -> None:
    dead, live = _dead_pid(), os.getpid()
    names = [
        f"astest-e2e-{dead}_autoscaler",
        f"astest-e2e-{dead}-web",
        f"astest-deploy-hc-{dead}",
        f"astest-remediation-{dead}-0f3a9c1d",
        f"astest-e2e-{live}_autoscaler",
        f"astest-remediation-{live}-0f3a9c1d",
        "astest-remediation-does-not-exist",
        "api",
        f"someone-else-{dead}",
    ]
    assert orphaned(names) == names[:4]
