"""Rolling-origin evaluation: what a model forecast for every time, from earlier data only.

Used by ``autoscaler forecast`` and ``bench/forecast.py``. The model is run online over the
batch; the path issued after column ``o`` is recorded as the forecast of column ``o + k``.
Nothing after ``o`` can reach it, because the model has not seen it yet.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from forecasting.base import FloatArray, OnlineForecaster
from forecasting.grid import as_batch

Triple = tuple[FloatArray, FloatArray, FloatArray]


def backtest(
    model: OnlineForecaster,
    y: ArrayLike,
    *,
    step: float,
    end: float | None = None,
    ahead: Sequence[int] = (1,),
) -> dict[int, Triple]:
    """Forecasts ``k`` steps ahead for every column, for each ``k`` in ``ahead``.

    Returns ``{k: (mean, lower, upper)}``, each ``[n_series, T]``; column ``t`` holds the
    forecast issued at column ``t - k`` (NaN for the first ``k`` columns and wherever the
    model had too little data). ``model.horizon`` must be at least ``max(ahead)``.
    """
    batch = as_batch(y)
    n, t = batch.shape
    last = (t - 1) * step if end is None else end
    model.fit(np.empty((n, 0)), step=step, end=last - t * step)
    out = {k: tuple(np.full((n, t), np.nan) for _ in range(3)) for k in ahead}
    top = max(ahead)
    for j in range(t):
        model.update(batch[:, j])
        if j + 1 >= t:
            break
        mean, lower, upper = model.predict(top)
        for k in ahead:
            if j + k < t:
                out[k][0][:, j + k] = mean[:, k - 1]
                out[k][1][:, j + k] = lower[:, k - 1]
                out[k][2][:, j + k] = upper[:, k - 1]
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def mae(actual: FloatArray, forecast: FloatArray, *, mask: FloatArray | None = None) -> float:
    """Mean absolute error over the points where both (and ``mask``) are present."""
    ok = np.isfinite(actual) & np.isfinite(forecast)
    if mask is not None:
        ok &= mask.astype(bool)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(actual[ok] - forecast[ok])))


def coverage(actual: FloatArray, lower: FloatArray, upper: FloatArray) -> float:
    """Fraction of present actuals inside ``[lower, upper]``."""
    ok = np.isfinite(actual) & np.isfinite(lower) & np.isfinite(upper)
    if not ok.any():
        return float("nan")
    inside = (actual[ok] >= lower[ok]) & (actual[ok] <= upper[ok])
    return float(np.mean(inside))
