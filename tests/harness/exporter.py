"""A real metrics exporter process whose values a test sets.

Run as ``python -m tests.harness.exporter``: it serves ``/metrics`` (Prometheus text
format, rendered by ``prometheus_client``) on a free loopback port, prints the port on its
first stdout line, and accepts ``POST /set`` with
``{"metric": NAME, "help": TEXT, "series": [{"labels": {...}, "value": V}, ...]}``
(replacing that metric's series) and ``POST /clear``.

``Exporter`` starts and controls such a process from a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.harness.process import stop_process

ROOT = Path(__file__).resolve().parents[2]


# --- the process -----------------------------------------------------------------------


def _serve(host: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    lock = threading.Lock()
    metrics: dict[str, dict[str, Any]] = {}

    class Collector:
        def collect(self) -> Iterator[GaugeMetricFamily]:
            with lock:
                snapshot = {k: dict(v) for k, v in metrics.items()}
            for name, m in snapshot.items():
                series = m["series"]
                labels = sorted({k for s in series for k in s["labels"]})
                fam = GaugeMetricFamily(name, m.get("help") or name, labels=labels)
                for s in series:
                    fam.add_metric([s["labels"].get(k, "") for k in labels], float(s["value"]))
                yield fam

    registry = CollectorRegistry()
    registry.register(Collector())  # type: ignore[arg-type]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._reply(200, generate_latest(registry), "text/plain; version=0.0.4")
            else:
                self._reply(404, b"not found")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/set":
                doc = json.loads(body)
                with lock:
                    metrics[doc["metric"]] = {"help": doc.get("help"), "series": doc["series"]}
            elif self.path == "/clear":
                with lock:
                    metrics.clear()
            else:
                self._reply(404, b"not found")
                return
            self._reply(200, b"ok")

    server = ThreadingHTTPServer((host, 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    _serve(args.host)


# --- the test's handle ---------------------------------------------------------------


class Exporter:
    """A running exporter process."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Exporter:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.exporter", "--host", self.host],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"exporter did not start: {line!r} {err[-500:]}")
        self.port = int(line)
        return self

    def _post(self, path: str, doc: Mapping[str, Any]) -> None:
        req = urllib.request.Request(
            f"http://{self.address}{path}",
            data=json.dumps(doc).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def set(
        self,
        metric: str,
        series: Iterable[tuple[Mapping[str, str], float]],
        *,
        help: str = "",
    ) -> None:
        """Replace all series of ``metric`` (labels, value)."""
        self._post(
            "/set",
            {
                "metric": metric,
                "help": help,
                "series": [{"labels": dict(lb), "value": v} for lb, v in series],
            },
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None


if __name__ == "__main__":
    main()
