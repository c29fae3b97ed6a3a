"""A real Prometheus alert rule fires, a real Alertmanager 0.25 POSTs the webhook to the
service's HTTP app, and the next engine pass drains the alert as an Event."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from aiohttp.test_utils import TestServer

from autoscaler.config import from_mapping
from autoscaler.http import make_app
from autoscaler.journal import MemoryStore
from autoscaler.service import build_engine, component_routes
from autoscaler.sources.alertmanager import AlertmanagerSource
from policies.base import Context
from policies.markers import Secret
from policies.types import Decision, Event
from tests.harness.alertmanager import AlertmanagerServer
from tests.harness.exporter import Exporter
from tests.harness.prometheus import PrometheusServer, wait_for

pytestmark = pytest.mark.integration

TOKEN = "am-token"
RULES = json.dumps(
    {
        "groups": [
            {
                "name": "queue",
                "rules": [
                    {
                        "alert": "HighQueue",
                        "expr": "queue_length > 5",
                        "labels": {"severity": "page"},
                        "annotations": {"summary": "queue of {{ $labels.service }} is long"},
                    }
                ],
            }
        ]
    }
)


@dataclass
class EventLog:
    """A policy that only records the events each pass hands it."""

    name: str = "events"
    targets: Sequence[str] = ()
    seen: list[Event] = field(default_factory=list)

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        self.seen.extend(ctx.events)
        return []


async def test_alertmanager_posts_to_the_service_and_the_engine_drains_the_event(
    exporter: Exporter,
    start_prometheus: Callable[..., PrometheusServer],
    start_alertmanager: Callable[..., AlertmanagerServer],
) -> None:
    settings = from_mapping(
        {
            "targets": {"api": {}},
            "sources": {"am": {"type": "alertmanager", "token": "${AM_TOKEN}"}},
        },
        env={"AM_TOKEN": TOKEN},
    )
    # The composition root wires it: built from config, drained as an event source,
    # its route mounted on the service's HTTP app.
    engine = build_engine(settings, state_store=MemoryStore())
    (intake,) = engine.sources
    assert isinstance(intake, AlertmanagerSource)
    assert list(engine.event_sources) == [intake]
    log = EventLog()
    engine.policies = [log]
    app = make_app(
        engine=engine,
        clock=time.time,
        token=Secret(),
        healthz_max_age=60,
        extra_routes=component_routes(engine),
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        am = start_alertmanager(webhook_url=str(server.make_url("/v1/alertmanager")), token=TOKEN)
        exporter.set("queue_length", [({"service": "api"}, 9.0), ({"service": "db"}, 1.0)])
        start_prometheus(targets=[exporter.address], rules=RULES, alertmanager=am.address)

        await asyncio.to_thread(
            wait_for, lambda: intake.accepted > 0, timeout=60, what="webhook delivery"
        )
        report = await engine.tick(time.time())
        assert report.ok
        firing = [e for e in log.seen if e.status == "firing"]
        assert [(e.name, e.target) for e in firing] == [("HighQueue", "api")]
        assert firing[0].labels["severity"] == "page" and firing[0].fingerprint
        assert {(s.target, s.value) for s in await intake.collect(time.time())} == {("api", 1.0)}

        exporter.set("queue_length", [({"service": "api"}, 1.0)])
        await asyncio.to_thread(
            wait_for,
            lambda: any(e.status == "resolved" for e in intake.pending),
            timeout=60,
            what="resolved delivery",
        )
        await engine.tick(time.time())
        resolved = [e for e in log.seen if e.status == "resolved"]
        assert [(e.name, e.target) for e in resolved] == [("HighQueue", "api")]
        assert resolved[0].at >= firing[0].at
        assert intake.rejected == {}
    finally:
        await server.close()
