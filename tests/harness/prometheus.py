"""A real Prometheus 2.42 server for tests.

Installs the Debian ``prometheus`` package when the binary is missing (as root, with
``apt-get``), starts it on a free loopback port with a temporary config and data directory
and a short scrape interval, and waits on ``/-/ready`` (polled, never a fixed sleep).
``unavailable(reason)`` fails the test when ``CI=true`` and skips it otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.harness.process import stop_process

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"


class ServerUnavailable(RuntimeError):
    """The server could not be installed or started."""


def unavailable(reason: str) -> NoReturn:
    """Fail in CI, skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required server unavailable in CI: {reason}")
    pytest.skip(reason)


def ensure_binary(binary: str, package: str) -> str:
    """Path of ``binary``, installing the Debian ``package`` first when it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServerUnavailable(f"{binary} is missing and cannot be installed (not root/Debian)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if r.returncode != 0:
            raise ServerUnavailable(f"{' '.join(cmd)} failed: {r.stderr[-500:]}")
    found = shutil.which(binary)
    if not found:
        raise ServerUnavailable(f"{package} installed but {binary} is not on PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``condition`` until it is true; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class ManagedProcess:
    """A server process with a temporary directory, stopped and cleaned up reliably."""

    name = "server"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"as-{self.name}-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = self.dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, *, timeout: float = 30.0) -> None:
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            return http_ok(f"{self.url}/-/ready")

        try:
            wait_for(ready, timeout=timeout, what=f"{self.name} /-/ready")
        except TimeoutError as exc:
            self.stop()
            raise ServerUnavailable(f"{exc}: {self.log_tail()}") from exc

    def log_tail(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, timeout=15)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrometheusServer(ManagedProcess):
    """A real Prometheus scraping ``targets`` every ``scrape_interval``."""

    name = "prometheus"

    def __init__(
        self,
        *,
        targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        rules: str = "",
        alertmanager: str = "",
        evaluation_interval: str = "1s",
    ) -> None:
        super().__init__()
        self.binary = ensure_binary(PROMETHEUS, "prometheus")
        self.data = self.dir / "data"
        self.data.mkdir()
        cfg: dict[str, Any] = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": evaluation_interval,
            },
            "scrape_configs": [
                {"job_name": "exporter", "static_configs": [{"targets": list(targets)}]}
            ],
        }
        if rules:
            (self.dir / "rules.yml").write_text(rules)
            cfg["rule_files"] = [str(self.dir / "rules.yml")]
        if alertmanager:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        # JSON is valid YAML: no YAML library needed.
        (self.dir / "prometheus.yml").write_text(json.dumps(cfg, indent=1))

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.data}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=30d",
        ]

    def backfill(self, openmetrics: str) -> None:
        """Write historical samples (OpenMetrics text, ending in ``# EOF``) as TSDB blocks
        with ``promtool``; call before ``start``."""
        promtool = ensure_binary(PROMTOOL, "prometheus")
        src = self.dir / "backfill.om"
        src.write_text(openmetrics)
        r = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(src), str(self.data)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            raise ServerUnavailable(f"promtool backfill failed: {r.stderr[-800:]}")

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query through the HTTP API (for test assertions and polling)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def value(self, promql: str, label: str, key: str) -> float | None:
        """Value of the series with ``label=key`` in an instant query, if present."""
        for item in self.query(promql):
            if item["metric"].get(label) == key:
                return float(item["value"][1])
        return None
