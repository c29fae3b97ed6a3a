"""The engine pass with an in-memory source and a recording executor."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from autoscaler.config import Settings
from autoscaler.engine import _NUMBER, Engine, _shape, settle
from autoscaler.errors import ExecutorError, SourceError
from autoscaler.journal import MemoryStore, SQLiteStore
from autoscaler.metrics import make_metrics
from autoscaler.service import build_engine
from autoscaler.sources.base import MemorySource
from policies.types import Action, Notify, Restart, Rollback, Scale, TargetState
from remediation.recording import RecordingExecutor
from remediation.swarm import DiscoveredTarget

SettingsFactory = Callable[..., Settings]


def engine_for(
    settings: Settings, *, dry_run: bool = False, store: MemoryStore | None = None
) -> tuple[Engine, MemorySource, RecordingExecutor, MemoryStore]:
    src = MemorySource()
    rec = RecordingExecutor("rec")
    st = store or MemoryStore()
    engine = build_engine(
        settings,
        dry_run=dry_run,
        state_store=st,
        executors={"rec": rec},
        sources=[src],
        metrics=make_metrics(),
    )
    return engine, src, rec, st


def statuses(store: MemoryStore, kind: str = "scale") -> list[str]:
    return [r.status for r in store.records if r.kind == kind]


async def test_breach_scales_up_then_second_breach_in_cooldown_is_skipped(
    settings_factory: SettingsFactory,
) -> None:
    engine, src, rec, store = engine_for(settings_factory())
    src.set("api", "queue_length", 10.0)
    first = await engine.tick(1000.0)
    assert [o.status for o in first.outcomes] == ["done"]
    assert rec.calls == [Scale(target="api", replicas=4, current=2)]
    second = await engine.tick(1015.0)
    assert [o.status for o in second.outcomes] == ["skipped-cooldown"]
    assert len(rec.calls) == 1
    assert statuses(store) == ["done", "skipped-cooldown"]
    entry = next(r for r in store.records if r.status == "skipped-cooldown")
    assert entry.params == {"replicas": 6, "from": 4}
    assert "queue_length 10 > 5" in entry.reason


async def test_action_is_allowed_again_after_the_cooldown(
    settings_factory: SettingsFactory,
) -> None:
    engine, src, rec, _ = engine_for(settings_factory(bus={"cooldown": "60s"}))
    src.set("api", "queue_length", 10.0)
    for t in (0.0, 15.0, 30.0, 45.0, 60.0):
        await engine.tick(t)
    assert [c.replicas for c in rec.calls if isinstance(c, Scale)] == [4, 6]


async def test_dry_run_journals_identical_decisions_and_calls_no_executor(
    settings_factory: SettingsFactory,
) -> None:
    journals = {}
    for dry in (False, True):
        engine, src, rec, store = engine_for(settings_factory(), dry_run=dry)
        # The recording executor reports replicas back; in dry-run nothing changes them, so
        # give both runs the same, constant view of the orchestrator.
        rec.execute = _no_state_change(rec)  # type: ignore[method-assign]
        src.set("api", "queue_length", 10.0)
        for t in (0.0, 15.0, 400.0):
            await engine.tick(t)
        journals[dry] = [(r.at, r.policy, r.kind, dict(r.params), r.reason) for r in store.records]
        calls = len(rec.calls)
        assert calls == (0 if dry else 2)
        assert statuses(store) == (
            ["dry-run", "skipped-cooldown", "dry-run"]
            if dry
            else ["done", "skipped-cooldown", "done"]
        )
    assert journals[True] == journals[False]


def _no_state_change(rec: RecordingExecutor) -> Any:
    async def execute(action: Action) -> str:
        rec.calls.append(action)
        return "recorded"

    return execute


async def test_stale_data_holds_and_never_scales(settings_factory: SettingsFactory) -> None:
    engine, src, rec, store = engine_for(settings_factory())
    src.set("api", "queue_length", 10.0, at=0.0)
    report = await engine.tick(100.0)  # the sample is 100 s old, max_age is 60 s
    assert report.outcomes == [] and rec.calls == []
    assert any(r.kind == "hold" and r.reason.startswith("stale:") for r in store.records)


async def test_failing_source_holds_its_targets_and_the_pass_goes_on(
    settings_factory: SettingsFactory,
) -> None:
    engine, src, rec, _ = engine_for(settings_factory())
    src.set("api", "queue_length", 10.0)
    src.fail = SourceError("connection refused")
    report = await engine.tick(0.0)
    assert report.source_errors == {"memory": "connection refused"}
    assert rec.calls == [] and engine.source_up == {"memory": False}
    src.fail = None
    report = await engine.tick(15.0)
    assert report.ok and len(rec.calls) == 1


class HungSource:
    """A networked source whose server never answers."""

    name = "hung"

    async def collect(self, now: float) -> list[Any]:
        await asyncio.sleep(3600)
        return []

    async def aclose(self) -> None:
        return None


async def test_a_hung_source_times_out_while_an_in_memory_source_answers_in_place(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory()
    settings = replace(settings, service=replace(settings.service, tick_timeout=0.05))
    src = MemorySource()
    src.set("api", "queue_length", 10.0)
    engine = build_engine(
        settings,
        dry_run=False,
        state_store=MemoryStore(),
        executors={"rec": RecordingExecutor("rec")},
        sources=[HungSource(), src],
        metrics=make_metrics(),
    )
    report = await engine.tick(0.0)
    assert report.source_errors == {"hung": "timed out"}
    assert engine.source_up == {"hung": False, "memory": True}
    assert [o.status for o in report.outcomes] == ["done"]  # the in-memory sample was used


async def test_settle_returns_results_and_failures_in_call_order() -> None:
    async def ok(v: int) -> int:
        return v

    async def bad() -> int:
        raise SourceError("down")

    async def slow() -> int:
        await asyncio.sleep(3600)
        return 0

    out = await settle(
        [(ok(1), True), (slow(), False), (bad(), True), (ok(4), False), (bad(), False)], 0.05
    )
    assert out[0] == 1 and out[3] == 4
    assert isinstance(out[1], TimeoutError)
    assert isinstance(out[2], SourceError) and isinstance(out[4], SourceError)


async def test_values_from_a_source_that_just_failed_count_as_stale(
    settings_factory: SettingsFactory,
) -> None:
    engine, src, rec, _ = engine_for(settings_factory())
    src.set("api", "queue_length", 0.0)
    await engine.tick(0.0)
    src.fail = SourceError("down")
    src.set("api", "queue_length", 10.0)
    report = await engine.tick(15.0)  # the last sample is fresh by age, but its source failed
    assert all(d.action is None for d in report.decisions) and rec.calls == []


async def test_a_failing_policy_holds_and_other_policies_still_act(
    settings_factory: SettingsFactory,
) -> None:
    engine, src, rec, store = engine_for(settings_factory())

    class Broken:
        name = "broken"
        targets = ("api",)

        def evaluate(self, ctx: Any) -> Any:
            raise ZeroDivisionError("oops")

    engine.policies = [Broken(), *engine.policies]
    src.set("api", "queue_length", 10.0)
    await engine.tick(0.0)
    assert len(rec.calls) == 1
    assert any(r.policy == "broken" and "policy error" in r.reason for r in store.records)


async def test_failing_executor_opens_its_breaker_and_is_not_hammered(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory(bus={"cooldown": "0s", "retries": 0, "dedupe_window": "0s"})
    engine, src, rec, store = engine_for(settings)
    attempts = []

    async def broken(action: Action) -> str:
        attempts.append(action)
        raise ExecutorError("docker: 500", temporary=True)

    rec.execute = broken  # type: ignore[method-assign]
    src.set("api", "queue_length", 10.0)
    for i in range(8):
        await engine.tick(i * 5.0)
    assert len(attempts) == 5  # 5 consecutive failures open the breaker for 30 s
    assert statuses(store)[-3:] == ["breaker-open"] * 3
    assert engine.bus.breakers["rec"].state == "open"
    await engine.tick(20.0 + 30.0)  # half-open: one trial call goes through, fails, reopens
    assert len(attempts) == 6 and engine.bus.breakers["rec"].state == "open"


async def test_temporary_failure_is_retried_with_backoff_within_the_tick(
    settings_factory: SettingsFactory,
) -> None:
    engine, src, rec, _ = engine_for(settings_factory(bus={"retries": 2}))
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)

    engine.bus._sleep = fake_sleep
    real = rec.execute
    failures = iter([True, True, False])

    async def flaky(action: Action) -> str:
        if next(failures):
            raise ExecutorError("timeout", temporary=True)
        return await real(action)

    rec.execute = flaky  # type: ignore[method-assign]
    src.set("api", "queue_length", 10.0)
    report = await engine.tick(0.0)
    assert [o.status for o in report.outcomes] == ["done"]
    assert len(delays) == 2 and delays[1] > delays[0] * 0.6


async def test_permanent_failure_is_not_retried(settings_factory: SettingsFactory) -> None:
    engine, src, rec, _ = engine_for(settings_factory(bus={"retries": 3}))
    calls = []

    async def refuse(action: Action) -> str:
        calls.append(action)
        raise ExecutorError("no such service", temporary=False)

    rec.execute = refuse  # type: ignore[method-assign]
    src.set("api", "queue_length", 10.0)
    report = await engine.tick(0.0)
    assert len(calls) == 1
    assert report.outcomes[0].detail == "permanent: no such service"


async def test_paused_bus_journals_decisions_without_executing(
    settings_factory: SettingsFactory,
) -> None:
    engine, src, rec, store = engine_for(settings_factory())
    engine.set_paused(True)
    src.set("api", "queue_length", 10.0)
    await engine.tick(0.0)
    assert rec.calls == [] and statuses(store) == ["skipped-paused"]
    assert store.state["service:paused"] is True


async def test_a_restarted_engine_stays_paused_and_its_gauge_says_so(
    settings_factory: SettingsFactory,
) -> None:
    store = MemoryStore()
    engine_for(settings_factory(), store=store)[0].set_paused(True)
    again, src, rec, _ = engine_for(settings_factory(), store=store)
    # the paused alert and dashboard read the gauge: it must not say "running"
    assert again.metrics.registry.get_sample_value("autoscaler_paused") == 1.0
    src.set("api", "queue_length", 10.0)
    await again.tick(0.0)
    assert rec.calls == [] and statuses(store) == ["skipped-paused"]


async def test_global_rate_limit_caps_actions_per_minute(
    settings_factory: SettingsFactory,
) -> None:
    targets = {
        f"t{i}": {"executor": "rec", "min_replicas": 1, "max_replicas": 10} for i in range(5)
    }
    settings = settings_factory(
        targets=targets,
        bus={"rate_limit": 3},
        policies={"queue": {"type": "step", "signal": "queue_length", "above": 5}},
    )
    engine, src, rec, store = engine_for(settings)
    for t in targets:
        src.set(t, "queue_length", 10.0)
    await engine.tick(0.0)
    assert len(rec.calls) == 3
    assert statuses(store).count("skipped-rate-limit") == 2


async def test_replicas_never_leave_bounds(settings_factory: SettingsFactory) -> None:
    settings = settings_factory(bus={"cooldown": "0s", "dedupe_window": "0s"})
    engine, src, rec, _ = engine_for(settings)
    src.set("api", "queue_length", 100.0)
    for i in range(10):
        await engine.tick(i * 15.0)
    assert rec.replicas["api"] == 10
    assert max(c.replicas for c in rec.calls if isinstance(c, Scale)) == 10


async def test_holds_are_journalled_only_when_their_reason_changes(
    settings_factory: SettingsFactory,
) -> None:
    engine, src, _, store = engine_for(settings_factory())
    src.set("api", "queue_length", 3.0)
    for i in range(5):
        await engine.tick(i * 15.0)
    holds = [r for r in store.records if r.kind == "hold"]
    assert len(holds) == 1


@pytest.mark.parametrize("mode,expected", [("all", 5), ("none", 0)])
async def test_hold_journal_mode(
    settings_factory: SettingsFactory, mode: str, expected: int
) -> None:
    engine, src, _, store = engine_for(settings_factory(service={"journal_holds": mode}))
    src.set("api", "queue_length", 3.0)
    for i in range(5):
        await engine.tick(i * 15.0)
    assert len([r for r in store.records if r.kind == "hold"]) == expected


async def test_a_restarted_engine_keeps_cooldowns_and_policy_memory(
    settings_factory: SettingsFactory,
) -> None:
    store = MemoryStore()
    engine, src, rec, _ = engine_for(settings_factory(), store=store)
    src.set("api", "queue_length", 10.0)
    await engine.tick(0.0)
    assert len(rec.calls) == 1
    again, src2, rec2, _ = engine_for(settings_factory(), store=store)
    src2.set("api", "queue_length", 10.0)
    report = await again.tick(30.0)
    assert [o.status for o in report.outcomes] == ["skipped-cooldown"] and rec2.calls == []


@given(st.text(alphabet="0123456789.-+e x٣\ud800", max_size=30))
@hypothesis_settings(max_examples=500, deadline=None)
def test_a_reasons_shape_is_its_numbers_masked(reason: str) -> None:
    """The journal masks the numbers of a hold reason through a cache of shapes by the
    reason with its digits zeroed (``_shape``): what the regex gives on the reason itself."""
    assert _shape(reason) == _NUMBER.sub("#", reason)


def test_policy_memory_is_dirty_only_when_a_value_really_changes() -> None:
    from autoscaler.engine import Memory

    mem = Memory({"n": 1})
    mem["n"] = 1
    assert not mem.dirty
    mem["n"] = 2
    assert mem.dirty
    mem.dirty = False
    mem.setdefault("n", 5)
    assert not mem.dirty and mem["n"] == 2
    mem.setdefault("new", [])
    assert mem.dirty
    mem.dirty = False
    mem.pop("missing", None)
    assert not mem.dirty
    del mem["new"]
    assert mem.dirty


async def test_only_changed_policy_memory_is_written(settings_factory: SettingsFactory) -> None:
    engine, src, _, store = engine_for(settings_factory())
    writes: list[set[str]] = []
    commit = store.commit

    def spy(records: Any, state: Any) -> None:
        writes.append({k for k in state if k.startswith("memory:")})
        commit(records, state)

    store.commit = spy  # type: ignore[method-assign]
    await engine.tick(0.0)  # no data yet: the rule counts a failed evaluation
    src.set("api", "queue_length", 3.0, at=15.0)
    for i in (1, 2, 3):
        await engine.tick(i * 15.0)
    assert "memory:queue:api" in writes[0]
    assert "memory:queue:api" in writes[1]  # data again: the count starts over
    assert "memory:queue:api" not in writes[2]  # same value assigned again: not rewritten
    assert "memory:queue:api" not in writes[3]


async def test_a_hold_is_not_journalled_again_when_only_its_numbers_move(
    settings_factory: SettingsFactory,
) -> None:
    engine, src, _, store = engine_for(settings_factory())
    for i, value in enumerate([2.0, 3.0, 4.0, 0.5, 0.7]):
        src.set("api", "queue_length", value)
        await engine.tick(i * 15.0)
    reasons = [r.reason for r in store.records if r.kind == "hold"]
    assert len(reasons) == 2  # "within thresholds" once, then "below, waiting" once
    assert "within" in reasons[0] and "0.5" in reasons[1]


async def test_dropped_samples_are_counted_by_reason(settings_factory: SettingsFactory) -> None:
    from prometheus_client import generate_latest

    engine, src, _, _ = engine_for(settings_factory())
    src.set("api", "queue_length", float("nan"))
    await engine.tick(0.0)
    src.set("api", "queue_length", 1.0, at=10.0)
    await engine.tick(15.0)
    src.set("api", "queue_length", 1.0, at=5.0)  # older than the sample already stored
    await engine.tick(30.0)
    text = generate_latest(engine.metrics.registry).decode()
    assert 'autoscaler_dropped_samples_total{reason="non_finite"} 1.0' in text
    assert 'autoscaler_dropped_samples_total{reason="out_of_order"} 1.0' in text


class _Remembering(RecordingExecutor):
    """A recording executor with state of its own (as the breaker board has)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.seen = 0

    async def execute(self, action: Action) -> str:
        self.seen += 1
        return await super().execute(action)

    def to_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def restore(self, data: Any) -> None:
        self.seen = int(data["seen"])


