"""deploy/alerts.yml is valid Prometheus 2.42 and fires when it should (promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import DEPLOY, need_tool


@pytest.fixture(scope="module")
def promtool() -> str:
    return need_tool("promtool", apt_package="prometheus")


def run(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_catch_a_broken_stuck_loop_threshold(promtool: str, tmp_path: Path) -> None:
    # The rule tests are only worth something if a wrong rule fails them.
    shutil.copy(DEPLOY / "alerts_test.yml", tmp_path)
    rules = (DEPLOY / "alerts.yml").read_text()
    broken = rules.replace(
        "time() - autoscaler_last_tick_timestamp_seconds > 120",
        "time() - autoscaler_last_tick_timestamp_seconds > 3600",
    )
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "AutoscalerLoopStuck" in result.stdout + result.stderr


def test_every_alert_names_a_severity_and_a_summary() -> None:
    text = (DEPLOY / "alerts.yml").read_text()
    alerts = text.count("- alert: ")
    assert alerts >= 8
    assert text.count("severity: ") == alerts
    assert text.count("summary: ") == alerts
