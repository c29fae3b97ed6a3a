"""Each model recovers a known signal; the chooser picks the family built to win."""

from __future__ import annotations

import numpy as np
import pytest
from forecast_data import nab_slice
from sklearn.linear_model import HuberRegressor, Ridge

from forecasting import (
    Auto,
    HoltWinters,
    Persistence,
    RobustTrend,
    SeasonalChange,
    SeasonalNaive,
    backtest,
    make_model,
)
from forecasting.errors import ForecastError
from forecasting.evaluation import coverage, mae
from forecasting.registry import MODEL_TYPES

STEP = 300.0
DAY = 86400.0


def daily(days: int, *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(days * DAY / STEP)) * STEP
    rng = np.random.default_rng(seed)
    return 50 + 20 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, noise, t.size)


def test_persistence_repeats_the_last_valid_value() -> None:
    y = np.array([[1.0, 2.0, 3.0, np.nan, np.nan]])
    mean, lower, upper = Persistence(horizon=3).fit(y).predict()
    assert mean.tolist() == [[3.0, 3.0, 3.0]]
    assert np.all(lower <= mean) and np.all(mean <= upper)


def test_seasonal_naive_repeats_the_value_one_season_earlier() -> None:
    y = daily(3)[None, :]
    model = SeasonalNaive(horizon=12).fit(y[:, :-12], step=STEP)
    mean, _, _ = model.predict()
    np.testing.assert_allclose(mean[0], y[0, -12:], atol=1e-9)


def test_seasonal_naive_falls_back_to_persistence_on_short_history() -> None:
    y = np.array([[4.0, 5.0, 6.0]])
    mean, _, _ = SeasonalNaive(horizon=2).fit(y, step=STEP).predict()
    assert mean.tolist() == [[6.0, 6.0]]


def test_seasonal_change_moves_todays_level_as_yesterday_moved() -> None:
    # Two days of a step series: 100 until 06:00, then 300 (x3), with a small wiggle so
    # that typical errors are not zero. Today runs at half the level: the change model
    # predicts the step at the right time and to today's level.
    t = np.arange(int(2 * DAY / STEP)) * STEP
    base = np.where((t % DAY) < 6 * 3600, 100.0, 300.0)
    wiggle = np.where(np.arange(t.size) % 2 == 0, 1.0, -1.0)
    y = np.where(t < DAY, base, base / 2) + wiggle
    history = y[None, : int((DAY + 6 * 3600) / STEP)]  # up to the sample before the step
    for clip in (None, 5.0):  # clipping softens the step's first sample; the season does not
        model = SeasonalChange(horizon=2, clip=clip).fit(history, step=STEP)
        np.testing.assert_allclose(model.predict()[0][0], [150.0, 150.0], rtol=0.05)
    naive = SeasonalNaive(horizon=2, clip=None).fit(history, step=STEP)
    np.testing.assert_allclose(naive.predict()[0][0], [300.0, 300.0], rtol=0.05)  # yesterday's


def test_seasonal_change_is_persistence_where_the_past_says_nothing() -> None:
    y = np.array([[4.0, 5.0, 6.0]])  # less than a season
    assert SeasonalChange(horizon=2).fit(y, step=STEP).predict()[0].tolist() == [[6.0, 6.0]]
    t = np.arange(int(2 * DAY / STEP)) * STEP
    zeros = np.where(t < DAY, 0.0, 7.0)  # yesterday was all zero: no ratio to apply
    mean, _, _ = SeasonalChange(horizon=3, clip=None).fit(zeros[None, :], step=STEP).predict()
    assert mean.tolist() == [[7.0, 7.0, 7.0]]


def test_holt_winters_recovers_a_linear_trend() -> None:
    rng = np.random.default_rng(3)
    y = 10 + 0.5 * np.arange(600) + rng.normal(0, 0.2, 600)
    model = HoltWinters(horizon=12).fit(y[None, :-12], step=STEP)
    mean, _, _ = model.predict()
    truth = 10 + 0.5 * np.arange(588, 600)
    assert np.max(np.abs(mean[0] - truth)) < 2.0
    assert model.beta_[model.choice_[0]] > 0  # a trend candidate was chosen


def test_holt_winters_recovers_a_daily_season() -> None:
    y = daily(5, noise=0.5)
    h = 36  # three hours ahead
    model = HoltWinters(horizon=h).fit(y[None, :-h], step=STEP)
    assert model.season_on_
    mean, lower, upper = model.predict()
    assert mae(y[None, -h:], mean) < 1.5  # the swing is ±20
    assert model.gamma_[model.choice_[0]] > 0
    assert coverage(y[None, -h:], lower, upper) > 0.7