async def test_an_executors_own_state_is_persisted_and_restored(
    settings_factory: SettingsFactory,
) -> None:
    store = MemoryStore()

    def start() -> tuple[Engine, MemorySource, _Remembering]:
        src, ex = MemorySource(), _Remembering("rec")
        engine = build_engine(
            settings_factory(),
            state_store=store,
            executors={"rec": ex},
            sources=[src],
            metrics=make_metrics(),
        )
        return engine, src, ex

    engine, src, ex = start()
    src.set("api", "queue_length", 10.0)
    await engine.tick(0.0)
    assert ex.seen == 1 and store.state["executor:rec"] == {"seen": 1}
    _, _, again = start()  # a restarted service on the same store
    assert again.seen == 1

    # a pass cut short by a stop: its call changed the executor's state, and no journal
    # commit followed; the save at shutdown must keep it
    await ex.execute(Scale("api", replicas=5, current=4))
    await engine.flush(30.0, interrupted=[(Scale("api", replicas=5, current=4), "rec")])
    assert store.state["executor:rec"] == {"seen": 2}


class LabelledExecutor(RecordingExecutor):
    """A recording executor that also discovers services, as the swarm one does from labels."""

    def __init__(self, found: dict[str, DiscoveredTarget]) -> None:
        super().__init__("rec")
        self.found = found

    async def discover(self) -> dict[str, DiscoveredTarget]:
        return self.found


