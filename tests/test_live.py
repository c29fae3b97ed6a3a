"""The live driver on a real clock: APScheduler, time.time, the engine's real forecaster."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autoscaler.config import Settings
from autoscaler.engine import Engine, TickReport
from autoscaler.forecasts import OnlineProvider
from autoscaler.journal import MemoryStore, SQLiteStore
from autoscaler.live import LiveDriver, grid_after
from autoscaler.metrics import make_metrics
from autoscaler.service import build_engine
from autoscaler.sources.base import MemorySource
from policies.types import Action
from remediation.recording import RecordingExecutor
from tests.conftest import make_settings

INTERVAL = 1.0


def queue_engine(s: Settings) -> Engine:
    """An engine on ``s`` whose target api reads a queue of 3, acting on a recorder."""
    src = MemorySource()
    src.set("api", "queue_length", 3.0)
    return build_engine(
        s,
        state_store=MemoryStore(),
        executors={"rec": RecordingExecutor("rec")},
        sources=[src],
        metrics=make_metrics(),
    )


def test_grid_after_is_the_next_multiple_of_the_interval() -> None:
    assert grid_after(1_700_000_007.0, 15.0) == 1_700_000_010.0
    assert grid_after(1_700_000_010.0, 15.0) == 1_700_000_025.0  # strictly after


async def test_passes_run_on_the_grid_and_forecasts_update_instead_of_refitting() -> None:
    s = make_settings(
        service={"interval": f"{INTERVAL}s"},
        http={"enabled": False},
        signals={"queue_length": {"max_age": "60s", "forecast": True, "window": "10m"}},
        forecasting={"model": "holt-winters", "horizon": "5s"},
    )
    engine = queue_engine(s)
    nows: list[float] = []

    def seen(report: TickReport | None, error: BaseException | None) -> None:
        assert error is None and report is not None
        nows.append(report.now)
        if len(nows) == 5:
            driver.stop_event.set()

    driver = LiveDriver(engine=engine, settings=s, on_tick=[seen])
    await asyncio.wait_for(driver.run(), timeout=30)
    # after the first pass (at once), each pass starts just after a grid time, never
    # half-way between two, so consecutive passes fill consecutive columns of the windows
    offsets = [(t / INTERVAL - round(t / INTERVAL)) * INTERVAL for t in nows[1:]]
    assert all(0 <= off < 0.25 for off in offsets), offsets
    ticks = [round(t / INTERVAL) for t in nows[1:]]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks
    # and the forecaster, told apart passes by their grid tick, refitted only on the first
    assert isinstance(engine.forecaster, OnlineProvider)
    assert engine.forecaster.refits == 1


async def test_passes_go_on_after_the_wall_clock_is_set_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """APScheduler times the passes on the wall clock. Set back by an hour, its next pass
    is an hour away: here the job is moved an hour ahead, as such a step leaves it. The
    passes must resume within a few intervals, not an hour later."""
    s = make_settings(service={"interval": f"{INTERVAL}s"}, http={"enabled": False})
    engine = queue_engine(s)
    passes: list[float] = []
    stepped: list[float] = []

    def seen(report: TickReport | None, error: BaseException | None) -> None:
        passes.append(time.monotonic())
        scheduler = driver._scheduler
        if len(passes) == 2 and scheduler is not None:
            later = datetime.now(UTC) + timedelta(hours=1)
            scheduler.modify_job("tick", next_run_time=later)
            stepped.append(time.monotonic())
        if len(passes) == 4:
            driver.stop_event.set()

    driver = LiveDriver(engine=engine, settings=s, on_tick=[seen])
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(driver.run(), timeout=30)
    assert stepped and passes[2] - stepped[0] < 10 * INTERVAL
    assert any("the clock went back" in r.getMessage() for r in caplog.records)


async def test_a_stop_during_a_pass_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM while a pass runs is a clean stop: the pass finishes and the service exits 0.
    The scheduler's shutdown cancels the job awaiting the pass; that was logged as an ERROR
    with a traceback ("Job LiveDriver._job raised an exception"), which paged on every
    deploy that stopped the service during a pass waiting on a slow source."""
    s = make_settings(service={"interval": f"{INTERVAL}s"}, http={"enabled": False})
    engine = queue_engine(s)
    passes: list[float] = []

    def stop_in_the_second_pass(report: TickReport | None, error: BaseException | None) -> None:
        passes.append(engine.now)
        if len(passes) == 2:  # the hook runs inside the pass: the interval job awaits it
            driver.stop_event.set()

    driver = LiveDriver(engine=engine, settings=s, on_tick=[stop_in_the_second_pass])
    with caplog.at_level(logging.INFO):
        await asyncio.wait_for(driver.run(), timeout=30)
        await asyncio.sleep(0.1)  # the cancelled job's end is logged on a later loop turn
    assert len(passes) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


