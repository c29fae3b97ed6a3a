"""Benchmark: one engine pass for 1,000 targets x 3 signals.

In-memory source, forecasts on every signal (``--model``, persistence by default: the
"trivial forecast" case), a step rule per target, dry-run bus, in-memory journal; 6 h
windows at a 15 s interval, filled before timing. The first pass refits the models on the
whole window: it is reported apart, with the longest the event loop went without running
(a heartbeat every 10 ms) while it ran, since health checks and webhooks wait that long.
``--journal sqlite`` commits to a real SQLite file (WAL) in a temporary folder, as the
service does, instead of the in-memory store.

    .venv/bin/python bench/tick.py [--targets 1000] [--passes 60] [--model auto] [--journal sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from autoscaler.config import from_mapping
from autoscaler.journal import MemoryStore, SQLiteStore
from autoscaler.live import settle_gc
from autoscaler.service import build_engine
from autoscaler.sources.base import MemorySource
from remediation.recording import RecordingExecutor

SIGNALS = ("queue_length", "p95_latency_ms", "error_rate")


def settings(n: int, model: str = "persistence") -> Any:
    return from_mapping(
        {
            "service": {"interval": "15s"},
            "forecasting": {"model": model},
            "signals": {s: {"max_age": "60s", "forecast": True, "window": "6h"} for s in SIGNALS},
            "targets": {
                f"t{i}": {"executor": "rec", "min_replicas": 2, "max_replicas": 10}
                for i in range(n)
            },
            "executors": {"rec": {"type": "recording"}},
            "policies": {
                "queue": {
                    "type": "step",
                    "signal": "queue_length",
                    "above": 5,
                    "below": 1,
                    "scale_down_for": "10m",
                }
            },
        }
    )


async def main(n: int, passes: int, model: str = "persistence", journal: str = "memory") -> None:
    src = MemorySource()
    folder = tempfile.TemporaryDirectory()
    store = MemoryStore() if journal == "memory" else SQLiteStore(Path(folder.name) / "j.db")
    engine = build_engine(
        settings(n, model),
        dry_run=True,
        state_store=store,
        executors={"rec": RecordingExecutor("rec")},
        sources=[src],
    )
    t0 = 1_700_000_000.0
    fill = int(6 * 3600 / 15)
    for k in range(fill + passes):
        now = t0 + 15 * k
        for i in range(n):
            src.set(f"t{i}", "queue_length", float((i + k) % 7), now)
            src.set(f"t{i}", "p95_latency_ms", 80.0 + (k % 11), now)
            src.set(f"t{i}", "error_rate", 0.001, now)
        if k < fill:
            engine.store.ingest(await src.collect(now))
            engine.store.advance(now)
            continue
        if k == fill + 1:
            settle_gc()  # as the live driver does after its first pass
        start, cpu = time.perf_counter(), time.process_time()
        if k == fill:
            first_pass[:] = await _with_heartbeat(engine.tick(now))
            continue
        await engine.tick(now)
        took = time.perf_counter() - start
        durations.append(took)
        cpu_times.append(time.process_time() - cpu)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store.close()
    folder.cleanup()
    print(
        f"targets={n} signals={len(SIGNALS)} passes={passes} window=6h@15s model={model}"
        f" journal={journal}"
    )
    stall = first_pass[1] * 1000
    print(f"first pass    {first_pass[0]:8.2f} s  (refit; loop stalled at most {stall:.0f} ms)")
    print(f"median pass   {statistics.median(durations) * 1000:8.1f} ms wall")
    print(f"median pass   {statistics.median(cpu_times) * 1000:8.1f} ms CPU (all threads)")
    print(f"p95 pass      {sorted(durations)[int(0.95 * len(durations))] * 1000:8.1f} ms")
    print(f"ring buffers  {engine.store.memory_bytes() / 2**20:8.1f} MiB")
    print(f"max RSS       {rss:8.1f} MiB")


async def _with_heartbeat(call: Any) -> list[float]:
    """Wall time of ``call`` and the longest gap between 10 ms heartbeats meanwhile."""
    last, gap = [time.perf_counter()], [0.0]

    def note() -> None:
        t = time.perf_counter()
        gap[0] = max(gap[0], t - last[0] - 0.01)
        last[0] = t

    async def beat() -> None:
        while True:
            await asyncio.sleep(0.01)
            note()

    task = asyncio.create_task(beat())
    await asyncio.sleep(0)  # the heartbeat is waiting before the pass starts
    start = last[0] = time.perf_counter()
    await call
    took = time.perf_counter() - start
    note()  # a pass that never let the loop run is one long gap
    task.cancel()
    return [took, gap[0]]


first_pass: list[float] = [0.0, 0.0]
durations: list[float] = []
cpu_times: list[float] = []  # CPU time of this process: steadier than wall time on a busy host

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--passes", type=int, default=60)
    ap.add_argument("--model", default="persistence", help="[forecasting] model")
    ap.add_argument("--journal", choices=("memory", "sqlite"), default="memory")
    a = ap.parse_args()
    asyncio.run(main(a.targets, a.passes, a.model, a.journal))
