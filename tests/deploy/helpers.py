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


def sh(*args: str, timeout: float = 120, check: bool = True, stdin: bytes | None = None) -> str:
    """Run a command; its stdout, stripped. A failure shows the command's output."""
    result = subprocess.run(args, capture_output=True, timeout=timeout, input=stdin, check=False)
    out, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} -> {result.returncode}\n{out}\n{err}")
    return out.strip()


def need_docker() -> None:
    """A dockerd in swarm mode on the default socket, started by the shared harness when none
    answers (a fresh machine runs no daemon); fail (CI) / skip when it cannot be had."""
    from tests.harness.dockerd import HarnessError, ensure_swarm

    try:
        ensure_swarm()
    except HarnessError as exc:
        unavailable(f"no dockerd on /var/run/docker.sock and none could be started: {exc}")


def ensure_base_image(image: str = "autoscaler-base:bookworm") -> str:
    """The debootstrap base image, built when missing (needs root and debootstrap)."""
    probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if probe.returncode == 0:
        return image
    if os.geteuid() != 0:
        unavailable(f"{image} is missing and building it needs root")
    need_tool("debootstrap", apt_package="debootstrap")
    sh(str(DEPLOY / "build-base-image.sh"), image, timeout=900)
    return image