def test_holt_winters_stays_non_seasonal_before_two_seasons() -> None:
    model = HoltWinters(horizon=4).fit(daily(1.5)[None, :], step=STEP)
    assert not model.season_on_
    assert model.gamma_[model.choice_[0]] == 0


def test_holt_winters_bins_a_season_on_a_fine_grid() -> None:
    step = 15.0
    t = np.arange(int(2.2 * DAY / step)) * step
    y = 50 + 20 * np.sin(2 * np.pi * t / DAY)
    model = HoltWinters(horizon=20, max_season_bins=288).fit(y[None, :], step=step)
    assert model.season_.shape[-1] == 288  # 5-minute bins, not 5760 values per series
    assert model.season_on_


def test_robust_trend_recovers_a_ramp_despite_outliers() -> None:
    rng = np.random.default_rng(5)
    y = 3 + 0.2 * np.arange(100) + rng.normal(0, 0.3, 100)
    y[[70, 80, 90]] += 500  # spikes
    model = RobustTrend(horizon=10, window=24 * STEP, refit_interval=0, clip=None)
    mean, _, _ = model.fit(y[None, :], step=STEP).predict()
    truth = 3 + 0.2 * np.arange(100, 110)
    assert np.max(np.abs(mean[0] - truth)) < 1.5


@pytest.mark.parametrize("offset", range(4))
def test_robust_trend_slope_is_not_tilted_by_two_absurd_samples(offset: int) -> None:
    # the window is thinned to every 4th sample: at some phases both samples are kept
    rng = np.random.default_rng(0)
    y = 50 + rng.normal(0, 1.0, 560)
    y[500 + offset : 502 + offset] = 1e12
    model = RobustTrend(horizon=20, clip=None).fit(y[None, :], step=15.0)
    assert abs(model.coef_[0, 1]) < 5.0  # per window length: the series is flat
    mean, _, _ = model.predict()
    np.testing.assert_allclose(mean[0], 50.0, atol=5.0)


def test_robust_trend_with_harmonics_keeps_forecasting_after_each_update() -> None:
    # A window of at least one season turns the time-of-day harmonics on; the update path
    # evaluates them for all series at once (it used to fail on their shapes).
    season = 48 * STEP
    t = np.arange(200)
    y = 50 + 10 * np.sin(2 * np.pi * t / 48)[None, :] + np.arange(3)[:, None]
    model = RobustTrend(horizon=6, window=2 * season, season=season, refit_interval=0)
    model.fit(y[:, :150], step=STEP)
    assert model.use_harmonics_
    for j in range(150, 200):
        model.update(y[:, j])
    mean, lower, upper = model.predict()
    truth = 50 + 10 * np.sin(2 * np.pi * np.arange(200, 206) / 48)[None, :] + np.arange(3)[:, None]
    assert np.all(np.isfinite(mean)) and np.all(lower <= mean) and np.all(mean <= upper)
    assert np.max(np.abs(mean - truth)) < 1.0


def test_robust_trend_without_outliers_matches_scikit_learn_ridge() -> None:
    rng = np.random.default_rng(6)
    y = 7 - 0.3 * np.arange(40) + rng.normal(0, 1.0, 40)
    model = RobustTrend(horizon=1, window=40 * STEP, refit_interval=0, huber_k=1e12, ridge=0.01)
    model.fit(y[None, :], step=STEP)
    x = (np.arange(40) - 39) * STEP / model.span_
    ref = Ridge(alpha=0.01 * 40).fit(x[:, None], y)
    np.testing.assert_allclose(model.coef_[0], [ref.intercept_, ref.coef_[0]], rtol=1e-6)


def test_robust_trend_slope_agrees_with_scikit_learn_huber() -> None:
    rng = np.random.default_rng(7)
    y = 2 + 0.5 * np.arange(60) + rng.normal(0, 1.0, 60)
    y[[10, 30, 50]] -= 80
    model = RobustTrend(horizon=1, window=60 * STEP, refit_interval=0, ridge=0.0, iterations=20)
    model.fit(y[None, :], step=STEP)
    x = (np.arange(60) - 59) * STEP / model.span_
    ref = HuberRegressor(epsilon=1.35, alpha=0.0).fit(x[:, None], y)
    assert model.coef_[0, 1] == pytest.approx(ref.coef_[0], rel=0.05)


@pytest.mark.parametrize(
    ("data", "family"),
    [
        ("square_wave", "seasonal-naive"),
        ("noise", "holt-winters"),
        ("random_walk", "persistence"),
        ("steep_ramp", "robust-trend"),
    ],
)
def test_auto_picks_the_family_the_data_favours(data: str, family: str) -> None:
    rng = np.random.default_rng(1)
    n = 288 * 4
    t = np.arange(n) * STEP
    y = {
        "square_wave": np.where(t % DAY < DAY / 2, 10.0, 30.0),
        "noise": 20 + rng.normal(0, 2, n),
        "random_walk": 50 + np.cumsum(rng.normal(0, 1, n)),
        "steep_ramp": 5 + 0.2 * np.arange(n) + rng.normal(0, 1, n),
    }[data]
    model = Auto(horizon=12).fit(y[None, :], step=STEP)
    assert model.chosen() == [family]


