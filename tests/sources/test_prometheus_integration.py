"""The Prometheus source against a real Prometheus 2.42 scraping a real exporter process."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from autoscaler.config import Settings, from_mapping
from autoscaler.engine import Engine
from autoscaler.http import make_app
from autoscaler.journal import MemoryStore
from autoscaler.service import build_engine
from autoscaler.sources.prometheus import PrometheusSource
from policies.markers import Secret
from policies.types import Scale
from remediation.recording import RecordingExecutor
from tests.harness.exporter import Exporter
from tests.harness.prometheus import PrometheusServer, wait_for

pytestmark = pytest.mark.integration

QUEUE = "sum by (service) (queue_length)"


def settings_for(url: str, *, max_age: str = "60s", **source: Any) -> Settings:
    return from_mapping(
        {
            "service": {"interval": "1s"},
            "bus": {"cooldown": "0s", "dedupe_window": "0s"},
            "signals": {"queue_length": {"max_age": max_age}},
            "targets": {
                "api": {"executor": "rec", "min_replicas": 1, "max_replicas": 10},
                "worker": {"executor": "rec", "min_replicas": 1, "max_replicas": 10},
            },
            "executors": {"rec": {"type": "recording", "initial_replicas": 2}},
            "sources": {
                "prom": {
                    "type": "prometheus",
                    "url": url,
                    "queries": {"queue_length": QUEUE},
                    **source,
                }
            },
            "policies": {
                "queue": {
                    "type": "step",
                    "signal": "queue_length",
                    "above": 5,
                    "for": "0s",
                    "scale_up_step": 2,
                }
            },
        }
    )


def engine_for(settings: Settings) -> Engine:
    return build_engine(settings, state_store=MemoryStore())


def recorder(engine: Engine) -> RecordingExecutor:
    ex = engine.executors["rec"]
    assert isinstance(ex, RecordingExecutor)
    return ex


async def eventually(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    await asyncio.to_thread(wait_for, condition, timeout=limit, what=what)


def set_queue(exporter: Exporter, **values: float) -> None:
    exporter.set("queue_length", [({"service": k}, v) for k, v in values.items()])


async def close(engine: Engine) -> None:
    for src in engine.sources:
        await src.aclose()


async def test_exporter_value_crossing_the_threshold_scales_the_right_target(
    exporter: Exporter, start_prometheus: Callable[..., PrometheusServer]
) -> None:
    set_queue(exporter, api=1, worker=1)
    prom = start_prometheus(targets=[exporter.address])
    await eventually(lambda: prom.value(QUEUE, "service", "api") == 1, "first scrape")
    engine = engine_for(settings_for(prom.url))
    try:
        report = await engine.tick(time.time())
        assert report.ok, report.source_errors
        assert recorder(engine).calls == []
        assert engine.store.observation("api", "queue_length", report.now).value == 1

        set_queue(exporter, api=9, worker=1)
        await eventually(lambda: prom.value(QUEUE, "service", "api") == 9, "scrape of 9")
        report = await engine.tick(time.time())
        assert report.ok, report.source_errors
        calls = recorder(engine).calls
        assert calls == [Scale("api", replicas=4, current=2)]
        assert engine.store.observation("worker", "queue_length", report.now).value == 1
    finally:
        await close(engine)


async def test_stopped_exporter_makes_the_observation_stale_and_nothing_fires(
    exporter: Exporter, start_prometheus: Callable[..., PrometheusServer]
) -> None:
    set_queue(exporter, api=9)
    prom = start_prometheus(targets=[exporter.address])
    await eventually(lambda: prom.value(QUEUE, "service", "api") == 9, "first scrape")
    engine = engine_for(settings_for(prom.url, max_age="5s"))
    try:
        first = await engine.tick(time.time())
        assert recorder(engine).calls == [Scale("api", replicas=4, current=2)]

        exporter.stop()
        # Prometheus writes staleness markers on the first failed scrape: the series goes.
        await eventually(lambda: prom.value(QUEUE, "service", "api") is None, "series gone")
        later = max(time.time(), first.now + 6)  # past max_age of the last sample
        report = await engine.tick(later)
        assert report.ok, "Prometheus answered: an empty result is not a source failure"
        obs = engine.store.observation("api", "queue_length", later)
        assert obs.stale and obs.value == 9
        assert recorder(engine).calls == [Scale("api", replicas=4, current=2)]
        holds = [d for d in report.decisions if d.target == "api"]
        assert holds and all(d.action is None and "stale" in d.reason for d in holds)
    finally:
        await close(engine)


async def test_prometheus_down_fails_the_source_degrades_readyz_and_recovers(
    exporter: Exporter, start_prometheus: Callable[..., PrometheusServer]
) -> None:
    set_queue(exporter, api=9)
    prom = start_prometheus(targets=[exporter.address])
    await eventually(lambda: prom.value(QUEUE, "service", "api") == 9, "first scrape")
    engine = engine_for(settings_for(prom.url, retries=0, timeout="2s"))
    app = make_app(engine=engine, clock=time.time, token=Secret(), healthz_max_age=60)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        assert (await engine.tick(time.time())).ok
        assert (await client.get("/readyz")).status == 200
        before = list(recorder(engine).calls)

        prom.stop()
        report = await engine.tick(time.time())
        assert "prom" in report.source_errors
        assert engine.source_up["prom"] is False
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["failing"] == ["prom"]
        # The failed source's targets hold: no action on data it could not refresh.
        assert recorder(engine).calls == before
        assert all(d.action is None for d in report.decisions if d.target == "api")
        metrics = await (await client.get("/metrics")).text()
        assert 'autoscaler_source_errors_total{source="prom"} 1.0' in metrics

        prom.start()
        await eventually(lambda: prom.value(QUEUE, "service", "api") == 9, "scrape after restart")
        report = await engine.tick(time.time())
        assert report.ok, report.source_errors
        assert (await client.get("/readyz")).status == 200
    finally:
        await client.close()
        await close(engine)


def query_requests(prom: PrometheusServer) -> float:
    """Instant-query requests Prometheus has served (its own /metrics, not a query)."""
    with urllib.request.urlopen(f"{prom.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


async def test_a_thousand_targets_cost_one_query_per_signal(
    exporter: Exporter, start_prometheus: Callable[..., PrometheusServer]
) -> None:
    n = 1000
    set_queue(exporter, **{f"svc{i:04d}": float(i) for i in range(n)})
    prom = start_prometheus(targets=[exporter.address])
    count = "count(queue_length)"
    await eventually(
        lambda: bool(prom.query(count)) and prom.query(count)[0]["value"][1] == "1000",
        "1000 series",
    )
    queries = {
        "queue_length": QUEUE,
        "queue_doubled": f"2 * {QUEUE}",
        "queue_max": "max by (service) (queue_length)",
    }
    src = PrometheusSource(
        "prom",
        from_mapping(
            {"sources": {"p": {"type": "prometheus", "url": prom.url, "queries": queries}}}
        )
        .sources["p"]
        .spec,
    )
    try:
        before = query_requests(prom)
        samples = await src.collect(time.time())
        await eventually(lambda: query_requests(prom) >= before + len(queries), "counter")
        assert query_requests(prom) == before + len(queries)
    finally:
        await src.aclose()
    assert len(samples) == n * len(queries)
    by_key = {(s.target, s.signal): s.value for s in samples}
    assert by_key[("svc0042", "queue_length")] == 42
    assert by_key[("svc0042", "queue_doubled")] == 84
    assert by_key[("svc0999", "queue_max")] == 999
