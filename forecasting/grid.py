"""Messy samples → a regular grid: resampling, counters to rates, outlier clipping.

Everything here is pure numpy and warning-free on empty or all-NaN input (tests run with
``filterwarnings=error``), so a degenerate series gives NaN rather than an exception.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forecasting.errors import ForecastError

FloatArray = NDArray[np.float64]

MAX_ABS = 1e100
"""Samples beyond ±MAX_ABS are treated as missing: no real metric is that large, and
arithmetic on values near the float limit would overflow."""


def clean(values: FloatArray) -> FloatArray:
    """Non-finite samples and samples beyond ``MAX_ABS`` become NaN (missing)."""
    # no errstate: comparisons with NaN are quiet (it would cost more than the rest, per update)
    return np.where(np.abs(values) <= MAX_ABS, values, np.nan)


def as_batch(y: ArrayLike) -> FloatArray:
    """A float64 ``[n_series, T]`` copy of ``y``; a 1-D input is one series.

    Infinite values (and values beyond ``MAX_ABS``) become NaN (missing).
    """
    arr = np.array(y, dtype=np.float64, copy=True)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ForecastError(f"expected a [n_series, T] array, got shape {arr.shape}")
    return clean(arr)


def resample(
    times: ArrayLike,
    values: ArrayLike,
    *,
    step: float,
    start: float,
    end: float,
    how: str = "mean",
) -> tuple[FloatArray, FloatArray]:
    """Irregular samples → values on the grid ``start, start+step, ..., <= end``.

    The grid point ``g`` summarises the samples in ``(g - step, g]``: it is known at time
    ``g``, so a forecast issued at ``g`` uses no later sample. ``how`` is ``"mean"`` (gauges)
    or ``"last"`` (the latest sample of the bin). Empty bins are NaN; samples need not be
    sorted; non-finite samples are ignored. Returns ``(grid_times, grid_values)``.
    """
    if not (np.isfinite(step) and step > 0):
        raise ForecastError(f"step must be a positive number of seconds, got {step!r}")
    if how not in ("mean", "last"):
        raise ForecastError(f"how must be 'mean' or 'last', got {how!r}")
    t = np.asarray(times, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if t.shape != v.shape:
        raise ForecastError(f"times and values differ in length: {t.size} != {v.size}")
    n_bins = max(int(np.floor((end - start) / step + 1e-9)) + 1, 0)
    grid = start + step * np.arange(n_bins, dtype=np.float64)
    out = np.full(n_bins, np.nan)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    # bin k holds (start + (k-1)*step, start + k*step]
    idx = np.ceil((t - start) / step - 1e-9).astype(np.int64)
    inside = (idx >= 0) & (idx < n_bins)
    idx, t, v = idx[inside], t[inside], v[inside]
    if idx.size == 0:
        return grid, out
    if how == "mean":
        sums = np.bincount(idx, weights=v, minlength=n_bins)
        counts = np.bincount(idx, minlength=n_bins)
        has = counts > 0
        out[has] = sums[has] / counts[has]
    else:
        order = np.lexsort((t, idx))  # by bin, then time: the last of each bin wins
        out[idx[order]] = v[order]
    return grid, out


def counter_to_rate(times: ArrayLike, values: ArrayLike) -> FloatArray:
    """Per-second rate of a monotonic counter, handling resets (Prometheus ``rate`` rules).

    ``rate[i]`` is the increase from sample ``i-1`` to ``i`` divided by the elapsed seconds;
    ``rate[0]`` is NaN. A decrease is a counter reset: the increase since the reset is the
    new value itself (the counter restarted from zero). Missing samples (NaN) give NaN for
    the rate into them; the next rate is measured from the last valid sample. Non-increasing
    timestamps give NaN.
    """
    t = np.asarray(times, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if t.shape != v.shape:
        raise ForecastError(f"times and values differ in length: {t.size} != {v.size}")
    rate = np.full(v.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(t) & np.isfinite(v))
    if ok.size < 2:
        return rate
    cur, prev = ok[1:], ok[:-1]
    dv = v[cur] - v[prev]
    dt = t[cur] - t[prev]
    increase = np.where(dv < 0, v[cur], dv)
    good = dt > 0
    rate[cur[good]] = increase[good] / dt[good]
    return rate


def counter_to_rate_batch(y: ArrayLike, *, step: float) -> FloatArray:
    """``counter_to_rate`` for a ``[n_series, T]`` counter batch on a regular grid."""
    batch = as_batch(y)
    times = step * np.arange(batch.shape[1], dtype=np.float64)
    return np.stack([counter_to_rate(times, row) for row in batch]) if batch.size else batch


def masked_median(x: FloatArray, axis: int = -1) -> FloatArray:
    """Median ignoring NaN, NaN where a slice is all-NaN or empty (without numpy's warning)."""
    s = np.sort(x, axis=axis)  # NaN sorts last
    if axis not in (-1, s.ndim - 1):
        s = np.moveaxis(s, axis, -1)
    finite = np.isfinite(s)
    w = s.shape[-1]
    if w and s.ndim > 1 and finite.all():  # no NaN: each middle at the same place (as below)
        half: FloatArray = 0.5 * (s[..., (w - 1) // 2] + s[..., w // 2])
        return half
    k = np.sum(finite, axis=-1)
    if w == 0:
        return np.full(k.shape, np.nan)
    # the two middle values of each slice, picked by flat indexing (take_along_axis costs
    # more than the sort on the small windows of a refit)
    flat = s.reshape(-1, s.shape[-1])
    rows = np.arange(flat.shape[0])
    kf = k.ravel()
    a = flat[rows, np.maximum((kf - 1) // 2, 0)]
    b = flat[rows, kf // 2]
    med: FloatArray = np.where(kf > 0, 0.5 * (a + b), np.nan).reshape(k.shape)
    return med


def clip_outliers(y: ArrayLike, *, k: float = 6.0) -> FloatArray:
    """Clip each series to ``median ± k·MAD`` (MAD scaled to a standard deviation).

    A batch preprocessing step for recorded history; the models also clip online, against
    their own one-step forecasts. A series with zero MAD (mostly constant) is left as is.
    """
    batch = as_batch(y)
    med = masked_median(batch)[:, None]
    mad = 1.4826 * masked_median(np.abs(batch - med))[:, None]
    width = np.where(mad > 0, k * mad, np.inf)
    with np.errstate(invalid="ignore"):
        return np.clip(batch, med - width, med + width)
