"""Source benchmarks: print figures, assert nothing.

1. Parsing a 1,000-series instant-query vector response into samples (pure CPU).
2. One engine pass with 5 Prometheus signals against a real Prometheus 2.42 holding 1,000
   target series (scraped from a real exporter process): wall time per tick.

Run: ``.venv/bin/python -m bench.sources`` (needs the prometheus binary for part 2).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoscaler.config import from_mapping
from autoscaler.journal import MemoryStore
from autoscaler.service import build_engine
from autoscaler.sources.promql import parse_envelope, vector_samples

N = 1000


def vector_body(n: int) -> bytes:
    result = [
        {"metric": {"service": f"svc{i:04d}"}, "value": [1700000000.123, f"{i * 0.37:.6g}"]}
        for i in range(n)
    ]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


def bench_parse(repeat: int = 200) -> None:
    body = vector_body(N)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        data, _ = parse_envelope(body)
        samples, _ = vector_samples(data, signal="queue_length", label="service", targets={})
        times.append(time.perf_counter() - t0)
    assert len(samples) == N
    ms = sorted(t * 1000 for t in times)
    print(
        f"parse {N}-series vector ({len(body)} bytes): min {ms[0]:.2f} ms, "
        f"median {statistics.median(ms):.2f} ms, p95 {ms[int(0.95 * len(ms))]:.2f} ms, "
        f"max {ms[-1]:.2f} ms over {repeat} runs"
    )


async def bench_tick(ticks: int = 10) -> None:
    from tests.harness.exporter import Exporter
    from tests.harness.prometheus import PrometheusServer, wait_for

    exp = Exporter().start()
    prom = PrometheusServer(targets=[exp.address])
    try:
        exp.set("queue_length", [({"service": f"svc{i:04d}"}, float(i)) for i in range(N)])
        exp.set("latency_ms", [({"service": f"svc{i:04d}"}, 50.0 + i % 7) for i in range(N)])
        prom.start()
        wait_for(
            lambda: [r["value"][1] for r in prom.query("count(latency_ms)")] == [str(N)],
            timeout=60,
            what="1000 series scraped",
        )
        queries = {
            "queue_length": "sum by (service) (queue_length)",
            "queue_max": "max by (service) (queue_length)",
            "p95_latency_ms": "avg by (service) (latency_ms)",
            "latency_max": "max_over_time(max by (service) (latency_ms)[1m:])",
            "load": "sum by (service) (queue_length) / 10",
        }
        settings = from_mapping(
            {
                "service": {"interval": "15s"},
                "targets": {f"svc{i:04d}": {"min_replicas": 1} for i in range(N)},
                "sources": {"prom": {"type": "prometheus", "url": prom.url, "queries": queries}},
                "policies": {"q": {"type": "step", "signal": "queue_length", "above": 500}},
            }
        )
        engine = build_engine(settings, state_store=MemoryStore(), executors={})
        walls = []
        durations = []
        try:
            for _ in range(ticks):
                t0 = time.perf_counter()
                report = await engine.tick(time.time())
                walls.append((time.perf_counter() - t0) * 1000)
                durations.append(report.duration * 1000)
                assert report.ok, report.source_errors
            src = engine.sources[0]
            t_collect = []
            for _ in range(ticks):
                t0 = time.perf_counter()
                samples = await src.collect(time.time())
                t_collect.append((time.perf_counter() - t0) * 1000)
            assert len(samples) == N * len(queries)
        finally:
            for s in engine.sources:
                await s.aclose()
        print(
            f"tick, {len(queries)} signals x {N} targets, real Prometheus: "
            f"median {statistics.median(walls):.1f} ms, min {min(walls):.1f}, max {max(walls):.1f} "
            f"over {ticks} ticks (whole pass incl. {N} targets' policy evaluation)"
        )
        print(
            f"collect only ({len(queries)} queries, {N * len(queries)} samples): "
            f"median {statistics.median(t_collect):.1f} ms, min {min(t_collect):.1f}, "
            f"max {max(t_collect):.1f}"
        )
    finally:
        prom.close()
        exp.stop()


def main() -> None:
    with open("/proc/loadavg") as f:  # the machine is shared: say how busy it was
        print(f"load average: {f.read().split()[0]} on {os.cpu_count()} cores")
    bench_parse()
    asyncio.run(bench_tick())


if __name__ == "__main__":
    main()
