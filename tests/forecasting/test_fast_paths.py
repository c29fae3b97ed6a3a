"""The shortcuts taken when no value is missing give the general path's results bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from forecasting.grid import masked_median
from forecasting.scoring import ResidualTracker, sorted_quantile

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def general_median(x: np.ndarray) -> np.ndarray:
    """``masked_median`` of ``x`` with a NaN appended to each slice: its general path."""
    return masked_median(np.concatenate([x, np.full((x.shape[0], 1), np.nan)], axis=-1))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 9)), elements=finite))
def test_the_median_of_windows_without_a_gap_is_the_general_one(x: np.ndarray) -> None:
    fast = masked_median(x)
    slow = general_median(x)
    assert fast.shape == slow.shape == (x.shape[0],)
    assert fast.tobytes() == slow.tobytes()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30),
    st.sampled_from([0.5, 0.8, 0.9, 0.95]),
    st.data(),
)
def test_the_interval_quantiles_of_full_windows_are_the_general_ones(
    window: int, coverage: float, data: st.DataObject
) -> None:
    errors = data.draw(hnp.arrays(np.float64, (3, 4, window), elements=finite))
    tracker = ResidualTracker(3, horizon=4, window=window, coverage=coverage, refresh_every=1)
    tracker.errors[...] = errors
    tracker._refresh(slice(None))
    s = np.sort(errors, axis=-1)
    lo, hi = sorted_quantile(s, tracker._q, np.isfinite(s).sum(axis=-1))
    assert tracker.lo.tobytes() == lo.tobytes()
    assert tracker.hi.tobytes() == hi.tobytes()
    assert (tracker.count == window).all()
