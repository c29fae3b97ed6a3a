"""The command line: eval prints decisions as JSON; --help and --version work; run refuses
to start on a state file or port it cannot use, naming the key."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoscaler.cli import build_parser, replacing, status_line
from autoscaler.engine import TickReport
from policies.types import Decision

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
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


def test_eval_logs_a_failing_source_as_run_does_with_its_fields(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("""
[targets.api]
executor = "rec"
[executors.rec]
type = "recording"
[sources.prom]
type = "prometheus"
url = "http://127.0.0.1:9"
retries = 0
[sources.prom.queries]
queue_length = "sum(queue)"
[policies.queue]
type = "step"
signal = "queue_length"
above = 5
""")
    result = cli("eval", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # a bare line fails here
    failed = [x for x in lines if x.get("msg") == "source failed"]
    assert failed and failed[0]["source"] == "prom" and "127.0.0.1:9" in failed[0]["error"]
    assert "prom" in lines[-1]["source_errors"]
    assert json.loads(result.stdout)[0]["kind"] == "hold"


def test_check_hints_at_backtest_for_an_overlay() -> None:
    result = cli("check", "examples/backtest.toml")
    assert result.returncode == 2
    assert "check it with --backtest" in result.stderr
    assert cli("check", "--backtest", "examples/backtest.toml").returncode == 0


def test_check_backtest_judges_an_overlay_at_the_backtests_interval(tmp_path: Path) -> None:
    # a day ahead is 5,760 ticks of 15 s (over the limit) but 1,440 of 60 s
    cfg = tmp_path / "overlay.toml"
    cfg.write_text('[forecasting]\nhorizon = "1d"\n')
    result = cli("check", "--backtest", str(cfg))
    assert result.returncode == 2 and "forecasting.horizon: 86400 s is 5760 ticks" in result.stderr
    result = cli("check", "--backtest", str(cfg), "--interval", "60s")
    assert result.returncode == 0, result.stderr
    # a whole config ticks at its own service.interval: --interval there would be ignored
    result = cli("check", "config.toml", "--interval", "60s")
    assert result.returncode == 2 and "--interval is the backtest's" in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """``autoscaler eval | head``: the closed pipe ends the command as SIGPIPE would (141),
    without a BrokenPipeError traceback on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: deterministic
    try:
        result = subprocess.run(
            [sys.executable, "-m", "autoscaler", "check", "config.toml"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 128 + signal.SIGPIPE
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr


def test_a_file_rewritten_in_full_or_not_at_all(tmp_path: Path) -> None:
    """``replacing``: an old recording stays whole when writing its successor fails part-way
    (a full disk), and no temporary file is left behind."""
    old = tmp_path / "rec.csv"
    old.write_text("timestamp,target,signal,value\n1,api,q,1\n")
    with pytest.raises(OSError), replacing(old) as f:
        f.write("timestamp,target,signal,value\n")
        raise OSError(28, "No space left on device")
    assert old.read_text() == "timestamp,target,signal,value\n1,api,q,1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.csv"]
    with replacing(old) as f:
        f.write("new\n")
    assert old.read_text() == "new\n" and len(list(tmp_path.iterdir())) == 1
    umask = os.umask(0)
    os.umask(umask)
    assert old.stat().st_mode & 0o777 == 0o666 & ~umask


def test_version_is_printed() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("autoscaler ")


@pytest.mark.parametrize("command", sorted(build_parser()._subparsers._group_actions[0].choices))  # type: ignore[union-attr]
def test_every_subcommand_has_help(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0
    assert "usage: autoscaler" in result.stdout and len(result.stdout.splitlines()) > 3


def run_config(state_path: Path, http: str = "enabled = false") -> str:
    return f"""
[service]
interval = "1s"
state_path = "{state_path}"
dry_run = true
[http]
{http}
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
"""


def not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    path.write_bytes(b"not sqlite " * 1000)
    return path


def under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "plain").write_text("")
    return tmp_path / "plain" / "state.db"


def a_directory(tmp_path: Path) -> Path:
    return tmp_path


def another_schema(tmp_path: Path) -> Path:
    """An SQLite file whose journal has a column more (another program's, or a newer
    version's): the service ran, and every commit failed with "NOT NULL constraint failed",
    so no cooldown or journal row was ever saved."""
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE journal (id INTEGER PRIMARY KEY, at REAL NOT NULL, policy TEXT NOT"
            " NULL, target TEXT NOT NULL, kind TEXT NOT NULL, params TEXT NOT NULL, reason"
            " TEXT NOT NULL, inputs TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL,"
            " executor TEXT NOT NULL, tenant TEXT NOT NULL)"
        )
        db.commit()
    return path


def damaged(tmp_path: Path) -> Path:
    """An SQLite file whose state table's page is overwritten (a disk fault, a copy cut
    short): it opens, and reading the state failed in the first pass's set-up with a
    traceback and exit 1, and again on every restart systemd made."""
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.executemany("INSERT INTO state VALUES (?, ?)", [(f"k{i}", "1" * 100) for i in range(99)])
        db.commit()
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'state'").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xff" * 100)
    return path


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (not_a_database, "file is not a database"),
        (under_a_file, "File exists"),
        (a_directory, "unable to open database file"),
        (another_schema, "its journal table has the columns (id, at, "),
        (damaged, "database disk image is malformed"),
    ],
)
def test_run_with_a_state_path_it_cannot_open_exits_2_naming_the_key(
    tmp_path: Path, make: Callable[[Path], Path], why: str
) -> None:
    state = make(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(run_config(state))
    result = cli("run", "--config", str(cfg), timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"service.state_path: cannot open '{state}': ")
    assert why in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_run_with_its_http_port_in_use_exits_2_naming_the_key(
    tmp_path: Path, busy_port: int
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        run_config(tmp_path / "state.db", f'enabled = true\nhost = "127.0.0.1"\nport = {busy_port}')
    )
    result = cli("run", "--config", str(cfg), timeout=60)
    assert result.returncode == 2
    assert (
        f"http.port: cannot listen on 127.0.0.1:{busy_port}: address already in use"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_the_status_line_shown_in_the_readme_is_the_real_one() -> None:
    decision = Decision(policy="p", target="api", at=0.0, action=None, reason="hold")
    report = TickReport(
        now=0.0, duration=0.012, decisions=[decision] * 3, outcomes=[], source_errors={}, holds=3
    )
    line = status_line(report)
    assert line == "last pass 12 ms: 3 decisions, 0 actions; failing sources: none"
    assert f'Status: "{line}"' in (ROOT / "README.md").read_text()
