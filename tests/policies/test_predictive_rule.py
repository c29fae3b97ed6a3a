"""Predictive scaling: the rules on the forecast at lead time, the observation as floor."""

from __future__ import annotations

import csv
import math
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from policy_kit import ctx, flat_forecast, journalable, one_sentence

from forecasting.types import Forecast
from policies.base import Bounds
from policies.predictive import PredictivePolicy, PredictiveSpec
from policies.step import StepPolicy, StepSpec
from policies.types import Scale


def _data_dir() -> Path:
    """``<repo>/../shared/data`` (the main checkout's layout), else the nearest ancestor's
    ``shared/data`` (a worktree one level deeper)."""
    root = Path(__file__).resolve().parents[2]
    candidates = [root / ".." / "shared" / "data", *(p / "shared" / "data" for p in root.parents)]
    return next((c for c in candidates if c.is_dir()), candidates[0])


TAXI = _data_dir() / "nab" / "data" / "realKnownCause" / "nyc_taxi.csv"
NOW = 1_000_000.0
STEP = PredictiveSpec(signal="queue_length", mode="step", above=5, scale_up_step=2, max_age=120)
TRACK = PredictiveSpec(signal="rps", mode="track", target=100.0, kind="total", max_age=120)


def _one(policy, **kw):
    (d,) = policy.evaluate(ctx(NOW, **kw))
    assert one_sentence(d.reason), d.reason
    assert journalable(d)
    return d


def test_forecast_upper_bound_above_threshold_scales_up_ahead_of_load():
    fc = flat_forecast(NOW, mean=4.0, upper=7.0)
    d = _one(
        PredictivePolicy("ahead", STEP),
        values={"queue_length": 2.0},
        forecasts={"queue_length": fc},
    )
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 6
    assert d.inputs["forecast"]["upper"] == 7.0
    assert "forecast upper bound 7 of queue_length in 60 s > 5" in d.reason


def test_a_calm_forecast_has_no_opinion_so_reactive_rules_decide_scale_in():
    fc = flat_forecast(NOW, mean=1.0, upper=2.0)
    d = _one(
        PredictivePolicy("ahead", STEP),
        values={"queue_length": 1.0},
        forecasts={"queue_length": fc},
    )
    assert d.is_hold
    assert d.recommendation is None


def test_the_current_observation_is_a_floor_in_step_mode():
    fc = flat_forecast(NOW, mean=1.0, upper=2.0)
    d = _one(
        PredictivePolicy("ahead", STEP),
        values={"queue_length": 9.0},
        forecasts={"queue_length": fc},
    )
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 6


def test_lead_time_defaults_to_the_targets_startup_delay():
    times = np.array([NOW + 60, NOW + 120, NOW + 180])
    fc = Forecast(
        NOW, times, np.array([1.0, 1.0, 9.0]), np.zeros(3), np.array([2.0, 2.0, 9.0]), "test"
    )
    policy = PredictivePolicy("ahead", STEP)
    short = _one(
        policy,
        values={"queue_length": 1.0},
        forecasts={"queue_length": fc},
        bounds=Bounds(2, 10, 60.0),
    )
    long = _one(
        policy,
        values={"queue_length": 1.0},
        forecasts={"queue_length": fc},
        bounds=Bounds(2, 10, 180.0),
    )
    assert short.is_hold
    assert isinstance(long.action, Scale)


@pytest.mark.parametrize(
    ("forecast", "why"),
    [
        (None, "no forecast of queue_length"),
        (flat_forecast(NOW - 600, mean=9.0, upper=12.0), "forecast of queue_length is 600 s old"),
        (flat_forecast(NOW, mean=9.0, upper=12.0, horizon=30), "does not reach 60 s ahead"),
        (flat_forecast(NOW, mean=math.nan, upper=math.nan), "is not finite"),
    ],
)
def test_stale_missing_or_broken_forecasts_hold(forecast, why):
    forecasts = {} if forecast is None else {"queue_length": forecast}
    d = _one(PredictivePolicy("ahead", STEP), values={"queue_length": 1.0}, forecasts=forecasts)
    assert d.is_hold
    assert d.reason.startswith("stale:")
    assert why in d.reason
    assert d.recommendation == 4


