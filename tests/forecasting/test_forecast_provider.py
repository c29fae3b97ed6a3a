"""The engine-facing provider: online per signal, refit when it must, never raising."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from autoscaler.config import ForecastSettings, from_mapping
from autoscaler.errors import ConfigError
from autoscaler.forecasts import OnlineProvider, make_provider
from forecasting import make_model
from forecasting.types import Forecast

STEP = 15.0
NOW = 1_700_000_000.0


def history(n: int, t: int, *, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = 20 + 5 * np.sin(np.arange(t) / 40.0)
    return base[None, :] * rng.uniform(0.5, 2.0, (n, 1)) + rng.normal(0, 0.5, (n, t))


def test_forecasts_cover_every_target_at_the_tick_grid() -> None:
    provider = make_provider(ForecastSettings())
    out = provider.forecast(
        "queue_length", ["api", "worker"], history(2, 200), step=STEP, horizon_steps=20, now=NOW
    )
    assert set(out) == {"api", "worker"}
    f = out["api"]
    np.testing.assert_allclose(f.times, NOW + STEP * np.arange(1, 21))
    assert f.issued_at == NOW
    assert np.all(f.lower <= f.mean) and np.all(f.mean <= f.upper)
    assert f.model.startswith("auto:")
    assert f.max_upper(NOW + 60) >= f.at(NOW + 60)[0]


def test_a_forecast_is_read_at_the_first_step_at_or_after_a_time() -> None:
    times = NOW + STEP * np.arange(1, 4)
    values = np.array([1.0, 2.0, 3.0])
    f = Forecast(NOW, times, values, values - 0.5, values + 0.5, "m")
    assert f.at(NOW) == (1.0, 0.5, 1.5)  # before the horizon: the first step
    assert f.at(NOW + STEP) == (1.0, 0.5, 1.5)  # on a step: that step
    assert f.at(NOW + STEP + 1e-10)[0] == 1.0  # within the tolerance of a step
    assert f.at(NOW + STEP + 1)[0] == 2.0  # past it: the next one
    assert f.at(NOW + 100 * STEP)[0] == 3.0  # beyond the horizon: the last
    assert f.at(float("nan"))[0] == 3.0  # NaN sorts last, as numpy's searchsorted has it
    assert f.at(float("-inf"))[0] == 1.0


def test_one_new_column_is_an_online_update_that_matches_a_full_refit() -> None:
    y = history(3, 400)
    provider = OnlineProvider(ForecastSettings(model="holt-winters"))
    for j in range(300, 400):  # the engine's window: the last 300 columns, sliding
        now = NOW + STEP * j
        out = provider.forecast(
            "p95", ["a", "b", "c"], y[:, j - 299 : j + 1], step=STEP, horizon_steps=8, now=now
        )
    assert provider.refits == 1
    # the same stream fitted at once: the online state saw columns 1..399 exactly once
    model = make_model(
        "holt-winters",
        horizon=8,
        nonnegative=True,
        min_history=8,
        max_gap=300.0,
        reselect_every=40,
        season=86400.0,
    ).fit(y[:, 1:400], step=STEP, end=NOW + STEP * 399)
    mean, lower, upper = model.predict()
    np.testing.assert_allclose(np.stack([out[t].mean for t in "abc"]), mean, rtol=1e-9)
    np.testing.assert_allclose(np.stack([out[t].lower for t in "abc"]), lower, rtol=1e-9)
    np.testing.assert_allclose(np.stack([out[t].upper for t in "abc"]), upper, rtol=1e-9)


def test_changed_targets_a_new_horizon_or_a_clock_gone_back_refit_from_history() -> None:
    y = history(2, 300)
    provider = OnlineProvider(ForecastSettings())
    kw = {"step": STEP, "horizon_steps": 4}
    provider.forecast("s", ["a", "b"], y[:, :200], now=NOW, **kw)
    provider.forecast("s", ["a", "b"], y[:, 1:201], now=NOW + STEP, **kw)
    assert provider.refits == 1
    out = provider.forecast("s", ["b"], y[1:, 2:202], now=NOW + 2 * STEP, **kw)
    assert provider.refits == 2 and set(out) == {"b"}
    provider.forecast("s", ["b"], y[1:, 2:202], now=NOW + 2 * STEP, step=STEP, horizon_steps=6)
    assert provider.refits == 3  # a new horizon
    provider.forecast("s", ["b"], y[1:, 1:201], now=NOW + STEP, step=STEP, horizon_steps=6)
    assert provider.refits == 4  # the clock went back a tick
    provider.forecast("s", ["b"], y[1:, 100:300], now=NOW + 300 * STEP, step=STEP, horizon_steps=6)
    assert provider.refits == 5  # a gap longer than the window: nothing to catch up from


def test_missed_ticks_are_caught_up_column_by_column_not_refitted() -> None:
    # the store leaves a missed tick's column NaN; the provider feeds it, then the new one
    y = history(2, 260)
    y[:, 210:212] = np.nan
    kw = {"step": STEP, "horizon_steps": 4}
    every, skipping = (OnlineProvider(ForecastSettings()) for _ in range(2))
    for j in range(199, 260):
        now = NOW + STEP * j
        a = every.forecast("s", ["a", "b"], y[:, j - 199 : j + 1], now=now, **kw)
        if j not in (210, 211):  # two passes missed
            b = skipping.forecast("s", ["a", "b"], y[:, j - 199 : j + 1], now=now, **kw)
    assert every.refits == skipping.refits == 1
    for t in "ab":
        np.testing.assert_array_equal(a[t].mean, b[t].mean)
        np.testing.assert_array_equal(a[t].upper, b[t].upper)


@pytest.mark.parametrize("columns", [1, 2])
def test_a_window_of_a_tick_or_two_is_updated_online_and_gets_forecasts(columns: int) -> None:
    # signals.*.window below two intervals (or "0s", or backtest --history 0): the store
    # hands over one or two columns, every one of them new. Refitting from those alone never
    # reached min_history, so predictive rules held on "no forecast" for ever.
    y = history(2, 40)
    provider = OnlineProvider(ForecastSettings(model="holt-winters"))
    for j in range(columns - 1, 40):
        window = y[:, j - columns + 1 : j + 1]
        out = provider.forecast(
            "s", ["a", "b"], window, step=STEP, horizon_steps=4, now=NOW + STEP * j
        )
    assert provider.refits == 1
    assert set(out) == {"a", "b"}


def test_a_missed_pass_whose_column_is_still_in_the_window_is_caught_up_not_refitted() -> None:
    y = history(2, 40)
    provider = OnlineProvider(ForecastSettings(model="holt-winters"))
    for j in (*range(1, 30), 31):  # the pass of tick 30 missed: both columns of 31's are new
        provider.forecast(
            "s", ["a", "b"], y[:, j - 1 : j + 1], step=STEP, horizon_steps=4, now=NOW + STEP * j
        )
    assert provider.refits == 1


def test_passes_a_few_milliseconds_off_the_grid_update_and_do_not_refit() -> None:
    # a live pass starts when its timer fires, a little after the scheduled time
    y = history(2, 260)
    kw = {"step": STEP, "horizon_steps": 4}
    exact, late = (OnlineProvider(ForecastSettings()) for _ in range(2))
    jitter = np.random.default_rng(1).uniform(0.0, 0.008, 260)
    for j in range(199, 260):
        a = exact.forecast("s", ["a", "b"], y[:, j - 199 : j + 1], now=NOW + STEP * j, **kw)
        now = NOW + STEP * j + jitter[j]
        b = late.forecast("s", ["a", "b"], y[:, j - 199 : j + 1], now=now, **kw)
    assert late.refits == 1
    np.testing.assert_array_equal(a["a"].mean, b["a"].mean)
    np.testing.assert_allclose(b["a"].times, now + STEP * np.arange(1, 5))  # timed from now


def test_signals_keep_separate_state() -> None:
    provider = OnlineProvider(ForecastSettings())
    a = provider.forecast("a", ["x"], history(1, 100), step=STEP, horizon_steps=3, now=NOW)
    b = provider.forecast("b", ["x"], 10 * history(1, 100), step=STEP, horizon_steps=3, now=NOW)
    assert provider.refits == 2
    assert b["x"].mean[0] > 5 * a["x"].mean[0]


def test_the_same_tick_twice_returns_the_same_forecasts() -> None:
    provider = OnlineProvider(ForecastSettings())
    y = history(1, 100)
    first = provider.forecast("s", ["x"], y, step=STEP, horizon_steps=3, now=NOW)
    again = provider.forecast("s", ["x"], y, step=STEP, horizon_steps=3, now=NOW)
    assert again["x"] is first["x"] and provider.refits == 1
    # a second pass later in the same tick (the first after a start, then the first on the
    # grid): same model, new timing
    assert round((NOW + 1.0) / STEP) == round(NOW / STEP)
    later = provider.forecast("s", ["x"], y, step=STEP, horizon_steps=3, now=NOW + 1.0)
    assert provider.refits == 1
    np.testing.assert_array_equal(later["x"].mean, first["x"].mean)
    np.testing.assert_allclose(later["x"].times, first["x"].times + 1.0)


def test_a_target_back_after_a_gap_longer_than_max_gap_is_forecast_from_its_new_level() -> None:
    # ~10, silent for 10 minutes (> max_gap), back at ~100: load arrived while it was down
    rng = np.random.default_rng(0)
    y = np.concatenate(
        [10 + rng.normal(0, 1, 400), np.full(40, np.nan), 100 + rng.normal(0, 1, 12)]
    )
    provider = OnlineProvider(ForecastSettings())
    for j in range(300, y.size):  # the engine's window: the last 300 columns, sliding
        out = provider.forecast(
            "q", ["api"], y[None, j - 299 : j + 1], step=STEP, horizon_steps=20, now=NOW + STEP * j
        )
        if j >= 440:
            f = out["api"]
            assert np.all(np.abs(f.mean - 100) < 5) and np.all(f.upper > 95), (j, f.mean)
    assert provider.refits == 1


def test_targets_without_enough_data_get_no_forecast() -> None:
    y = history(4, 100)
    y[0] = np.nan  # never reported
    y[1, :-3] = np.nan  # three samples: fewer than min_history
    y[2, -30:] = np.nan  # silent for 450 s > max_gap
    out = OnlineProvider(ForecastSettings()).forecast(
        "s", ["a", "b", "c", "d"], y, step=STEP, horizon_steps=3, now=NOW
    )
    assert set(out) == {"d"}


@pytest.mark.parametrize(
    ("targets", "hist", "step", "steps"),
    [
        (["a"], np.ones((2, 10)), STEP, 3),  # rows do not match targets
        (["a"], np.ones((1, 2, 3)), STEP, 3),
        (["a"], np.ones((1, 10)), 0.0, 3),
        (["a"], np.ones((1, 10)), STEP, 0),
        ([], np.ones((0, 10)), STEP, 3),
        (["a"], np.ones((1, 0)), STEP, 3),
        (["a"], np.full((1, 10), np.inf), STEP, 3),
        (["a"], np.array([[np.nan, -5.0, 1e308, -1e308, 0.0]]), STEP, 3),
    ],
)
def test_unusable_calls_answer_without_raising(
    targets: list[str], hist: np.ndarray, step: float, steps: int
) -> None:
    out = OnlineProvider(ForecastSettings()).forecast(
        "s", targets, hist, step=step, horizon_steps=steps, now=NOW
    )
    for f in out.values():
        assert np.isfinite(f.mean).all() and np.isfinite(f.upper).all()


def test_an_unknown_model_is_a_config_error_at_its_key() -> None:
    with pytest.raises(ConfigError, match=r"forecasting\.model: unknown model 'prophet'"):
        from_mapping({"forecasting": {"model": "prophet"}})


def test_the_reference_config_documents_every_forecasting_setting() -> None:
    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "config.toml").read_text())
    table = data["forecasting"]
    assert set(table) == set(ForecastSettings.__dataclass_fields__)
    settings = from_mapping({"forecasting": table}).forecasting
    assert settings.horizon == 300.0 and settings.model == "auto"
    make_provider(settings)


def test_outlier_clipping_follows_the_config() -> None:
    spike = history(1, 60)
    spike[0, -1] = 1000.0  # one wild sample after an ordinary hour
    seen = {}
    for clip in (5.0, 0.0):
        provider = OnlineProvider(ForecastSettings(model="persistence", clip=clip))
        out = provider.forecast("s", ["x"], spike, step=STEP, horizon_steps=1, now=NOW)
        seen[clip] = float(out["x"].mean[0])
    assert seen[0.0] == 1000.0  # clip = 0: the sample is taken as it is
    assert seen[5.0] < 1000.0  # clipped towards the forecast
