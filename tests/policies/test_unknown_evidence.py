"""Rules fed by the real window store and sources: a NaN reading and a restarted
Alertmanager intake are "unknown", never a value to act on."""

from __future__ import annotations

import dataclasses
import json
import math

import policy_runbook as runbook
from policy_kit import ctx, one_sentence

from autoscaler.config import SignalSettings
from autoscaler.sources.alertmanager import AlertmanagerSource, AlertmanagerSpec
from autoscaler.sources.base import Sample
from autoscaler.store import WindowStore
from policies.restart import RestartPolicy, RestartSpec
from policies.types import Event, Restart

T0 = 1_000_000.0


async def test_a_nan_reading_holds_the_rule_and_says_it_is_not_finite() -> None:
    store = WindowStore(interval=15, signals={"queue_length": SignalSettings(max_age=60)})
    store.ingest([Sample("api", "queue_length", 40.0, T0 - 15)])  # a long queue, one tick ago
    store.advance(T0 - 15)
    store.ingest([Sample("api", "queue_length", math.nan, T0)])  # then the query says NaN
    store.advance(T0)
    c = dataclasses.replace(ctx(T0, replicas=4), observations=store.latest(T0).of("api"))
    (d,) = runbook.queue().evaluate(c)
    assert d.is_hold and one_sentence(d.reason)
    assert "queue_length is not finite (nan)" in d.reason


async def test_a_restarted_alertmanager_intake_does_not_make_the_restart_rule_forget() -> None:
    policy = RestartPolicy("restart", RestartSpec(signal="", alerts=("ApiDown",), backoff=(2,)))
    memory: dict[str, object] = {}
    fired = [Event("ApiDown", "firing", "api", T0, fingerprint="f1")]
    (d,) = policy.evaluate(ctx(T0, memory=memory, events=fired))
    assert isinstance(d.action, Restart)
    memory = json.loads(json.dumps(memory))  # persisted across the service's restart

    # the new process: its intake has heard nothing yet; the alert still fires upstream
    intake = AlertmanagerSource("am", AlertmanagerSpec(targets={"api": "api"}))
    store = WindowStore(interval=15)
    for now in (T0 + 30, T0 + 45):
        store.ingest(await intake.collect(now))
        store.advance(now)
        c = dataclasses.replace(ctx(now, memory=memory), observations=store.latest(now).of("api"))
        (d,) = policy.evaluate(c)
        assert isinstance(d.action, Restart), d.reason
    assert memory["firing"] == {"f1": "ApiDown"}
