"""Degenerate and messy inputs give a finite forecast or a documented NaN, never an error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from forecasting import (
    backtest,
    clip_outliers,
    counter_to_rate,
    counter_to_rate_batch,
    make_model,
    resample,
)
from forecasting.registry import MODEL_TYPES

NAMES = sorted(MODEL_TYPES)


def check(mean: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
    """Each row is either fully finite with lower <= mean <= upper, or fully NaN."""
    for m, lo, hi in zip(mean, lower, upper, strict=True):
        finite = np.isfinite(m) & np.isfinite(lo) & np.isfinite(hi)
        assert finite.all() or np.isnan(m).all(), (m, lo, hi)
        if finite.all():
            assert np.all(lo <= m + 1e-9) and np.all(m <= hi + 1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_a_constant_series_forecasts_the_constant(name: str) -> None:
    mean, lower, upper = (
        make_model(name, horizon=5).fit(np.full((2, 300), 7.0), step=60.0).predict()
    )
    np.testing.assert_allclose(mean, 7.0)
    np.testing.assert_allclose(lower, 7.0)
    np.testing.assert_allclose(upper, 7.0)


@pytest.mark.parametrize("name", NAMES)
def test_the_first_forecasts_have_honest_intervals(name: str) -> None:
    # the interval trackers have no errors yet: the first forecasts, right after
    # ``min_history`` samples, fall back on the spread of the model's in-sample errors
    rng = np.random.default_rng(0)
    y = 100 + 10 * rng.standard_normal((400, 12))
    model = make_model(name, horizon=5, min_history=8).fit(y[:, :8], step=15.0)
    for j in range(8, 12):
        mean, lower, upper = model.predict()
        check(mean, lower, upper)
        inside = (lower[:, 0] <= y[:, j]) & (y[:, j] <= upper[:, 0])
        assert 0.8 <= inside.mean() <= 0.97, (j, inside.mean())
        model.update(y[:, j])


@pytest.mark.parametrize("name", NAMES)
def test_an_all_nan_series_has_no_forecast(name: str) -> None:
    y = np.vstack([np.full(50, np.nan), np.linspace(1, 2, 50)])
    mean, lower, upper = make_model(name, horizon=3).fit(y, step=60.0).predict()
    assert np.isnan(mean[0]).all() and np.isnan(lower[0]).all() and np.isnan(upper[0]).all()
    assert np.isfinite(mean[1]).all()


@pytest.mark.parametrize("name", NAMES)
def test_one_point_is_not_enough_data_by_default_and_enough_when_allowed(name: str) -> None:
    mean, _, _ = make_model(name, horizon=2).fit([[5.0]], step=60.0).predict()
    assert np.isnan(mean).all()
    mean, lower, upper = make_model(name, horizon=2, min_history=1).fit([[5.0]]).predict()
    np.testing.assert_allclose(mean, 5.0)
    check(mean, lower, upper)


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_history_has_no_forecast(name: str) -> None:
    mean, _, _ = make_model(name, horizon=2).fit(np.empty((3, 0))).predict()
    assert mean.shape == (3, 2) and np.isnan(mean).all()


@pytest.mark.parametrize("name", NAMES)
def test_an_isolated_spike_is_clipped(name: str) -> None:
    rng = np.random.default_rng(0)
    y = 10 + rng.normal(0, 0.5, (1, 400))
    y[0, -1] = 1e9
    mean, lower, upper = make_model(name, horizon=3).fit(y, step=60.0).predict()
    check(mean, lower, upper)
    assert np.all(mean < 100)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("base", [0.0, 5.0])
def test_a_spike_on_a_flat_series_is_clipped_and_the_series_recovers(
    name: str, base: float
) -> None:
    # a flat series has no error to scale the clipping by: the spike must still be clipped,
    # and the ordinary samples after it must not be clipped towards it
    y = np.full((1, 400), base)
    y[0, 300] = 1e12
    model = make_model(name, horizon=20, nonnegative=True, min_history=8).fit(y[:, :300], step=15.0)
    for v in y[0, 300:]:
        model.update([v])
        mean, lower, upper = model.predict()
        check(mean, lower, upper)
        assert np.all(np.abs(upper - base) < 1.0) and np.all(np.abs(mean - base) < 1.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [1e12, 1e100])
def test_a_wild_spike_of_two_samples_is_forgotten_when_the_series_comes_back(
    name: str, bad: float
) -> None:
    # the first bogus sample is clipped, the second passes as a level shift; the ordinary
    # sample after them ends it: no model may decay from the spike for hours
    rng = np.random.default_rng(0)
    y = 50 + rng.normal(0, 1, (1, 1500))
    y[0, 500:502] = bad
    out = backtest(make_model(name, horizon=20), y, step=15.0, ahead=(1, 20))
    _, lower, upper = out[1]  # forecasts of each tick made one tick before it
    assert np.all(np.abs(upper[0, 503:] - 50) < 10) and np.all(np.abs(lower[0, 503:] - 50) < 10)
    assert np.all(np.abs(out[20][0][0, 522:] - 50) < 10)


@pytest.mark.parametrize("name", NAMES)
def test_a_level_shift_is_not_clipped_away(name: str) -> None:
    rng = np.random.default_rng(1)
    y = np.concatenate([10 + rng.normal(0, 0.5, 300), 100 + rng.normal(0, 0.5, 10)])[None, :]
    mean, _, _ = make_model(name, horizon=1).fit(y, step=60.0).predict()
    assert mean[0, 0] > 80


@pytest.mark.parametrize("name", NAMES)
def test_negative_values_of_a_non_negative_metric_are_missing(name: str) -> None:
    y = np.tile(np.array([3.0, 4.0, -1e6, 5.0, 4.0, -2.0]), 20)[None, :]
    mean, lower, upper = make_model(name, horizon=4, nonnegative=True).fit(y).predict()
    check(mean, lower, upper)
    assert np.all(lower >= 0) and np.all(mean >= 0)
    assert np.all(mean > 2)


@pytest.mark.parametrize("name", NAMES)
def test_a_series_silent_longer_than_max_gap_has_no_forecast(name: str) -> None:
    y = np.ones((2, 100))
    y[0, 80:] = np.nan
    mean, _, _ = make_model(name, horizon=2, max_gap=600.0).fit(y, step=60.0).predict()
    assert np.isnan(mean[0]).all() and np.isfinite(mean[1]).all()


@pytest.mark.parametrize("name", NAMES)
def test_a_series_back_after_a_gap_longer_than_max_gap_starts_from_its_new_level(
    name: str,
) -> None:
    # 100 for 200 ticks, silent for 10 minutes (max_gap: 5), back at 10
    rng = np.random.default_rng(0)
    y = np.concatenate(
        [100 + rng.normal(0, 1, 200), np.full(40, np.nan), 10 + rng.normal(0, 1, 12)]
    )
    model = make_model(name, horizon=20, max_gap=300.0, min_history=8).fit(y[None, :240], step=15.0)
    for v in y[240:]:
        model.update([v])
        mean, lower, upper = model.predict()
        assert np.all(np.abs(mean - 10) < 5), mean
        assert np.all(lower <= 10 + 5) and np.all(upper >= 10 - 5)


@pytest.mark.parametrize("name", NAMES)
def test_huge_values_stay_finite(name: str) -> None:
    y = np.abs(np.random.default_rng(2).normal(1e90, 1e89, (1, 200)))
    mean, lower, upper = make_model(name, horizon=3).fit(y).predict()
    check(mean, lower, upper)
    assert np.isfinite(mean).all()


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-1e6, max_value=1e6),
)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    y=hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40), elements=values
    ),
    nonnegative=st.booleans(),
)
def test_any_values_give_finite_or_nan_forecasts_without_raising(
    name: str, y: np.ndarray, nonnegative: bool
) -> None:
    model = make_model(name, horizon=3, nonnegative=nonnegative, min_history=1)
    model.fit(y, step=15.0, end=1e9)
    model.update(y[:, -1])
    check(*model.predict())


def test_values_beyond_the_plausible_range_are_missing() -> None:
    y = np.array([[1.0, 2.0, 1e300, 3.0, -1e200]])
    mean, _, _ = make_model("persistence", horizon=1, clip=None).fit(y).predict()
    assert mean.tolist() == [[3.0]]


def test_resample_bins_unsorted_duplicate_and_irregular_samples() -> None:
    t = np.array([10.0, 0.0, 5.0, 5.0, 31.0, 29.0])
    v = np.array([4.0, 1.0, 2.0, 4.0, 9.0, 7.0])
    grid, out = resample(t, v, step=10.0, start=0.0, end=40.0)
    assert grid.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]
    # bins (g - 10, g]: 0 → {0}; 10 → {5, 5, 10}; 20 → {}; 30 → {29}; 40 → {31}
    np.testing.assert_allclose(out, [1.0, 10 / 3, np.nan, 7.0, 9.0])
    _, last = resample(t, v, step=10.0, start=0.0, end=40.0, how="last")
    np.testing.assert_allclose(last, [1.0, 4.0, np.nan, 7.0, 9.0])


def test_counter_to_rate_handles_resets_and_gaps() -> None:
    t = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    c = np.array([100.0, 150.0, 20.0, np.nan, 60.0, 80.0])
    rate = counter_to_rate(t, c)
    # 150-100 over 10 s; reset: 20 since restart; gap; 40 over 20 s; 20 over 10 s
    np.testing.assert_allclose(rate, [np.nan, 5.0, 2.0, np.nan, 2.0, 2.0])
    batch = counter_to_rate_batch(np.vstack([c, c]), step=10.0)
    np.testing.assert_allclose(batch[1], rate)


def test_clip_outliers_clips_spikes_and_leaves_constant_series() -> None:
    rng = np.random.default_rng(3)
    y = 5 + rng.normal(0, 1, (2, 500))
    y[0, 100] = 1e6
    y[1] = 3.0
    out = clip_outliers(y, k=6.0)
    assert out[0, 100] < 15
    np.testing.assert_array_equal(out[1], 3.0)
    assert np.isnan(clip_outliers(np.full((1, 4), np.nan))).all()
    assert clip_outliers(np.empty((2, 0))).shape == (2, 0)
