"""Forecasts computed ahead in a second process: the same replay, or a clear error."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import autoscaler.ahead as ahead_module
from autoscaler.ahead import AheadError, ForecastsAhead
from autoscaler.config import load
from autoscaler.replay import Series, read_metrics, replay

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def example() -> tuple[object, list[Series]]:
    # a day and a half of two real traces at 30 s, with forecasts and predictive rules
    settings = load(EXAMPLES / "replay.toml")
    assert any(st.forecast for st in settings.signals.values())
    series = read_metrics([EXAMPLES / "data" / "replay_metrics.csv"])
    cut = min(float(s.times[0]) for s in series) + 1.5 * 86400
    return settings, [
        Series(s.target, s.signal, s.times[s.times < cut], s.values[s.times < cut]) for s in series
    ]


async def test_forecasts_made_ahead_give_the_same_replay(example) -> None:
    settings, series = example
    inline = await replay(settings, series, forecast_ahead=False)
    ahead = await replay(settings, series, forecast_ahead=True)
    assert [r.to_dict() for r in ahead.records] == [r.to_dict() for r in inline.records]
    assert any(r.kind == "scale" and r.policy.endswith("_ahead") for r in inline.records)
    np.testing.assert_array_equal(ahead.replicas, inline.replicas)
    assert ahead.forecasts.keys() == inline.forecasts.keys() and inline.forecasts
    for key, trace in inline.forecasts.items():
        for name in ("issued", "mean", "lower", "upper"):
            np.testing.assert_array_equal(getattr(ahead.forecasts[key], name), getattr(trace, name))


async def test_a_failing_worker_stops_the_replay_with_its_traceback(
    example, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, series = example

    def broken(_: object) -> object:
        raise ValueError("no model today")

    monkeypatch.setattr(ahead_module, "make_provider", broken)  # the forked worker sees it
    with pytest.raises(AheadError, match=r"(?s)the forecast worker failed.*no model today"):
        await replay(settings, series, forecast_ahead=True)


def test_a_stream_out_of_step_is_an_error_not_a_difference(example) -> None:
    settings, series = example
    ahead = ForecastsAhead(settings, series, np.array([30.0, 60.0]))
    history = np.zeros((1, 4))
    ahead._stream = iter([(30.0, {"requests_per_second": (("api",), {})})])
    kw = {"step": 30.0, "horizon_steps": 4}
    assert ahead.forecast("requests_per_second", ["api"], history, now=30.0, **kw) == {}
    assert ahead.failure is None
    assert ahead.forecast("requests_per_second", ["api", "search"], history, now=30.0, **kw) == {}
    assert isinstance(ahead.failure, AheadError)
    assert "made for 1 targets, the engine asks for 2" in str(ahead.failure)

    # a tick where neither side forecast (no samples yet) is passed over; one where the
    # worker forecast and the engine did not ask is an error
    entries = {"requests_per_second": (("api",), {})}
    ahead = ForecastsAhead(settings, series, np.array([30.0, 60.0, 90.0]))
    ahead._stream = iter([(30.0, {}), (60.0, entries), (90.0, entries)])
    ahead.forecast("requests_per_second", ["api"], history, now=60.0, **kw)
    assert ahead.failure is None
    ahead._stream = iter([(90.0, entries), (120.0, entries)])
    ahead.forecast("requests_per_second", ["api"], history, now=120.0, **kw)
    assert "forecasts for 90.0 arrived where 120.0 was asked for" in str(ahead.failure)


def test_a_worker_is_forked_only_from_a_process_with_one_thread() -> None:
    # alone (a fresh interpreter, two cores): long runs fork a worker, short ones do not
    code = (
        "import os; os.cpu_count = lambda: 2\n"
        "from autoscaler.ahead import worth_it\n"
        "print(worth_it(10**6), worth_it(10))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    # beside another thread a fork could copy a lock held for good: forecast in process
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not ahead_module.worth_it(10**6)
    finally:
        stop.set()
        other.join()
