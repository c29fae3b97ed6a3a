"""`autoscaler run` speaks the systemd notify protocol on a real unix datagram socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_sends_ready_status_and_stopping(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[service]
interval = "0.2s"
state_path = "{tmp_path / "state.db"}"
[http]
enabled = false
[targets.api]
executor = "rec"
[executors.rec]
type = "recording"
[sources.fixed]
type = "static"
values = {{ api = {{ queue_length = 1.0 }} }}
[policies.queue]
type = "step"
signal = "queue_length"
above = 5
""")
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autoscaler", "run", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        messages: list[str] = []
        deadline = time.monotonic() + 20
        while not any("WATCHDOG=1" in m for m in messages) and time.monotonic() < deadline:
            messages.append(sock.recv(4096).decode())
        proc.send_signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in messages) and time.monotonic() < deadline:
            messages.append(sock.recv(4096).decode())
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=last pass" in ready and "failing sources: none" in ready
    assert messages.index(ready) < next(i for i, m in enumerate(messages) if "WATCHDOG=1" in m)
    assert "STOPPING=1" in messages[-1]
