"""Online bookkeeping of forecast errors: interval quantiles and candidate scores.

Both keep a ring of the forecast paths issued at the last ``horizon`` origins, so when a
new sample arrives the error of every horizon step is known without refitting anything:
the forecast issued ``h`` steps ago for "now" is compared with "now". This is rolling-origin
evaluation done incrementally, and it only ever uses forecasts issued before the sample.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def sorted_quantile(s: FloatArray, q: float, k: NDArray[np.int64] | None = None) -> FloatArray:
    """Quantile ``q`` along the last axis of an array sorted with NaN last (NaN when empty).

    ``k`` is the count of finite values per slice when the caller already has it.
    """
    w = s.shape[-1]
    flat = s.reshape(-1, w)
    k = np.sum(np.isfinite(flat), axis=-1) if k is None else k.reshape(-1)
    pos = q * np.maximum(k - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(k - 1, 0))
    rows = np.arange(flat.shape[0])
    a = flat[rows, lo]
    b = flat[rows, hi]
    out = np.where(k > 0, a + (pos - lo) * (b - a), np.nan)
    return out.reshape(s.shape[:-1])


class ResidualTracker:
    """Prediction intervals from the empirical quantiles of recent errors, per horizon step.

    ``errors`` holds the last ``window`` signed errors of each (series, step). Quantiles are
    recomputed for about ``n / refresh_every`` series per update (staggered), so the cost of
    an update stays flat; a fit refreshes them the same way, so that fitting on one more
    column gives the same bounds as an update.
    """

    def __init__(
        self, n: int, *, horizon: int, window: int, coverage: float, refresh_every: int
    ) -> None:
        self.horizon = horizon
        self.window = window
        self.q_lo = (1.0 - coverage) / 2.0
        self.q_hi = 1.0 - self.q_lo
        self.z = NormalDist().inv_cdf(self.q_hi)
        self.paths = np.full((horizon, n, horizon), np.nan)
        self.pos = 0
        self.errors = np.full((n, horizon, window), np.nan)
        self.epos = 0
        self.lo = np.full((n, horizon), np.nan)
        self.hi = np.full((n, horizon), np.nan)
        self.count = np.zeros((n, horizon))
        self.refresh_every = max(1, refresh_every)
        self._offset = np.arange(n) % self.refresh_every
        self.updates = 0
        self._h = np.arange(horizon)

    def observe(self, y: FloatArray) -> None:
        """Score the paths issued 1..horizon steps ago against the new sample ``y`` [n]."""
        slots = (self.pos - 1 - self._h) % self.horizon
        pred = self.paths[slots, :, self._h]  # [horizon, n]
        self.errors[:, :, self.epos] = (y[None, :] - pred).T
        self.epos = (self.epos + 1) % self.window
        # series i is refreshed when (updates + i) % refresh_every == 0: flat cost per update
        self.updates += 1
        rows = np.flatnonzero((self.updates + self._offset) % self.refresh_every == 0)
        if rows.size:
            self._refresh(rows)

    def skip(self, k: int) -> None:
        """``k`` updates that scored nothing and issued no path, from the empty state."""
        self.epos = (self.epos + k) % self.window
        self.updates += k
        self.pos = (self.pos + k) % self.horizon

    def forget(self, rows: NDArray[np.bool_]) -> None:
        """Drop the paths pending for ``rows``: they will not be scored."""
        self.paths[:, rows] = np.nan

    def push(self, path: FloatArray) -> None:
        """Remember the path [n, horizon] issued now."""
        self.paths[self.pos] = path
        self.pos = (self.pos + 1) % self.horizon

    def _refresh(self, rows: NDArray[np.int64]) -> None:
        s = np.sort(self.errors[rows], axis=-1)
        k = np.sum(np.isfinite(s), axis=-1)
        self.lo[rows] = sorted_quantile(s, self.q_lo, k)
        self.hi[rows] = sorted_quantile(s, self.q_hi, k)
        self.count[rows] = k

    def bounds(
        self, mean: FloatArray, *, scale: FloatArray, min_errors: int = 10
    ) -> tuple[FloatArray, FloatArray]:
        """Lower and upper bounds around ``mean`` [n, steps].

        Where fewer than ``min_errors`` errors of a step were seen (short history), the
        width falls back to ``z · 1.25 · scale · sqrt(h)`` (``scale``: the mean absolute
        one-step error, 1.25x of which estimates a standard deviation, learnt from the
        second sample on), and to zero width when even that is unknown (one sample).
        """
        steps = mean.shape[1]
        h = np.arange(1, steps + 1, dtype=np.float64)
        s = np.where(np.isfinite(scale), scale, 0.0)[:, None]
        fallback = self.z * 1.25 * s * np.sqrt(h)[None, :]
        enough = self.count[:, :steps] >= min_errors
        lo = np.where(enough, self.lo[:, :steps], -fallback)
        hi = np.where(enough, self.hi[:, :steps], fallback)
        # quantiles of a biased model can both be positive: the interval still holds the mean
        lower = mean + np.minimum(lo, 0.0)
        upper = mean + np.maximum(hi, 0.0)
        return lower, upper


_ERROR_CAP = 20.0


class CandidateScorer:
    """Exponentially weighted mean absolute error of ``k`` candidate forecasts per series.

    Scored at horizon steps 1, about half the horizon and the full horizon, so a choice
    reflects the lead times that policies use. ``span`` is the EWMA span in updates.
    """

    def __init__(self, n: int, k: int, *, horizon: int, span: float) -> None:
        self.horizon = horizon
        self.steps = np.unique(np.array([0, (horizon - 1) // 2, horizon - 1]))
        e = self.steps.size
        self.paths = np.full((horizon, n, k, e), np.nan)
        self.pos = 0
        self.lam = 1.0 / max(span, 1.0)
        self.s = np.zeros((n, k, e))
        self.w = np.zeros((n, k, e))
        self.count = np.zeros((n, k))
        self._back = self.steps + 1  # the path scored at step index i was issued i + 1 ago
        self._cols = np.arange(e)
        self.cap = np.full((n, e), np.inf)
        """``_ERROR_CAP`` x the best candidate's mean error per (series, step), as of the
        last ``scores``."""

    def observe(self, y: FloatArray) -> None:
        """Update the error of every candidate with the new sample ``y`` [n]."""
        slots = (self.pos - self._back) % self.horizon
        pred = self.paths[slots, :, :, self._cols]  # [e, n, k]
        err = np.abs(y[None, :, None] - pred).transpose(1, 2, 0)
        # a spike that outlier clipping let through (the second of two: a level shift, as
        # far as it can tell) gives errors that would decide the choice for hours: one error
        # counts at most ``_ERROR_CAP`` times the best candidate's mean error plus the sample
        cap = self.cap + np.abs(y)[:, None]  # [n, e]
        err = np.minimum(err, cap[:, None, :])
        ok = np.isfinite(err)
        decay = np.where(ok, 1.0 - self.lam, 1.0)
        self.s = self.s * decay + np.where(ok, self.lam * err, 0.0)
        self.w = self.w * decay + np.where(ok, self.lam, 0.0)
        self.count += ok[:, :, 0]

    def skip(self, k: int) -> None:
        """``k`` updates that scored nothing and issued no path, from the empty state."""
        self.pos = (self.pos + k) % self.horizon

    def forget(self, rows: NDArray[np.bool_]) -> None:
        """Drop the paths pending for ``rows``: they will not be scored."""
        self.paths[:, rows] = np.nan

    def push(self, paths: FloatArray) -> None:
        """Remember the candidate paths [n, k, horizon] issued now."""
        self.paths[self.pos] = paths[:, :, self.steps]
        self.pos = (self.pos + 1) % self.horizon

    def scores(self, min_count: int = 24) -> FloatArray:
        """Mean absolute error per (series, candidate); ``inf`` without enough evidence
        (fewer than ``min_count`` scored one-step forecasts)."""
        has = self.w > 0
        mae = np.where(has, self.s / np.where(has, self.w, 1.0), 0.0)
        self.cap = _ERROR_CAP * np.min(np.where(has, mae, np.inf), axis=1)
        n_has = np.sum(has, axis=-1)
        score = np.where(n_has > 0, np.sum(mae, axis=-1) / np.maximum(n_has, 1), np.inf)
        return np.where(self.count >= min_count, score, np.inf)
