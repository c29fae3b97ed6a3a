"""The service as a real subprocess on a real SQLite file: SIGKILL, restart, no repeat."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def journal(db: Path, status: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        try:
            row = con.execute("SELECT count(*) FROM journal WHERE status = ?", (status,)).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "autoscaler", "run", "--config", str(cfg)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=f,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def test_killed_service_does_not_repeat_an_action_in_cooldown(tmp_path: Path) -> None:
    actions = tmp_path / "actions.jsonl"
    db = tmp_path / "state.db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[service]
interval = "0.2s"
state_path = "{db}"
log_format = "text"
[http]
port = {free_port()}
[bus]
cooldown = "1h"
[targets.api]
executor = "rec"
[executors.rec]
type = "recording"
path = "{actions}"
[sources.fixed]
type = "static"
values = {{ api = {{ queue_length = 10.0 }} }}
[policies.queue]
type = "step"
signal = "queue_length"
above = 5
""")
    log = tmp_path / "service.log"
    first = start(cfg, log)
    try:
        wait_for(
            lambda: actions.exists() and actions.read_text().count("\n") >= 1,
            what="the first action",
        )
        wait_for(lambda: journal(db, "done") == 1, what="the journal entry")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    before = journal(db, "skipped-cooldown")
    second = start(cfg, log)
    try:
        wait_for(
            lambda: journal(db, "skipped-cooldown") >= before + 3, what="passes after the restart"
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    assert second.returncode == 0, log.read_text()
    lines = [json.loads(x) for x in actions.read_text().splitlines()]
    assert lines == [{"kind": "scale", "target": "api", "params": {"replicas": 4, "from": 2}}]
    assert journal(db, "done") == 1
