"""The live driver on a real clock: APScheduler, time.time, the engine's real forecaster."""

from __future__ import annotations

import asyncio

from autoscaler.engine import TickReport
from autoscaler.forecasts import OnlineProvider
from autoscaler.journal import MemoryStore
from autoscaler.live import LiveDriver, grid_after
from autoscaler.metrics import make_metrics
from autoscaler.service import build_engine
from autoscaler.sources.base import MemorySource
from remediation.recording import RecordingExecutor
from tests.conftest import make_settings

INTERVAL = 1.0


def test_grid_after_is_the_next_multiple_of_the_interval() -> None:
    assert grid_after(1_700_000_007.0, 15.0) == 1_700_000_010.0
    assert grid_after(1_700_000_010.0, 15.0) == 1_700_000_025.0  # strictly after


async def test_passes_run_on_the_grid_and_forecasts_update_instead_of_refitting() -> None:
    s = make_settings(
        service={"interval": f"{INTERVAL}s"},
        http={"enabled": False},
        signals={"queue_length": {"max_age": "60s", "forecast": True, "window": "1m"}},
        forecasting={"model": "holt-winters", "horizon": "5s"},
    )
    src = MemorySource()
    src.set("api", "queue_length", 3.0)
    engine = build_engine(
        s,
        state_store=MemoryStore(),
        executors={"rec": RecordingExecutor("rec")},
        sources=[src],
        metrics=make_metrics(),
    )
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
