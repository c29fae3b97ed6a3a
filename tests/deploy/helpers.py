"""Shared helpers for the deployment tests: finding (or installing) the tools they drive."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def unavailable(reason: str) -> None:
    """Fail under CI=true (the environment promised the tool), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def need_tool(name: str, *, apt_package: str) -> str:
    """The path of ``name``, installing ``apt_package`` first when missing and we are root."""
    found = shutil.which(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", apt_package],
            env=env,
            capture_output=True,
            check=False,
        )
        found = shutil.which(name)
    if found is None:
        unavailable(f"{name} not found (apt-get install {apt_package})")
    assert found is not None
    return found