class _SlowToAnswer(RecordingExecutor):
    """Carries the action out (the orchestrator has it), then answers late."""

    async def execute(self, action: Action) -> str:
        out = await super().execute(action)
        await asyncio.sleep(30)
        return out


async def test_a_stop_during_an_executor_call_saves_its_cooldown_and_journals_it(
    tmp_path: Path,
) -> None:
    """The pass outlives the shutdown timeout and is cut short: the action it was carrying
    out is journalled as interrupted and its cooldown saved, so a restart (a new engine on
    the same SQLite file) does not scale again at once."""
    s = make_settings(
        service={"interval": "1s", "state_path": str(tmp_path / "state.db"),
                 "shutdown_timeout": "0.5s"},
        http={"enabled": False},
        bus={"cooldowns": {"scale_up": "10m"}},
        policies={"q": {"type": "step", "signal": "queue_length", "above": 5, "for": "0s",
                        "below": 1}},
    )  # fmt: skip
    src = MemorySource()
    src.set("api", "queue_length", 10.0)
    calls: list[Action] = []
    for _ in range(2):
        slow = _SlowToAnswer("rec")
        slow.calls = calls
        engine = build_engine(s, executors={"rec": slow}, sources=[src], metrics=make_metrics())
        driver = LiveDriver(engine=engine, settings=s)
        run = asyncio.ensure_future(driver.run())
        await asyncio.sleep(1.5)  # the first pass runs at once: the executor is called
        driver.stop_event.set()
        await asyncio.wait_for(run, timeout=10)
    assert [c.kind for c in calls] == ["scale"]  # not again after the restart
    store = SQLiteStore(tmp_path / "state.db")
    try:
        statuses = [r["status"] for r in store.query(limit=100) if r["kind"] == "scale"]
    finally:
        store.close()
    assert statuses[0] == "interrupted" and "skipped-cooldown" in statuses[1:]


class _StuckRestart(RecordingExecutor):
    """Restarts in a worker thread, as the swarm executor does, and hangs there until
    ``release``: the bus's timeout cannot stop it."""

    cancellable = False

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()

    async def execute(self, action: Action) -> str:
        out = await super().execute(action)
        await asyncio.to_thread(self.release.wait, 30)  # bounded: a broken test ends
        return out


async def test_a_timed_out_restart_still_running_at_stop_is_journalled_and_keeps_its_cooldown(
    tmp_path: Path,
) -> None:
    """The bus gave up waiting for a restart (it may still happen); the pass ended, then the
    service stops while the call still runs: it is journalled as interrupted and its cooldown
    saved, so a restarted service does not restart the target again at once."""
    s = make_settings(
        service={"interval": "1s", "state_path": str(tmp_path / "state.db"),
                 "shutdown_timeout": "0.5s"},
        http={"enabled": False},
        bus={"executor_timeout": "0.2s", "cooldowns": {"restart": "10m"}},
        policies={"r": {"type": "restart", "signal": "probe_failures", "failures": 1}},
    )  # fmt: skip
    src = MemorySource()
    src.set("api", "probe_failures", 5.0)
    calls: list[Action] = []
    stuck: list[_StuckRestart] = []
    try:
        for _ in range(2):
            ex = _StuckRestart("rec")
            ex.calls = calls
            stuck.append(ex)
            engine = build_engine(s, executors={"rec": ex}, sources=[src], metrics=make_metrics())
            driver = LiveDriver(engine=engine, settings=s)
            run = asyncio.ensure_future(driver.run())
            await asyncio.sleep(1.5)  # the first pass restarts at once, and times out
            driver.stop_event.set()
            await asyncio.wait_for(run, timeout=10)
    finally:
        for ex in stuck:
            ex.release.set()
    assert [c.kind for c in calls] == ["restart"]  # not again after the restart
    store = SQLiteStore(tmp_path / "state.db")
    try:
        rows = [r for r in store.query(limit=100) if r["kind"] == "restart"]
    finally:
        store.close()
    statuses = [r["status"] for r in rows]
    assert statuses[:2] == ["failed", "interrupted"], statuses
    assert "may still be carried out" in rows[0]["detail"]
    assert "skipped-cooldown" in statuses[2:]