def test_auto_chooses_per_series() -> None:
    rng = np.random.default_rng(2)
    n = 288 * 4
    t = np.arange(n) * STEP
    y = np.stack([np.where(t % DAY < DAY / 2, 10.0, 30.0), 50 + np.cumsum(rng.normal(0, 1, n))])
    assert Auto(horizon=12).fit(y, step=STEP).chosen() == ["seasonal-naive", "persistence"]


def test_auto_reselects_only_every_n_updates() -> None:
    rng = np.random.default_rng(4)
    model = Auto(horizon=4, reselect_every=50).fit(20 + rng.normal(0, 2, (1, 200)), step=STEP)
    calls = 0
    original = model._select

    def counting() -> None:
        nonlocal calls
        calls += 1
        original()

    model._select = counting  # type: ignore[method-assign]
    for v in rng.normal(0, 2, 100):
        model.update([20 + v])
    assert calls == 2


@pytest.mark.parametrize("name", sorted(MODEL_TYPES))
def test_online_update_equals_refit(name: str) -> None:
    y = daily(2.5, noise=1.0, seed=9)[None, :].repeat(3, axis=0)
    y[1] *= 2.0
    y[2, 100:140] = np.nan
    t = y.shape[1]
    online = make_model(name, horizon=6).fit(y[:, : t - 5], step=STEP, end=(t - 6) * STEP)
    for j in range(t - 5, t):
        online.update(y[:, j])
    refit = make_model(name, horizon=6).fit(y, step=STEP, end=(t - 1) * STEP)
    a, b = online.predict(), refit.predict()
    # the bounds too: a fit refreshes the interval quantiles as the updates do
    for x, z in zip(a, b, strict=True):
        np.testing.assert_allclose(x, z, rtol=1e-9)
    np.testing.assert_allclose(online.times(), refit.times())


@pytest.mark.parametrize("name", sorted(MODEL_TYPES))
def test_forecasts_never_look_ahead(name: str) -> None:
    y = daily(2.5, noise=1.0, seed=8)[None, :]
    k = 3
    before = backtest(make_model(name, horizon=k), y, step=STEP, ahead=(k,))[k]
    cut = 300
    perturbed = y.copy()
    perturbed[0, cut - k + 1 :] = np.random.default_rng(0).normal(
        1e4, 1e3, y.shape[1] - cut + k - 1
    )
    after = backtest(make_model(name, horizon=k), perturbed, step=STEP, ahead=(k,))[k]
    for x, z in zip(before, after, strict=True):  # forecasts of t <= cut used data <= cut - k
        np.testing.assert_array_equal(x[:, : cut + 1], z[:, : cut + 1])
    assert not np.array_equal(before[0][:, cut + 1 :], after[0][:, cut + 1 :])


def test_auto_beats_persistence_on_real_nyc_taxi_demand() -> None:
    _, y = nab_slice("realKnownCause/nyc_taxi.csv", start=0, length=48 * 21)
    step = 1800.0
    test = np.zeros((1, y.size), dtype=bool)
    test[:, 48 * 10 :] = True
    ours = backtest(Auto(horizon=2), y[None, :], step=step, ahead=(2,))[2]
    base = backtest(Persistence(horizon=2, clip=None), y[None, :], step=step, ahead=(2,))[2]
    snaive = backtest(SeasonalNaive(horizon=2, clip=None), y[None, :], step=step, ahead=(2,))[2]
    assert mae(y[None, :], ours[0], mask=test) < 0.9 * mae(y[None, :], base[0], mask=test)
    assert mae(y[None, :], ours[0], mask=test) < mae(y[None, :], snaive[0], mask=test)


def test_intervals_cover_real_cpu_utilisation_close_to_nominal() -> None:
    _, y = nab_slice("realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv", start=0, length=2000)
    _, lower, upper = backtest(Auto(horizon=1), y[None, :], step=STEP, ahead=(1,))[1]
    cov = coverage(y[None, 500:], lower[:, 500:], upper[:, 500:])
    assert 0.8 <= cov <= 0.97


def test_unusable_arguments_raise_forecast_error() -> None:
    with pytest.raises(ForecastError):
        Persistence(horizon=0)
    with pytest.raises(ForecastError):
        Persistence().fit(np.zeros((2, 2, 2)))
    with pytest.raises(ForecastError):
        Persistence().fit(np.zeros((1, 3)), step=0.0)
    with pytest.raises(ForecastError):
        Persistence().update([1.0])
    with pytest.raises(ForecastError):
        make_model("prophet")
    model = Persistence(horizon=2).fit(np.zeros((2, 3)))
    with pytest.raises(ForecastError):
        model.update([1.0, 2.0, 3.0])
    with pytest.raises(ForecastError):
        model.predict(3)


