"""Online bookkeeping of forecast errors: interval quantiles and candidate scores.

Both keep a ring of the forecast paths issued at the last ``horizon`` origins, so when a
new sample arrives the error of every horizon step is known without refitting anything:
the forecast issued ``h`` steps ago for "now" is compared with "now". This is rolling-origin
evaluation done incrementally, and it only ever uses forecasts issued before the sample.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def sorted_quantile(
    s: FloatArray, q: float | FloatArray, k: NDArray[np.int64] | None = None
) -> FloatArray:
    """Quantile ``q`` along the last axis of an array sorted with NaN last (NaN when empty).

    ``q`` may hold several quantiles [m]: the result then has a leading axis of them (one
    pass over ``s`` for all). ``k`` is the count of finite values per slice when the caller
    already has it.
    """
    w = s.shape[-1]
    flat = s.reshape(-1, w)
    k = np.sum(np.isfinite(flat), axis=-1) if k is None else k.reshape(-1)
    qs = np.asarray(q, dtype=np.float64)
    top = np.maximum(k - 1, 0)
    pos = qs.reshape(-1, 1) * top  # [m, slices]
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, top)
    rows = np.arange(flat.shape[0])
    a = flat[rows, lo]
    b = flat[rows, hi]
    out = np.where(k > 0, a + (pos - lo) * (b - a), np.nan)
    return out.reshape(qs.shape + s.shape[:-1])


MIN_ERRORS = 10
"""Errors of a horizon step its interval quantiles need; with fewer, ``bounds`` falls back
on the one-step scale."""


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
        # each path issued is filed by the update it forecasts: slot ``(pos + 1 + h) %
        # horizon`` gets its step ``h``, so an update reads its own slot whole
        self.due = np.full((horizon, n, horizon), np.nan)
        self.pos = 0
        self.errors = np.full((n, horizon, window), np.nan)
        self.epos = 0
        self.lo = np.full((n, horizon), np.nan)
        self.hi = np.full((n, horizon), np.nan)
        self.count = np.zeros((n, horizon))
        # the interval's offsets from the mean where ``count`` is enough, and whether it is
        # everywhere: ``bounds`` is then two additions (both change only at a refresh)
        self.below = np.full((n, horizon), np.nan)
        self.above = np.full((n, horizon), np.nan)
        self.enough = False
        self.refresh_every = max(1, refresh_every)
        # series i is refreshed when (updates + i) % refresh_every == 0: flat cost per
        # update; the rows due at each phase of the cycle, worked out once (a slice of
        # every refresh_every-th row: basic indexing costs a fraction of a fancy one)
        every = self.refresh_every
        self._due = {(-r) % every: slice(r, None, every) for r in range(min(n, every))}
        self.updates = 0
        self._h = np.arange(horizon)
        self._file = (self._h[:, None] + 1 + self._h[None, :]) % horizon  # [pos, h] → slot
        self._q = np.array([self.q_lo, self.q_hi])

    def observe(self, y: FloatArray) -> None:
        """Score the paths issued 1..horizon steps ago against the new sample ``y`` [n]."""
        self.errors[:, :, self.epos] = y[:, None] - self.due[self.pos]
        self.epos = (self.epos + 1) % self.window
        self.updates += 1
        rows = self._due.get(self.updates % self.refresh_every)
        if rows is not None:
            self._refresh(rows)

    def skip(self, k: int) -> None:
        """``k`` updates that scored nothing and issued no path, from the empty state."""
        self.epos = (self.epos + k) % self.window
        self.updates += k
        self.pos = (self.pos + k) % self.horizon

    def forget(self, rows: NDArray[np.bool_]) -> None:
        """Drop the paths pending for ``rows``: they will not be scored."""
        self.due[:, rows] = np.nan

    def push(self, path: FloatArray) -> None:
        """Remember the path [n, horizon] issued now."""
        self.due[self._file[self.pos], :, self._h] = path.T
        self.pos = (self.pos + 1) % self.horizon

    def _refresh(self, rows: slice) -> None:
        s = np.sort(self.errors[rows], axis=-1)
        full = bool(self.window) and bool(np.isfinite(s).all())
        if full:  # the usual case: every window full
            lo, hi = self._full_quantiles(s)
            self.count[rows] = self.window
        else:
            k = np.isfinite(s).sum(axis=-1)
            lo, hi = sorted_quantile(s, self._q, k)
            self.count[rows] = k
        self.lo[rows] = lo
        self.hi[rows] = hi
        self.below[rows] = np.minimum(lo, 0.0)
        self.above[rows] = np.maximum(hi, 0.0)
        if not (full and self.enough and self.window >= MIN_ERRORS):  # (then it stays True)
            self.enough = bool((self.count >= MIN_ERRORS).all())

    def _full_quantiles(self, s: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``sorted_quantile(s, self._q)`` of windows without a missing error, bit for bit,
        in a third of the calls: every window has the same count, so each quantile reads
        the same two ranks of every window and interpolates by the same fraction."""
        top = self.window - 1
        out = []
        for q in (self.q_lo, self.q_hi):
            pos = q * top  # the same float64 steps as ``sorted_quantile``
            lo = math.floor(pos)
            a, b = s[..., lo], s[..., min(lo + 1, top)]
            out.append(a + (pos - lo) * (b - a))
        return out[0], out[1]

    def bounds(
        self,
        mean: FloatArray,
        *,
        scale: FloatArray,
        min_errors: int = MIN_ERRORS,
        out: FloatArray | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """Lower and upper bounds around ``mean`` [n, steps] (written to ``out`` [2, n, steps]
        when given).

        Where fewer than ``min_errors`` errors of a step were seen (short history), the
        width falls back to ``z · 1.25 · scale · sqrt(h)`` (``scale``: the mean absolute
        one-step error, 1.25x of which estimates a standard deviation, learnt from the
        second sample on), and to zero width when even that is unknown (one sample).
        """
        steps = mean.shape[1]
        if out is None:
            out = np.empty((2, *mean.shape))
        if min_errors == MIN_ERRORS and self.enough:  # the usual case, once errors are in
            np.add(mean, self.below[:, :steps], out=out[0])
            np.add(mean, self.above[:, :steps], out=out[1])
            return out[0], out[1]
        h = np.arange(1, steps + 1, dtype=np.float64)
        s = np.where(np.isfinite(scale), scale, 0.0)[:, None]
        fallback = self.z * 1.25 * s * np.sqrt(h)[None, :]
        enough = self.count[:, :steps] >= min_errors
        lo = np.where(enough, self.lo[:, :steps], -fallback)
        hi = np.where(enough, self.hi[:, :steps], fallback)
        # quantiles of a biased model can both be positive: the interval still holds the mean
        np.add(mean, np.minimum(lo, 0.0), out=out[0])
        np.add(mean, np.maximum(hi, 0.0), out=out[1])
        return out[0], out[1]


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
        # the forecasts of the scored steps, filed by the update they are for (slot
        # ``(pos + step + 1) % horizon``) rather than by the one that issued them: an
        # update reads its slot whole, laid out as ``s``, instead of gathering diagonals
        self.due = np.full((horizon, n, k, e), np.nan)
        self.pos = 0
        self.lam = 1.0 / max(span, 1.0)
        self.s = np.zeros((n, k, e))
        self.w = np.zeros((n, k, e))
        self.count = np.zeros((n, k))
        self._ahead = [(i, int(st) + 1) for i, st in enumerate(self.steps)]
        self.cap = np.full((n, e), np.inf)
        """``_ERROR_CAP`` x the best candidate's mean error per (series, step), as of the
        last ``scores``."""

    def observe(self, y: FloatArray) -> None:
        """Update the error of every candidate with the new sample ``y`` [n]."""
        pred = self.due[self.pos]  # [n, k, e]
        err = np.abs(y[:, None, None] - pred)
        # a spike that outlier clipping let through (the second of two: a level shift, as
        # far as it can tell) gives errors that would decide the choice for hours: one error
        # counts at most ``_ERROR_CAP`` times the best candidate's mean error plus the sample
        cap = self.cap + np.abs(y)[:, None]  # [n, e]
        np.minimum(err, cap[:, None, :], out=err)
        ok = np.isfinite(err)
        if ok.all():  # the usual update: every forecast scored, one decay for all (as below)
            err *= self.lam
            self.s *= 1.0 - self.lam
            self.s += err
            self.w *= 1.0 - self.lam
            self.w += self.lam
            self.count += 1.0
            return
        # where ``ok`` is false, ``decay`` is 1 and the added terms 0: ``s`` and ``w`` stay
        decay = np.where(ok, 1.0 - self.lam, 1.0)
        err[~ok] = 0.0
        err *= self.lam
        self.s *= decay
        self.s += err
        self.w *= decay
        self.w += ok * self.lam
        self.count += ok[:, :, 0]

    def skip(self, k: int) -> None:
        """``k`` updates that scored nothing and issued no path, from the empty state."""
        self.pos = (self.pos + k) % self.horizon

    def forget(self, rows: NDArray[np.bool_]) -> None:
        """Drop the paths pending for ``rows``: they will not be scored."""
        self.due[:, rows] = np.nan

    def push(self, paths: FloatArray) -> None:
        """Remember the candidate paths [n, k, horizon] issued now."""
        for i, ahead in self._ahead:
            self.due[(self.pos + ahead) % self.horizon, :, :, i] = paths[:, :, ahead - 1]
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