def discovering_engine(
    settings: Settings, found: dict[str, DiscoveredTarget]
) -> tuple[Engine, LabelledExecutor]:
    ex = LabelledExecutor(found)
    engine = build_engine(
        settings,
        dry_run=False,
        state_store=MemoryStore(),
        executors={"rec": ex},
        sources=[MemorySource()],
        metrics=make_metrics(),
    )
    return engine, ex


async def test_discovered_targets_take_startup_delay_and_behaviour_from_their_labels(
    settings_factory: SettingsFactory,
) -> None:
    labels = {"startup_delay": "90s", "behavior.scale_down_window": "10m"}
    labels["behavior.max_scale_up"] = "2"
    found = {"web": DiscoveredTarget("web", 1, 6, "", labels)}
    engine, _ = discovering_engine(settings_factory(), found)
    await engine.tick(0.0)
    web = engine.targets["web"]
    assert (web.executor, web.min_replicas, web.max_replicas) == ("rec", 1, 6)
    assert web.startup_delay == 90.0
    assert web.behavior.scale_down_window == 600.0 and web.behavior.max_scale_up == 2
    assert web.behavior.scale_up_window == 0.0  # unlabelled fields keep their defaults
    await engine.tick(15.0)
    assert engine.targets["web"] is web  # parsed once while the labels stay the same


