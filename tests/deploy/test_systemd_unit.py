"""deploy/autoscaler.service: systemd accepts it, and it keeps what the service relies on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import DEPLOY, REPO, need_tool

UNIT = DEPLOY / "autoscaler.service"


def directives() -> list[tuple[str, str, str]]:
    """(section, key, value) for every line, repeated keys kept (DeviceAllow=...)."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(key: str) -> list[str]:
    return [v for _, k, v in directives() if k == key]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = need_tool("systemd-analyze", apt_package="systemd")
    # verify also checks that ExecStart exists: point it at a stand-in for the venv.
    stub = tmp_path / "autoscaler"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    text = UNIT.read_text().replace("/opt/autoscaler/bin/autoscaler", str(stub))
    assert str(stub) in text
    (tmp_path / "autoscaler.service").write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "autoscaler.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "autoscaler.service" in line
        # systemd 252's @system-service set names syscalls this host's libseccomp predates.
        and "Failed to parse system call" not in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems == []


def test_unit_is_a_notify_service_with_a_watchdog() -> None:
    assert values("Type") == ["notify"]
    assert values("NotifyAccess") == ["main"]
    assert values("WatchdogSec") == ["60"]
    assert values("Restart") == ["on-failure"]


def test_unit_runs_the_venv_entry_point_with_the_etc_config() -> None:
    (exec_start,) = values("ExecStart")
    assert exec_start == "/opt/autoscaler/bin/autoscaler run --config /etc/autoscaler/config.toml"
    installer = (DEPLOY / "install-systemd.sh").read_text()
    assert "PREFIX=${PREFIX:-/opt/autoscaler}" in installer


def test_sandbox_is_strict_but_leaves_the_state_dir_docker_and_gpus_reachable() -> None:
    assert values("ProtectSystem") == ["strict"]
    assert values("StateDirectory") == ["autoscaler"]
    assert "/var/lib/autoscaler" in values("ReadWritePaths")
    assert values("NoNewPrivileges") == ["yes"]
    assert values("PrivateTmp") == ["yes"]
    assert values("SupplementaryGroups") == ["docker"]
    # PrivateDevices=yes would hide /dev/nvidia*; NVML needs nvidiactl and nvidiaN (major 195).
    assert values("PrivateDevices") == []
    assert "char-nvidia-frontend rw" in values("DeviceAllow")
    families = " ".join(values("RestrictAddressFamilies")).split()
    assert "AF_UNIX" in families  # the Docker socket and NOTIFY_SOCKET


def test_stop_timeout_outlasts_the_service_shutdown_timeout() -> None:
    (stop,) = values("TimeoutStopSec")
    reference = (REPO / "config.toml").read_text()
    assert 'shutdown_timeout = "10s"' in reference
    assert int(stop) > 10


@pytest.mark.parametrize("script", ["install-systemd.sh", "build-base-image.sh", "build-image.sh"])
def test_deploy_scripts_parse_and_are_executable(script: str) -> None:
    path = DEPLOY / script
    assert path.stat().st_mode & 0o111
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_installers_help_is_its_usage_comment_and_nothing_else() -> None:
    # --help returns before the root check: it installs nothing.
    result = subprocess.run(
        ["sh", str(DEPLOY / "install-systemd.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("#") for line in lines), lines
    assert lines[0].startswith("# Install autoscaler as a systemd service")
    assert "pip's own settings" in lines[-1]


@pytest.mark.parametrize("script", ["build-image.sh", "build-base-image.sh"])
def test_the_image_builders_take_help_and_refuse_an_option_as_the_image_name(
    script: str,
) -> None:
    # before these lines, --help became the image name and a build started
    def run(arg: str) -> subprocess.CompletedProcess[str]:
        cmd = ["sh", str(DEPLOY / script), arg]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    result = run("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("#") for line in lines), lines
    assert any("Usage" in line for line in lines)
    result = run("--force")
    assert result.returncode == 2 and "unknown option: --force" in result.stderr
