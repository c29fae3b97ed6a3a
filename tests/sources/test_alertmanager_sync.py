"""After a restart the Alertmanager source reads what fires from a real Alertmanager 0.25
(``GET /api/v2/alerts``) and the restart rule, whose memory survived in the state store,
agrees with it at the first pass."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, generate_latest

from autoscaler.sources.alertmanager import AlertmanagerSource, AlertmanagerSpec
from autoscaler.sources.stats import SourceStats
from autoscaler.store import WindowStore
from policies.base import Bounds, Context
from policies.markers import Secret
from policies.restart import RestartPolicy, RestartSpec
from policies.types import Decision, Event, Restart
from tests.harness.alertmanager import AlertmanagerServer
from tests.harness.prometheus import free_port, wait_for

pytestmark = pytest.mark.integration

TOKEN = "am-token"
API_DOWN_FP = "a91422bb047fc3f7"  # Alertmanager's fingerprint of {alertname=ApiDown, service=api}
NOWHERE = f"http://127.0.0.1:{free_port()}/v1/alertmanager"  # nothing listens: deliveries fail


class NoHistory:
    interval = 15.0

    def window(
        self, target: str, signal: str, seconds: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return np.array([]), np.array([])


def api_alerts(am: AlertmanagerServer, alerts: list[dict[str, Any]]) -> None:
    """POST alerts to Alertmanager as Prometheus does (``/api/v2/alerts``)."""
    req = urllib.request.Request(
        f"{am.url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def silence(am: AlertmanagerServer, alertname: str) -> None:
    now = datetime.now(UTC)
    body = {
        "matchers": [{"name": "alertname", "value": alertname, "isRegex": False}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "test",
        "comment": "muted",
    }
    req = urllib.request.Request(
        f"{am.url}/api/v2/silences",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def firing(name: str, service: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "service": service}}


def resolved(name: str, service: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, "service": service},
        "startsAt": (now - timedelta(minutes=10)).isoformat(),
        "endsAt": (now - timedelta(minutes=1)).isoformat(),
    }


def restart_rule() -> RestartPolicy:
    return RestartPolicy("restart", RestartSpec(signal="", alerts=("ApiDown",), backoff=(2,)))


def context(
    now: float, memory: dict[str, Any], events: Sequence[Event], observations: Any = None
) -> Context:
    return Context(
        now=now,
        target="api",
        bounds=Bounds(min_replicas=1, max_replicas=4, lead_time=60.0),
        state=None,
        observations=observations or {},
        forecasts={},
        history=NoHistory(),
        events=events,
        memory=memory,
    )


async def one_pass(
    policy: RestartPolicy,
    intake: AlertmanagerSource,
    store: WindowStore,
    memory: dict[str, Any],
    now: float,
) -> Decision:
    """What the engine does for target api in a pass: collect, drain, evaluate."""
    store.ingest(await intake.collect(now))
    store.advance(now)
    c = context(now, memory, intake.drain(now), store.latest(now).of("api"))
    (d,) = policy.evaluate(c)
    return d


def restarted_for_api_down(policy: RestartPolicy, fingerprint: str, now: float) -> dict[str, Any]:
    """The rule's memory after it restarted api for ApiDown, as the state store gives it
    back to the next process (JSON)."""
    memory: dict[str, Any] = {}
    fired = [Event("ApiDown", "firing", "api", now, fingerprint=fingerprint)]
    (d,) = policy.evaluate(context(now, memory, fired))
    assert isinstance(d.action, Restart)
    loaded: dict[str, Any] = json.loads(json.dumps(memory))
    return loaded


async def test_an_alert_resolved_while_the_service_was_down_is_forgotten_at_the_first_pass(
    start_alertmanager: Callable[..., AlertmanagerServer],
) -> None:
    am = start_alertmanager(webhook_url=NOWHERE)
    # While the service was down ApiDown resolved (the resolve never reached it); another
    # target still has an alert firing.
    await asyncio.to_thread(api_alerts, am, [resolved("ApiDown", "api"), firing("DbDown", "db")])
    policy = restart_rule()
    t0 = time.time()
    memory = restarted_for_api_down(policy, API_DOWN_FP, t0)

    intake = AlertmanagerSource("am", AlertmanagerSpec(targets={"api": "api"}, url=am.url))
    d = await one_pass(policy, intake, WindowStore(interval=15), memory, t0 + 30)
    assert d.action is None and "api is healthy" in d.reason, d.reason
    assert memory["firing"] == {}
    assert intake.synced and not intake.errors
    got = {(s.target, s.value) for s in await intake.collect(t0 + 45)}
    assert got == {("api", 0.0), ("db", 1.0)}


async def test_an_alert_still_firing_is_known_at_once_and_the_restart_memory_is_kept(
    start_alertmanager: Callable[..., AlertmanagerServer],
) -> None:
    # Before the restart: Alertmanager delivers ApiDown to the webhook; the rule restarts api.
    before = AlertmanagerSource("am", AlertmanagerSpec(token=Secret(TOKEN)))
    app = web.Application()
    app.add_routes(before.routes())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        am = start_alertmanager(webhook_url=str(server.make_url("/v1/alertmanager")), token=TOKEN)
        await asyncio.to_thread(silence, am, "Noise")  # muted: never notified, not firing
        await asyncio.to_thread(api_alerts, am, [firing("ApiDown", "api"), firing("Noise", "api")])
        await asyncio.to_thread(
            wait_for, lambda: bool(before.pending), timeout=60, what="webhook delivery"
        )
        (delivered,) = before.drain(0.0)
        assert (delivered.name, delivered.status) == ("ApiDown", "firing")
        policy = restart_rule()
        t0 = time.time()
        memory: dict[str, Any] = {}
        (d,) = policy.evaluate(context(t0, memory, [delivered]))
        assert isinstance(d.action, Restart) and d.action.attempt == 1
        memory = json.loads(json.dumps(memory))  # what the state store gives back

        # The service restarts: a new intake that has heard nothing reads the API.
        after = AlertmanagerSource("am", AlertmanagerSpec(token=Secret(TOKEN), url=am.url))
        d = await one_pass(policy, after, WindowStore(interval=15), memory, t0 + 30)
        # the same fingerprint as the webhook's: one alert remembered, not two
        assert memory["firing"] == {delivered.fingerprint: "ApiDown"}
        assert isinstance(d.action, Restart) and d.action.attempt == 2, d.reason
        assert len(memory["attempts"]) == 2
        assert {(s.target, s.value) for s in await after.collect(t0 + 45)} == {("api", 1.0)}
    finally:
        await server.close()


async def test_an_alertmanager_down_at_start_keeps_the_warmup_until_it_answers(
    start_alertmanager: Callable[..., AlertmanagerServer],
) -> None:
    am = start_alertmanager(webhook_url=NOWHERE)
    await asyncio.to_thread(am.stop)  # down when the service starts
    policy = restart_rule()
    t0 = time.time()
    memory = restarted_for_api_down(policy, API_DOWN_FP, t0)
    intake = AlertmanagerSource("am", AlertmanagerSpec(targets={"api": "api"}, url=am.url))
    store = WindowStore(interval=15)

    d = await one_pass(policy, intake, store, memory, t0 + 30)
    # no 0 is known yet: the remembered alert is kept, as without url
    assert isinstance(d.action, Restart), d.reason
    assert memory["firing"] == {API_DOWN_FP: "ApiDown"}
    assert dict(intake.errors) == {"connection": 1} and not intake.synced
    registry = CollectorRegistry()
    registry.register(SourceStats([intake]))
    text = generate_latest(registry).decode()
    assert 'autoscaler_source_query_errors_total{reason="connection",source="am"} 1.0' in text

    await asyncio.to_thread(am.start)  # back, with nothing firing
    d = await one_pass(policy, intake, store, memory, t0 + 45)
    assert d.action is None and "api is healthy" in d.reason, d.reason
    assert memory["firing"] == {}
    assert dict(intake.errors) == {"connection": 1} and intake.synced


async def test_a_resolve_lost_while_running_is_corrected_at_the_next_resync(
    start_alertmanager: Callable[..., AlertmanagerServer],
) -> None:
    am = start_alertmanager(webhook_url=NOWHERE)  # every delivery fails: resolves are lost
    await asyncio.to_thread(api_alerts, am, [firing("ApiDown", "api")])
    spec = AlertmanagerSpec(targets={"api": "api"}, url=am.url, resync=60.0)
    intake = AlertmanagerSource("am", spec)
    once = AlertmanagerSource("am", dataclasses.replace(spec, resync=0.0))
    t0 = time.time()
    for src in (intake, once):
        assert [(s.target, s.value) for s in await src.collect(t0)] == [("api", 1.0)]
        src.drain(t0)

    await asyncio.to_thread(api_alerts, am, [resolved("ApiDown", "api")])
    # not yet due: the source asks only every resync
    assert [(s.target, s.value) for s in await intake.collect(t0 + 30)] == [("api", 1.0)]
    # one read without it could follow a restart of Alertmanager: the second one settles it
    assert [(s.target, s.value) for s in await intake.collect(t0 + 60)] == [("api", 1.0)]
    assert intake.drain(t0 + 60) == []
    assert [(s.target, s.value) for s in await intake.collect(t0 + 120)] == [("api", 0.0)]
    (gone,) = intake.drain(t0 + 120)
    assert (gone.name, gone.status, gone.fingerprint) == ("ApiDown", "resolved", API_DOWN_FP)
    # resync = 0: read at start-up only, the lost resolve stays
    assert [(s.target, s.value) for s in await once.collect(t0 + 120)] == [("api", 1.0)]
    assert not intake.errors and not once.errors


async def test_a_restart_of_alertmanager_does_not_resolve_what_still_fires(
    start_alertmanager: Callable[..., AlertmanagerServer],
) -> None:
    """Alertmanager keeps alerts in memory: a read just after it restarted lists nothing
    until Prometheus sends the alerts again. Taking that for resolves would end the restart
    rule's memory of the alert, and the next read would fire it again: a fresh restart of a
    target whose alert was already being handled."""
    am = start_alertmanager(webhook_url=NOWHERE)
    await asyncio.to_thread(api_alerts, am, [firing("ApiDown", "api")])
    intake = AlertmanagerSource(
        "am", AlertmanagerSpec(targets={"api": "api"}, url=am.url, resync=60.0)
    )
    t0 = time.time()
    assert [(s.target, s.value) for s in await intake.collect(t0)] == [("api", 1.0)]
    (first,) = intake.drain(t0)
    assert (first.name, first.status) == ("ApiDown", "firing")

    await asyncio.to_thread(am.stop)
    await asyncio.to_thread(am.start)  # restarted: it lists nothing yet
    assert [(s.target, s.value) for s in await intake.collect(t0 + 60)] == [("api", 1.0)]
    await asyncio.to_thread(api_alerts, am, [firing("ApiDown", "api")])  # Prometheus re-sends
    assert [(s.target, s.value) for s in await intake.collect(t0 + 120)] == [("api", 1.0)]
    assert intake.drain(t0 + 120) == []  # neither a resolve nor a second firing
    assert not intake.errors