def test_track_mode_sizes_for_the_forecast_upper_bound():
    fc = flat_forecast(NOW, mean=700.0, upper=850.0)
    d = _one(PredictivePolicy("ahead", TRACK), values={"rps": 400.0}, forecasts={"rps": fc})
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 9
    assert (d.inputs["need_now"], d.inputs["need_ahead"]) == (4, 9)


def test_track_mode_never_scales_in_below_what_is_needed_now():
    fc = flat_forecast(NOW, mean=50.0, upper=80.0)
    d = _one(
        PredictivePolicy("ahead", TRACK), values={"rps": 600.0}, forecasts={"rps": fc}, replicas=8
    )
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 6  # need now: ceil(600 / 100), not the forecast's 1


def test_track_mode_scales_in_when_now_and_forecast_are_both_low():
    fc = flat_forecast(NOW, mean=150.0, upper=190.0)
    d = _one(
        PredictivePolicy("ahead", TRACK), values={"rps": 150.0}, forecasts={"rps": fc}, replicas=8
    )
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 2


def test_invalid_predictive_specs_are_rejected():
    with pytest.raises(ValueError):
        PredictiveSpec(mode="track", target=0.0)
    with pytest.raises(ValueError):
        PredictiveSpec(scale_up_step=0)


# --- a real ramp: NYC taxi demand on weekday mornings ---------------------------------


def _taxi() -> tuple[np.ndarray, np.ndarray]:
    with TAXI.open(encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    t = np.array([datetime.fromisoformat(r[0]).replace(tzinfo=UTC).timestamp() for r in rows])
    return t, np.array([float(r[1]) for r in rows])


def _linear_forecast(t: np.ndarray, v: np.ndarray, i: int, *, lead: float) -> Forecast:
    """Naive linear extrapolation of the last four samples (two hours); the interval is
    two RMSEs of the fit either side."""
    x, y = t[i - 3 : i + 1] - t[i], v[i - 3 : i + 1]
    slope, intercept = np.polyfit(x, y, 1)
    rmse = float(np.sqrt(np.mean((slope * x + intercept - y) ** 2)))
    times = t[i] + np.arange(1800.0, lead + 1, 1800.0)
    mean = slope * (times - t[i]) + intercept
    return Forecast(t[i], times, mean, mean - 2 * rmse, mean + 2 * rmse, "linear")


def _first_scale_up(policy, t, v, idx, *, lead: float) -> float | None:
    for i in idx:
        fc = _linear_forecast(t, v, i, lead=lead)
        c = ctx(
            float(t[i]),
            values={"trips": float(v[i])},
            forecasts={"trips": fc},
            replicas=2,
            bounds=Bounds(2, 10, lead),
        )
        (d,) = policy.evaluate(c)
        if isinstance(d.action, Scale):
            return float(t[i])
    return None


def test_predictive_scales_up_at_least_the_lead_time_before_reactive_on_taxi_mornings():
    if not TAXI.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"recorded data not found at {TAXI}")
        pytest.skip(f"recorded data not found at {TAXI}")
    t, v = _taxi()
    lead = 3600.0  # at 30-minute samples: replicas need two samples to become ready
    capacity = 15000.0  # trips per 30 minutes the current replicas absorb
    reactive = StepPolicy("reactive", StepSpec(signal="trips", above=capacity, for_=0))
    predictive = PredictivePolicy(
        "predictive",
        PredictiveSpec(signal="trips", mode="step", above=capacity, lead_time=lead, max_age=60),
    )
    mornings = 0
    for day in range(1, 15):
        start = datetime(2014, 7, day, 3, tzinfo=UTC)
        if start.weekday() >= 5:
            continue
        idx = np.where((t >= start.timestamp()) & (t <= start.timestamp() + 7 * 3600))[0]
        when_reactive = _first_scale_up(reactive, t, v, idx, lead=lead)
        when_predictive = _first_scale_up(predictive, t, v, idx, lead=lead)
        if when_reactive is None:
            continue  # 4 July, a holiday: no morning rush
        assert when_predictive is not None, start
        assert when_predictive > t[idx[0]], "the night itself must not look like a ramp"
        assert when_reactive - when_predictive >= lead, start
        mornings += 1
    assert mornings == 9
