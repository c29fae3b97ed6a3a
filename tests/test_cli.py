"""The command line: eval prints decisions as JSON; --help and --version work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_eval_prints_one_pass_of_decisions_as_json_and_writes_no_state(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    db = tmp_path / "state.db"
    cfg.write_text(f"""
[service]
state_path = "{db}"
[targets.api]
executor = "rec"
[executors.rec]
type = "recording"
[sources.fixed]
type = "static"
values = {{ api = {{ queue_length = 9.0 }} }}
[policies.queue]
type = "step"
signal = "queue_length"
above = 5
""")
    result = cli("eval", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    decisions = json.loads(result.stdout)
    assert [(d["policy"], d["kind"], d["params"]) for d in decisions] == [
        ("queue", "scale", {"replicas": 4, "from": 2})
    ]
    assert "queue_length 9 > 5" in decisions[0]["reason"]
    assert not db.exists()


def test_eval_with_an_invalid_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[targets.api]\nmin_replicas = 'two'\n")
    result = cli("eval", "--config", str(cfg))
    assert result.returncode == 2
    assert "targets.api.min_replicas: expected an integer" in result.stderr


def test_version_is_printed() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("autoscaler ")


@pytest.mark.parametrize("command", sorted(build_parser()._subparsers._group_actions[0].choices))  # type: ignore[union-attr]
def test_every_subcommand_has_help(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0
    assert "usage: autoscaler" in result.stdout and len(result.stdout.splitlines()) > 3
