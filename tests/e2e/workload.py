"""Workload emulator for the end-to-end test: demand in, metrics of a swarm service out.

A standalone process (``python -m tests.e2e.workload --service NAME --port PORT``). It
replays a demand curve, reads the target service's *real* running replicas and their images
from the Docker API, and exposes what a service under that demand would report, on a
loopback HTTP port that Prometheus scrapes:

- ``GET /metrics`` (prometheus_client text): ``queue_length``, ``p95_latency_ms`` and
  ``error_rate`` labelled ``service=NAME``, plus ``workload_demand_rps`` and
  ``workload_running_replicas``. Values are computed at scrape time.
- ``GET /state``: the same figures as JSON; ``GET /history?since=EPOCH``: the timeline the
  poller recorded (every ``--poll`` seconds), for tests and ``bench/reaction.py``.
- ``POST /schedule`` with ``{"points": [[seconds_from_now, rps], ...]}``: a new demand
  curve, linear between points, holding the last value.

Demand: by default the recorded ServeGen ``deepseek-r1`` trace (``trace_deepseek_r1.csv``,
LLM serving requests per second every 10 minutes over one day; Xiang et al., "ServeGen",
arXiv:2505.09999, Apache-2.0), time-compressed: one recorded hour lasts
``--seconds-per-hour`` seconds. Tests post ramps whose levels are drawn from that trace.

Model (documented, deliberately simple): ``r`` running replicas of capacity ``C``
requests/s each, demand ``d``, utilisation ``rho = d / (r * C)``, capped at 0.99 (also when
``r = 0``):

- ``p95_latency_ms = base / (1 - rho)``: the latency of an M/M/1-like server blows up as
  utilisation approaches 1 (``base`` = latency of an idle replica);
- ``queue_length = r * rho**2 / (1 - rho) + max(0, d - r * C)``: mean number waiting in
  ``r`` M/M/1 queues, plus the demand above capacity that piles up each second (computed
  as ``(d / C) * rho / (1 - rho)``, equal while rho is not capped, so that adding a replica
  never lengthens the queue);
- ``error_rate``: the mean over running tasks of 0.2 for a task on the bad image tag
  (``--bad-tag``, default ``v2``) and 0.001 otherwise (the service spec's image when no task
  runs). A half-rolled-out bad deploy shows a proportional error rate.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import docker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

TRACE = Path(__file__).with_name("trace_deepseek_r1.csv")
BAD_ERROR_RATE = 0.2
GOOD_ERROR_RATE = 0.001
MAX_RHO = 0.99

log = logging.getLogger("workload")


def load_trace(path: Path, *, seconds_per_hour: float, scale: float = 1.0) -> list[list[float]]:
    """``[[t, rps], ...]`` from a ``t_seconds,rate_rps`` CSV, one recorded hour compressed
    into ``seconds_per_hour`` seconds."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    t0 = float(rows[0]["t_seconds"])
    return [
        [(float(r["t_seconds"]) - t0) / 3600.0 * seconds_per_hour, float(r["rate_rps"]) * scale]
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Model:
    """Capacity and latency parameters of the emulated service."""

    capacity_rps: float = 10.0
    """Requests per second one replica serves at utilisation 1."""
    base_latency_ms: float = 50.0
    """P95 latency of an idle replica."""
    bad_tag: str = "v2"
    """Image tag whose tasks answer with errors."""

    def utilisation(self, demand: float, replicas: int) -> float:
        if replicas <= 0:
            return MAX_RHO
        return min(demand / (replicas * self.capacity_rps), MAX_RHO)

    def p95(self, demand: float, replicas: int) -> float:
        return self.base_latency_ms / (1.0 - self.utilisation(demand, replicas))

    def queue(self, demand: float, replicas: int) -> float:
        # r * rho^2 / (1 - rho) written as (d / C) * rho / (1 - rho): the same where rho is
        # not capped, and no larger with more replicas where it is.
        rho = self.utilisation(demand, replicas)
        excess = max(0.0, demand - replicas * self.capacity_rps)
        return demand / self.capacity_rps * rho / (1.0 - rho) + excess

    def is_bad(self, image: str) -> bool:
        ref = image.split("@", 1)[0]
        return ref.rsplit(":", 1)[-1] == self.bad_tag if ":" in ref else False

    def error_rate(self, images: Sequence[str], spec_image: str) -> float:
        if not images:
            return BAD_ERROR_RATE if self.is_bad(spec_image) else GOOD_ERROR_RATE
        bad = sum(1 for i in images if self.is_bad(i))
        return (bad * BAD_ERROR_RATE + (len(images) - bad) * GOOD_ERROR_RATE) / len(images)


class Schedule:
    """Demand as a piecewise-linear function of time since the schedule was set."""

    def __init__(self, points: Sequence[Sequence[float]], *, now: float) -> None:
        self.set(points, now=now)

    def set(self, points: Sequence[Sequence[float]], *, now: float) -> None:
        pts = sorted((float(t), float(v)) for t, v in points)
        if not pts:
            raise ValueError("a schedule needs at least one point")
        self._start, self._t, self._v = now, [p[0] for p in pts], [p[1] for p in pts]

    def at(self, now: float) -> float:
        x = now - self._start
        t, v = self._t, self._v
        if x <= t[0]:
            return v[0]
        if x >= t[-1]:
            return v[-1]
        i = bisect.bisect_right(t, x)
        frac = (x - t[i - 1]) / (t[i] - t[i - 1])
        return v[i - 1] + frac * (v[i] - v[i - 1])


@dataclass(frozen=True, slots=True)
class Sample:
    """What the service looks like at one instant."""

    at: float
    demand: float
    replicas: int
    image: str
    p95_latency_ms: float
    queue_length: float
    error_rate: float


class Workload:
    """Polls Docker for the service's running tasks and computes its metrics."""

    def __init__(
        self, *, service: str, model: Model, schedule: Schedule, poll: float = 0.25
    ) -> None:
        self.service, self.model, self.schedule, self.poll = service, model, schedule, poll
        self._client = docker.APIClient(version="auto", timeout=10)
        self._mu = threading.Lock()
        self._images: list[str] = []
        self._spec_image = ""
        self.history: deque[Sample] = deque(maxlen=50_000)
        self._stop = threading.Event()

    def read_docker(self) -> None:
        tasks = self._client.tasks(filters={"service": self.service, "desired-state": "running"})
        images = [
            str(t.get("Spec", {}).get("ContainerSpec", {}).get("Image", ""))
            for t in tasks
            if t.get("Status", {}).get("State") == "running"
        ]
        svc = self._client.inspect_service(self.service)
        spec_image = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        with self._mu:
            self._images, self._spec_image = images, str(spec_image)

    def sample(self, now: float | None = None) -> Sample:
        now = time.time() if now is None else now
        with self._mu:
            images, spec_image = list(self._images), self._spec_image
            demand = self.schedule.at(now)
        r, m = len(images), self.model
        return Sample(
            at=now,
            demand=demand,
            replicas=r,
            image=spec_image,
            p95_latency_ms=m.p95(demand, r),
            queue_length=m.queue(demand, r),
            error_rate=m.error_rate(images, spec_image),
        )

    def set_schedule(self, points: Sequence[Sequence[float]]) -> None:
        with self._mu:
            self.schedule.set(points, now=time.time())

    def run_poller(self) -> None:
        while not self._stop.is_set():
            try:
                self.read_docker()
                self.history.append(self.sample())
            except Exception as exc:  # dockerd busy or the service not there yet: keep going
                log.warning("docker poll failed: %s", exc)
            self._stop.wait(self.poll)

    def stop(self) -> None:
        self._stop.set()


class WorkloadCollector(Collector):
    """Exports the current sample at each scrape."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s, name = self.workload.sample(), self.workload.service
        for metric, doc, value in (
            ("queue_length", "Requests waiting (M/M/1 model).", s.queue_length),
            ("p95_latency_ms", "P95 request latency, milliseconds (model).", s.p95_latency_ms),
            ("error_rate", "Fraction of requests that fail.", s.error_rate),
            ("workload_demand_rps", "Offered load, requests per second.", s.demand),
            ("workload_running_replicas", "Running tasks (Docker API).", float(s.replicas)),
        ):
            g = GaugeMetricFamily(metric, doc, labels=["service"])
            g.add_metric([name], value)
            yield g


def make_handler(workload: Workload, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return  # one line per scrape would drown the test's output

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif url.path == "/state":
                self._send(200, json.dumps(asdict(workload.sample())).encode())
            elif url.path == "/history":
                since = float(parse_qs(url.query).get("since", ["0"])[0])
                rows = [asdict(s) for s in list(workload.history) if s.at >= since]
                self._send(200, json.dumps(rows).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/schedule":
                self._send(404, b'{"error": "not found"}')
                return
            try:
                doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                workload.set_schedule(doc["points"])
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, json.dumps({"error": str(exc)}).encode())
                return
            self._send(200, b'{"ok": true}')

    return Handler


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--service", required=True, help="swarm service whose tasks are counted")
    p.add_argument("--port", type=int, required=True, help="loopback port for /metrics")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--capacity", type=float, default=10.0, help="rps per replica")
    p.add_argument("--base-latency-ms", type=float, default=50.0)
    p.add_argument("--bad-tag", default="v2")
    p.add_argument("--trace", type=Path, default=TRACE, help="t_seconds,rate_rps CSV")
    p.add_argument("--seconds-per-hour", type=float, default=3.0, help="time compression")
    p.add_argument("--demand-scale", type=float, default=1.0)
    p.add_argument("--demand", type=float, help="constant demand instead of the trace")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between Docker reads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s workload %(message)s")

    points = (
        [[0.0, args.demand]]
        if args.demand is not None
        else load_trace(args.trace, seconds_per_hour=args.seconds_per_hour, scale=args.demand_scale)
    )
    model = Model(args.capacity, args.base_latency_ms, args.bad_tag)
    workload = Workload(
        service=args.service,
        model=model,
        schedule=Schedule(points, now=time.time()),
        poll=args.poll,
    )
    registry = CollectorRegistry()
    registry.register(WorkloadCollector(workload))
    server = ThreadingHTTPServer((args.host, args.port), make_handler(workload, registry))
    threading.Thread(target=workload.run_poller, daemon=True).start()
    log.info("serving %s metrics on http://%s:%d/metrics", args.service, args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        workload.stop()
        server.server_close()


if __name__ == "__main__":
    main()
