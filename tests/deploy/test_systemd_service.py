"""deploy/install-systemd.sh and deploy/autoscaler.service under a real systemd 252 (PID 1 of a
container): start completes on READY=1, the sandbox still reaches the Docker socket, pings
keep the watchdog fed, a frozen process is killed by the watchdog and restarted, and a stop
is clean."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy.helpers import REPO, ensure_base_image, need_docker, sh, unavailable

pytestmark = pytest.mark.integration

SYSTEMD_IMAGE = "autoscaler-test:systemd"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DROP_IN = """[Service]
WatchdogSec=6s
# The Docker socket is reachable inside the unit's sandbox (user autoscaler, group docker).
ExecStartPre=/opt/autoscaler/bin/python -c "import docker; \
docker.APIClient(base_url='unix:///var/run/docker.sock', version='auto').ping()"
"""


def wait_for(what: str, check: Callable[[], bool], *, limit: float) -> None:
    """Poll until ``check()``; fail after ``limit`` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def source_tar() -> bytes:
    """What install-systemd.sh needs from the checkout, without caches or the venv."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in (
            "pyproject.toml",
            "README.md",
            "config.toml",
            "autoscaler",
            "policies",
            "forecasting",
            "remediation",
            "deploy",
            "tests/deploy/systemd-smoke.toml",
        ):
            tar.add(
                REPO / name,
                arcname=f"src/{name}",
                filter=lambda ti: None if "__pycache__" in ti.name or "/ca/" in ti.name else ti,
            )
    return buf.getvalue()


class Box:
    """A container running systemd as PID 1."""

    def __init__(self, cid: str) -> None:
        self.cid = cid

    def run(self, *cmd: str, check: bool = True, timeout: float = 120) -> str:
        return sh("docker", "exec", self.cid, *cmd, check=check, timeout=timeout)

    def show(self, prop: str) -> str:
        return self.run("systemctl", "show", "-p", prop, "--value", "autoscaler")


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    need_docker()
    base = ensure_base_image()
    dockerfile = (
        f"FROM {base}\n"
        "RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
        "--no-install-recommends systemd systemd-sysv && apt-get clean "
        "&& rm -rf /var/lib/apt/lists/*\n"
        'STOPSIGNAL SIGRTMIN+3\nCMD ["/sbin/init"]\n'
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", SYSTEMD_IMAGE, "-"],
        input=dockerfile.encode(),
        capture_output=True,
        check=True,
        timeout=600,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    cid = sh(
        "docker", "run", "-d", "--name", f"astest-deploy-systemd-{os.getpid()}",
        "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
        "--security-opt", "apparmor=unconfined", "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        SYSTEMD_IMAGE,
    )  # fmt: skip
    b = Box(cid)
    try:
        deadline = time.monotonic() + 60
        while b.run("systemctl", "is-system-running", check=False) not in ("running", "degraded"):
            if time.monotonic() > deadline:
                unavailable("systemd did not boot in a container here (needs cgroups, SYS_ADMIN)")
            time.sleep(0.5)
        sh("docker", "cp", "-", f"{cid}:/", stdin=source_tar())
        env: list[str] = []
        if CA_BUNDLE.exists():
            sh("docker", "cp", str(CA_BUNDLE), f"{cid}:/tmp/ca.crt")
            env = ["env", "PIP_CERT=/tmp/ca.crt"]
        b.run("groupadd", "-g", str(os.stat("/var/run/docker.sock").st_gid), "docker")
        # root's umask as on a CIS-hardened host: the service must still run the venv
        install = "umask 027 && exec /src/deploy/install-systemd.sh --no-gpu --no-start"
        b.run(*env, "sh", "-c", install, timeout=900)
        b.run("install", "-m", "0640", "-g", "autoscaler",
              "/src/tests/deploy/systemd-smoke.toml", "/etc/autoscaler/config.toml")  # fmt: skip
        b.run("mkdir", "-p", "/etc/systemd/system/autoscaler.service.d")
        sh("docker", "exec", "-i", cid, "sh", "-c",
           "cat > /etc/systemd/system/autoscaler.service.d/50-test.conf",
           stdin=DROP_IN.encode())  # fmt: skip
        b.run("systemctl", "daemon-reload")
        yield b
    finally:
        sh("docker", "rm", "-f", cid, check=False)


def test_installed_unit_verifies_and_is_enabled(box: Box) -> None:
    box.run("systemd-analyze", "verify", "/etc/systemd/system/autoscaler.service")
    assert box.run("systemctl", "is-enabled", "autoscaler") == "enabled"


def test_service_lifecycle_under_systemd(box: Box) -> None:
    # `systemctl start` of a Type=notify unit returns only after READY=1 (or fails).
    box.run("systemctl", "start", "autoscaler")
    assert box.show("ActiveState") == "active"
    assert box.show("SubState") == "running"
    assert box.show("WatchdogUSec") == "6s"
    assert box.show("StatusText"), "STATUS= was sent with READY=1"
    assert box.run("python3", "-c", "import urllib.request as u; "
                   "print(u.urlopen('http://127.0.0.1:8080/healthz').status)") == "200"  # fmt: skip
    user = box.run("stat", "-c", "%U", f"/proc/{box.show('MainPID')}")
    assert user == "autoscaler"

    # WATCHDOG=1 arrives: systemd's watchdog timestamp moves on twice.
    seen: set[str] = set()

    def pinged_twice() -> bool:
        seen.add(box.show("WatchdogTimestampMonotonic"))
        return len(seen) >= 3

    wait_for("two watchdog pings", pinged_twice, limit=30)
    assert box.show("NRestarts") == "0"

    # A frozen process sends no pings: systemd kills it (SIGABRT) and restarts it.
    frozen = box.show("MainPID")
    box.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", "autoscaler")
    wait_for(
        "the watchdog restart",
        lambda: box.show("NRestarts") == "1" and box.show("ActiveState") == "active",
        limit=60,
    )
    assert box.show("MainPID") != frozen
    journal = box.run("journalctl", "-u", "autoscaler", "--no-pager")
    assert "Failed with result 'watchdog'" in journal
    assert "Fatal Python error" in journal, "PYTHONFAULTHANDLER printed the stacks"

    # A stop is clean: STOPPING=1, then exit 0 well within TimeoutStopSec.
    box.run("systemctl", "stop", "autoscaler")
    assert box.show("ActiveState") == "inactive"
    assert box.show("Result") == "success"