async def test_bad_settings_labels_are_ignored_with_a_warning_and_the_target_still_runs(
    settings_factory: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    found = {
        "web": DiscoveredTarget("web", 1, 6, "", {"startup_delay": "soon"}),
        "api2": DiscoveredTarget("api2", 1, 6, "", {"min_replicas": "3"}),
        "db": DiscoveredTarget("db", 2, 4, "", {"colour": "blue"}),
    }
    engine, _ = discovering_engine(settings_factory(), found)
    with caplog.at_level("WARNING"):
        report = await engine.tick(0.0)
        await engine.tick(15.0)
    assert engine.targets["web"].startup_delay == 60.0  # the default
    assert engine.targets["api2"].min_replicas == 1  # the executor's bound, not the label
    assert engine.targets["db"].min_replicas == 2
    warned = [r.getMessage() for r in caplog.records if "settings labels" in r.getMessage()]
    assert len(warned) == 3  # once per target, not once per pass
    assert any("startup_delay: expected a duration" in w for w in warned)
    assert any("min_replicas: set by the executor" in w for w in warned)
    assert any("colour: unknown key" in w for w in warned)
    assert report.ok


async def test_a_service_no_longer_discovered_is_no_longer_a_target(
    settings_factory: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator opts a service out (or removes it): the engine must stop deciding for it
    at once, not keep scaling it until the next restart; a removed policy label stops
    limiting its rules; a failed discovery drops nothing."""
    found = {
        "web": DiscoveredTarget("web", 1, 6, "", {}),
        "api": DiscoveredTarget("api", 1, 6, "", {}),  # also configured: config wins
    }
    rule = {"type": "step", "signal": "queue_length", "above": 5, "below": 1}
    engine, ex = discovering_engine(settings_factory(policies={"queue": rule}), found)
    ex.replicas.update(web=2, api=2)
    report = await engine.tick(0.0)
    assert {"web", "api"} <= {d.target for d in report.decisions}
    ex.found = {}
    with caplog.at_level("INFO"):
        report = await engine.tick(15.0)
    assert "web" not in engine.targets and "api" in engine.targets
    assert "web" not in {d.target for d in report.decisions}
    assert any("web is no longer discovered" in r.getMessage() for r in caplog.records)

    ex.found = {"web": DiscoveredTarget("web", 2, 3, "other", {})}  # opted in again
    await engine.tick(30.0)
    assert engine.targets["web"].min_replicas == 2
    assert "web" not in {d.target for d in (await engine.tick(45.0)).decisions}  # "other" only
    ex.found = {"web": DiscoveredTarget("web", 2, 3, "", {})}  # the policy label removed
    assert "web" in {d.target for d in (await engine.tick(60.0)).decisions}

    async def failing() -> dict[str, DiscoveredTarget]:
        raise RuntimeError("docker is down")

    ex.discover = failing  # type: ignore[method-assign]
    await engine.tick(75.0)
    assert "web" in engine.targets  # not known to be gone: kept


class _GatedForecaster:
    """Forecasts only once the event loop has run while it waits: it proves the forecast
    half of a live pass leaves the loop free (a slow refit must not stall /healthz)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[int] = []

    def forecast(self, signal: str, targets: Any, history: Any, **_: Any) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        self.started.set()
        if not self.release.wait(timeout=5):
            raise RuntimeError("the loop was blocked while forecasting")
        return {}


@pytest.mark.parametrize("in_place", [False, True])
async def test_a_live_pass_forecasts_off_the_loop_and_a_replay_in_place(
    settings_factory: SettingsFactory, in_place: bool
) -> None:
    s = settings_factory(signals={"queue_length": {"max_age": "60s", "forecast": True}})
    gate = _GatedForecaster()
    engine, src, _, _ = engine_for(s)
    engine.forecaster = gate
    engine.in_place = in_place
    src.set("api", "queue_length", 1.0)
    if in_place:
        gate.release.set()  # on the loop nothing else could release it
        await engine.tick(0.0)
        assert gate.threads == [threading.get_ident()]
        return
    pass_ = asyncio.create_task(engine.tick(0.0))
    # this coroutine resumes only if the loop is free while the pass forecasts
    assert await asyncio.to_thread(gate.started.wait, 5)
    gate.release.set()
    report = await pass_
    errors = engine.metrics.registry.get_sample_value(
        "autoscaler_component_errors_total", {"component": "forecast"}
    )
    assert not errors
    assert gate.threads and gate.threads[0] != threading.get_ident()
    assert report.decisions


class _Windows:
    """A forecaster that keeps the shape of every window it is given."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def forecast(self, signal: str, targets: Any, history: Any, **_: Any) -> dict[str, Any]:
        self.shapes.append(history.shape)
        return {}


@pytest.mark.parametrize("history", [True, False])
async def test_a_forecaster_with_a_store_of_its_own_is_given_no_window(
    settings_factory: SettingsFactory, history: bool
) -> None:
    s = settings_factory(signals={"queue_length": {"max_age": "60s", "forecast": True}})
    windows = _Windows()
    engine, src, _, _ = engine_for(s)
    engine.forecaster, engine.in_place, engine.forecast_history = windows, True, history
    src.set("api", "queue_length", 1.0)
    for i in range(3):
        await engine.tick(i * 15.0)
    rows, ticks = windows.shapes[-1]
    assert rows == 1 and (ticks > 0) == history


class _DiskFullOnce(SQLiteStore):
    """A real SQLite journal whose next commit fails, as on a full or locked disk."""

    fail_next = True

    def commit(self, records: Any, state: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise sqlite3.OperationalError("database or disk is full")
        super().commit(records, state)


async def test_a_failed_commit_is_written_with_the_next_pass_and_the_cooldown_survives(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    s = settings_factory(bus={"cooldown": "1h"})
    store = _DiskFullOnce(tmp_path / "state.db")
    engine, src, rec, _ = engine_for(s, store=store)  # type: ignore[arg-type]
    src.set("api", "queue_length", 10.0)
    first = await engine.tick(1000.0)  # acts, then cannot write: the pass still completes
    assert [o.status for o in first.outcomes] == ["done"] and len(rec.calls) == 1
    errors = engine.metrics.registry.get_sample_value(
        "autoscaler_component_errors_total", {"component": "journal"}
    )
    assert errors == 1
    await engine.tick(1015.0)
    store.close()
    reopened = SQLiteStore(tmp_path / "state.db")
    journal = [(r["at"], r["status"]) for r in reopened.query() if r["kind"] == "scale"]
    assert journal == [(1000.0, "done"), (1015.0, "skipped-cooldown")]
    assert any(k.startswith("cooldown:api") for k in reopened.load_state())
    # a restart half a minute later still honours the hour-long cooldown
    again, src2, rec2, _ = engine_for(s, store=reopened)  # type: ignore[arg-type]
    src2.set("api", "queue_length", 10.0)
    report = await again.tick(1030.0)
    assert [o.status for o in report.outcomes] == ["skipped-cooldown"] and rec2.calls == []
    reopened.close()


async def test_a_pause_that_could_not_be_saved_holds_and_is_saved_with_the_next_pass(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    store = _DiskFullOnce(tmp_path / "state.db")
    engine, src, rec, _ = engine_for(settings_factory(), store=store)  # type: ignore[arg-type]
    assert engine.set_paused(True) is False  # no exception for the HTTP handler to turn 500
    src.set("api", "queue_length", 10.0)
    report = await engine.tick(1000.0)
    assert [o.status for o in report.outcomes] == ["skipped-paused"] and rec.calls == []
    store.close()
    reopened = SQLiteStore(tmp_path / "state.db")
    assert reopened.load_state()["service:paused"] is True  # a restart stays paused
    reopened.close()


class _Deploys(RecordingExecutor):
    """A recording executor that reports a deploy and marks it rolled back when asked."""

    def __init__(self) -> None:
        super().__init__("rec")
        self.deploy = TargetState("api", 2, 2, updated_at=1.0, deploy_id="A")

    async def execute(self, action: Action) -> str:
        if isinstance(action, Rollback):
            self.deploy = replace(self.deploy, update_state="rollback_completed")
        return await super().execute(action)

    async def states(self, targets: Any) -> Any:
        return {"api": self.deploy}


async def test_a_rollback_the_bus_skipped_is_asked_for_again_once_it_may_run(
    settings_factory: SettingsFactory,
) -> None:
    s = settings_factory(
        signals={"error_rate": {"max_age": "60s"}},
        bus={"cooldowns": {"rollback": "10m"}},
        policies={
            "rb": {
                "type": "rollback",
                "breaches": [{"signal": "error_rate", "above": 0.05, "for": "0s"}],
                "targets": ["api"],
            }
        },
    )
    src, ex = MemorySource(), _Deploys()
    engine = build_engine(
        s, state_store=MemoryStore(), executors={"rec": ex}, sources=[src], metrics=make_metrics()
    )
    src.set("api", "error_rate", 0.2)

    async def rollbacks(now: float) -> list[str]:
        report = await engine.tick(now)
        return [o.status for o in report.outcomes if isinstance(o.action, Rollback)]

    assert await rollbacks(15.0) == ["done"]  # deploy A
    ex.deploy = TargetState("api", 2, 2, updated_at=100.0, deploy_id="B")  # B is bad too
    assert await rollbacks(115.0) == ["skipped-cooldown"]  # within A's rollback cooldown
    assert await rollbacks(630.0) == ["done"]  # B was never rolled back: now it is
    assert await rollbacks(645.0) == []  # and only once


async def test_a_notice_with_no_notifier_configured_is_decided_once_not_on_every_pass(
    settings_factory: SettingsFactory,
) -> None:
    # bus.notify = [] (the default): nobody can be told, and asking again cannot change that
    s = settings_factory(policies={"rb": {"type": "rollback", "targets": ["api"]}})
    src, ex, store = MemorySource(), _Deploys(), MemoryStore()
    ex.deploy = TargetState("api", 2, 2, updated_at=1.0, deploy_id="A", update_state="paused")
    engine = build_engine(
        s, state_store=store, executors={"rec": ex}, sources=[src], metrics=make_metrics()
    )
    for t in range(5000, 5120, 15):  # the paused update is outside the 30 min window
        await engine.tick(float(t))
    notices = [r for r in store.records if r.kind == "notify"]
    assert [(r.at, r.status) for r in notices] == [(5000.0, "skipped-no-executor")]
    assert "update A is paused" in notices[0].reason


async def test_a_degradation_change_held_by_the_notify_cooldown_is_told_once_it_ends(
    settings_factory: SettingsFactory,
) -> None:
    # level 1 -> 3 is told; 3 -> 4 (emergency, P1) comes 60 s later, inside the 5 min notify
    # cooldown (and dedupe window) of the same dedup key: it used to be lost for good
    s = settings_factory(
        signals={"gpu_up": {"max_age": "60s"}, "vector_store_up": {"max_age": "60s"}},
        bus={"notify": ["rec"], "cooldowns": {"notify": "5m"}},
        policies={
            **{
                name: {
                    "type": "circuit_breaker",
                    "breaker": name,
                    "signal": f"{name}_up",
                    "failure_threshold": 2,
                    "reset_timeout": "1h",
                    "targets": ["api"],
                }
                for name in ("vector_store", "gpu")
            },
            "degradation": {"type": "degradation", "targets": ["api"]},
        },
    )
    engine, src, _, store = engine_for(s)
    for i in range(30):
        t = 1000.0 + 15 * i
        src.set("api", "vector_store_up", 0.0, at=t)
        src.set("api", "gpu_up", 0.0 if i >= 4 else 1.0, at=t)
        await engine.tick(t)
    notices = [r for r in store.records if r.kind == "notify"]
    told = [(r.at, r.params["summary"].split(":")[0]) for r in notices if r.status == "done"]
    assert told == [
        (1030.0, "degradation level 1 -> 3"),
        (1330.0, "degradation level 3 -> 4"),  # when the first one's cooldown ended
    ]
    assert {r.status for r in notices if 1030.0 < r.at < 1330.0} == {"skipped-cooldown"}


def _restart_rule(settings_factory: SettingsFactory) -> Settings:
    """The restart rule with its defaults (backoff 2, 4, 8, 16 s; 3 attempts in 10 min) on
    ``api``; its escalation goes to the recording executor."""
    return settings_factory(
        signals={"probe_failures": {"max_age": "60s"}},
        bus={"notify": ["rec"]},
        policies={"restart": {"type": "restart", "targets": ["api"]}},
    )


async def _failing_probe(engine: Engine, src: MemorySource, t: float) -> None:
    src.set("api", "probe_failures", 5.0, at=t)
    await engine.tick(t)


async def test_restarts_a_pause_held_back_are_no_attempts_and_are_asked_for_once_it_ends(
    settings_factory: SettingsFactory,
) -> None:
    # an operator pauses for two minutes while the probe fails: the bus skips eight restarts;
    # they used to count as attempts, so "3 restarts within 600 s did not help" was paged with
    # none run, and restarts then stopped for the rest of the window
    engine, src, rec, store = engine_for(_restart_rule(settings_factory))
    engine.set_paused(True)
    for t in range(1000, 1120, 15):
        await _failing_probe(engine, src, float(t))
    assert rec.calls == []
    assert [r.kind for r in store.records if r.kind != "hold"] == ["restart"] * 8
    assert {r.status for r in store.records if r.kind == "restart"} == {"skipped-paused"}
    engine.set_paused(False)
    for t in (1120.0, 1135.0, 1150.0, 1165.0):
        await _failing_probe(engine, src, t)
    assert [(a.kind, a.attempt if isinstance(a, Restart) else 0) for a in rec.calls] == [
        ("restart", 1),
        ("restart", 2),
        ("restart", 3),
        ("notify", 0),
    ]
    notify = rec.calls[-1]
    assert isinstance(notify, Notify) and "3 restarts within 600 s did not help" in notify.summary


async def test_a_failed_restart_counts_as_an_attempt_and_a_skipped_one_does_not(
    settings_factory: SettingsFactory,
) -> None:
    # the executor ran and refused: a real attempt that did not help; the paused passes
    # between the first failure and the second ran nothing
    engine, src, rec, store = engine_for(_restart_rule(settings_factory))
    record = rec.execute

    async def refuse_restarts(action: Action) -> str:
        if isinstance(action, Restart):
            rec.calls.append(action)
            raise ExecutorError("service api: task failed to start", temporary=False)
        return await record(action)

    rec.execute = refuse_restarts  # type: ignore[method-assign]
    await _failing_probe(engine, src, 1000.0)
    engine.set_paused(True)
    for t in range(1015, 1105, 15):
        await _failing_probe(engine, src, float(t))
    engine.set_paused(False)
    for t in (1105.0, 1120.0, 1135.0):
        await _failing_probe(engine, src, t)
    acted = [(r.at, r.kind, r.status) for r in store.records if r.kind != "hold"]
    assert acted == [
        (1000.0, "restart", "failed"),
        *[(float(t), "restart", "skipped-paused") for t in range(1015, 1105, 15)],
        (1105.0, "restart", "failed"),
        (1120.0, "restart", "failed"),
        (1135.0, "notify", "done"),
    ]
    assert [a.attempt for a in rec.calls if isinstance(a, Restart)] == [1, 2, 3]


async def test_a_restart_escalation_the_bus_did_not_send_is_sent_once_it_can_be(
    settings_factory: SettingsFactory,
) -> None:
    # three restarts did not help, and the operator paused before the escalation went out:
    # it used to be marked as sent when decided, so nobody was told and restarts stayed
    # stopped for the rest of the window
    engine, src, rec, store = engine_for(_restart_rule(settings_factory))
    for t in (1000.0, 1015.0, 1030.0):
        await _failing_probe(engine, src, t)
    engine.set_paused(True)
    for t in (1045.0, 1060.0):
        await _failing_probe(engine, src, t)
    engine.set_paused(False)
    for t in (1075.0, 1090.0):
        await _failing_probe(engine, src, t)
    notices = [(r.at, r.status) for r in store.records if r.kind == "notify"]
    assert notices == [(1045.0, "skipped-paused"), (1060.0, "skipped-paused"), (1075.0, "done")]
    assert [a.kind for a in rec.calls] == ["restart", "restart", "restart", "notify"]