def _same_state(a: object, b: object, path: str = "model") -> None:
    """``a`` and ``b`` hold the same state, bit for bit (NaN where NaN)."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        if a.dtype.kind == "f":
            assert np.array_equal(np.isnan(a), np.isnan(b)), path
            assert a[~np.isnan(a)].tobytes() == b[~np.isnan(b)].tobytes(), path
        else:
            assert np.array_equal(a, b), path
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, z) in enumerate(zip(a, b, strict=True)):
            _same_state(x, z, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path  # type: ignore[attr-defined]
        for k in a:
            _same_state(a[k], b[k], f"{path}[{k!r}]")  # type: ignore[index]
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        assert type(a) is type(b), path
        _same_state(vars(a), vars(b), path)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), path
    else:
        assert a == b and type(a) is type(b), f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize("name", sorted(MODEL_TYPES))
@pytest.mark.parametrize("empty", [1, 5, 600, 1300])
def test_a_fit_skips_the_empty_start_of_a_window_exactly(name: str, empty: int) -> None:
    """A window that starts empty (600 columns cross two seasons of 288, when a seasonal
    model switches its season on; 1300 fill the interval trackers' rings many times) fits
    to the very state that updating on every column gives."""
    y = daily(6.0, noise=1.0, seed=3)[None, :].repeat(3, axis=0)[:, : empty + 200]
    y[:, :empty] = np.nan
    y[1, empty] = np.inf  # not valid either: the skip ends at the first valid sample
    y[2, : empty + 40] = np.nan  # a series that starts later still
    t = y.shape[1]
    end = 1_700_000_000.0 + (t - 1) * STEP
    params = {"horizon": 6, "season": DAY} if name not in ("persistence",) else {"horizon": 6}
    skipped = make_model(name, **params).fit(y, step=STEP, end=end)
    stepped = make_model(name, **params).fit(np.empty((3, 0)), step=STEP, end=end - t * STEP)
    for j in range(t):  # one update per column: no skip
        stepped.update(y[:, j])
    _same_state(vars(skipped), vars(stepped))
    for a, b in zip(skipped.predict(), stepped.predict(), strict=True):
        assert a.tobytes() == b.tobytes()


def test_a_nonnegative_fit_counts_negative_samples_as_missing_when_it_skips() -> None:
    y = np.full((2, 50), -1.0)
    y[:, 40:] = 5.0
    skipped = make_model("auto", horizon=3, nonnegative=True).fit(y, step=STEP, end=0.0)
    stepped = make_model("auto", horizon=3, nonnegative=True).fit(
        np.empty((2, 0)), step=STEP, end=-50 * STEP
    )
    for j in range(50):
        stepped.update(y[:, j])
    _same_state(vars(skipped), vars(stepped))


def test_seasonal_naive_does_not_repeat_an_early_spike_every_season() -> None:
    """A spike before the clipper can judge (the third sample: no forecast yet) is stored in
    the season; a day later the genuine sample is clipped toward it, and the season must
    keep the genuine one, or the spike comes back every day."""
    rng = np.random.default_rng(0)
    season = int(DAY / STEP)
    y = 0.2 + 0.02 * rng.standard_normal((1, 5 * season))
    y[0, 2] = 30.0
    one_step = backtest(make_model("seasonal-naive"), y, step=STEP, ahead=(1,))[1][0][0]
    # right after it (the last value) and a season later, once: not every day after
    assert np.flatnonzero(one_step > 1.0).tolist() == [3, season + 2]


def test_auto_keeps_the_season_unclipped_for_its_seasonal_members() -> None:
    """Auto clips the first sample of a daily step (persistence forecast the old level) and
    hands its members the clipped sample; seasonal-naive must still store the genuine one,
    as it does on its own, or it forecasts the clipped value there every day after."""
    rng = np.random.default_rng(3)
    season = int(DAY / STEP)
    t = np.arange(4 * season)
    y = np.where(t % season >= season // 2, 100.0, 10.0) + rng.normal(0, 1, t.size)
    end = 3 * season + season // 2 - 1  # up to two samples before the step of day four
    model = Auto(members=("persistence", "seasonal-naive"), default="seasonal-naive", horizon=4)
    alone = make_model("seasonal-naive", horizon=4)
    for m in (model, alone):
        m.fit(y[None, :end], step=STEP)
    np.testing.assert_allclose(model.models_[1].predict()[0], alone.predict()[0])
    assert alone.predict()[0][0, 1] > 90.0  # the step, a day later
