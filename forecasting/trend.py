"""A robust local trend: Huber regression on a recent window, with AR(1) residual decay.

Each series is regressed on ``[1, t]`` (plus time-of-day harmonics when the window spans a
whole day) over its last ``window`` seconds. The Huber loss is minimised by iteratively
reweighted least squares with a small ridge penalty on the non-intercept terms, in numpy
for all series at once: every series has its own missing samples and its own weights, which
one scikit-learn estimator per series would turn into a Python loop of thousands of fits.
(``tests/forecasting/test_forecast_models.py`` checks the solver against scikit-learn's
``Ridge`` and ``HuberRegressor``.)

The lag feature enters as regression with AR(1) errors: the forecast is the fitted trend
plus the last residual carried ``rho`` per step,

    y(t+h) = f(t+h) + rho^h · (y(t) - f(t)).

By default ``rho = 1`` (``anchor=1.0``): the last value plus the robust slope (and the
time-of-day shape), so a level shift is followed at once and a ramp is extrapolated with a
slope no outlier can tilt. ``anchor=None`` estimates ``rho`` per series as the residuals'
lag-1 autocorrelation (a mean-reverting variant).

Each series is refitted every ``refit_interval`` seconds (at least every update). Many
series are staggered in groups of at least ``_GROUP`` so that every update refits about the
same share of them and its cost stays flat; a few series are refitted together, because
one refit costs about the same for one series as for sixty (numpy's per-call overhead).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forecasting.base import FloatArray, OnlineForecaster, steps_for
from forecasting.grid import masked_median

_GROUP = 64
"""Fewest series refitted together when refits are staggered."""


class RobustTrend(OnlineForecaster):
    """Huber-robust linear trend on a recent window, AR(1) residual anchoring.

    - ``window``: seconds of history in the regression.
    - ``harmonics``: time-of-day sine/cosine pairs, used when ``window >= season``.
    - ``season``: seconds of the time-of-day cycle.
    - ``refit_interval``: seconds between two refits of a series (0: every update).
    - ``huber_k``: Huber threshold in robust standard deviations (1.345: 95 % efficiency).
    - ``ridge``: L2 penalty on the slope and harmonics (in units of window length).
    - ``iterations``: IRLS iterations per refit.
    - ``max_points``: the window is thinned to at most this many samples per refit.
    - ``min_points``: the window holds at least this many grid steps (coarse grids).
    - ``anchor``: how much of the last residual persists per step (``rho``); 1.0 keeps it
      whole (the last value plus the robust slope), ``None`` estimates it per series as
      the residuals' lag-1 autocorrelation.
    """

    name = "robust-trend"
    skips_exactly = True

    def __init__(
        self,
        *,
        window: float = 7200.0,
        harmonics: int = 2,
        season: float = 86400.0,
        refit_interval: float = 300.0,
        huber_k: float = 1.345,
        ridge: float = 1e-3,
        iterations: int = 4,
        max_points: int = 120,
        anchor: float | None = 1.0,
        min_points: int = 24,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.window = window
        self.harmonics = harmonics
        self.season = season
        self.refit_interval = refit_interval
        self.huber_k = huber_k
        self.ridge = ridge
        self.iterations = iterations
        self.max_points = max_points
        self.anchor = anchor
        self.min_points = min_points

    def _start(self, n: int) -> None:
        self.size_ = max(steps_for(self.window, self.step_), self.min_points, 4)
        self.span_ = self.size_ * self.step_
        self.use_harmonics_ = self.harmonics > 0 and self.span_ >= self.season
        self.n_features_ = 2 + (2 * self.harmonics if self.use_harmonics_ else 0)
        self._penalty = self.ridge * np.eye(self.n_features_)  # ridge on all but the intercept
        self._penalty[0, 0] = 0.0
        self.buffer_ = np.full((n, self.size_), np.nan)  # ring, oldest at pos_
        self.pos_ = 0
        self.coef_ = np.full((n, self.n_features_), np.nan)
        self.fit_time_ = np.zeros(n)  # time origin of each series' coefficients
        self.rho_ = np.zeros(n)
        self.resid_ = np.zeros(n)
        self.last_ = np.full(n, np.nan)
        self.refit_steps_ = max(1, round(self.refit_interval / self.step_))
        # a long window is thinned to at most ``max_points`` samples: the slope barely
        # changes and the cost per refit stays bounded on fine grids (15 s ticks); the ring
        # offsets (from ``pos_``) of the samples kept, every ``stride``-th back from the newest
        self._stride = max(1, -(-self.size_ // self.max_points))
        self._thinned = np.arange(self.size_)[::-1][:: self._stride][::-1]
        # how far back each of them lies, in seconds
        ages = np.arange(self._thinned.size - 1, -1, -1, dtype=np.float64) * self._stride
        self._back = self.step_ * ages
        groups = max(1, min(self.refit_steps_, n // _GROUP))
        offset = (np.arange(n) % groups) * (self.refit_steps_ // groups)
        # series i is refitted when (updates + i's offset) % refit_steps == 0: staggered,
        # flat cost; the rows due at each phase of the cycle, worked out once
        due = (-offset) % self.refit_steps_
        self._due = {int(k): np.flatnonzero(due == k) for k in np.unique(due)}
        self._steps = np.arange(self.horizon + 1, dtype=np.float64)
        self._decay = np.zeros((n, self.horizon))  # rho ** h, changes only at a refit
        self._ahead = np.full((n, self.horizon), np.nan)  # the trend at the path's times

    def _features(self, t: FloatArray, origin: FloatArray) -> FloatArray:
        """Design rows for times ``t`` [..., k] relative to ``origin`` [..., 1]."""
        x = (t - origin) / self.span_
        # filled column by column rather than stacked: the same array for fewer calls
        design = np.empty((*x.shape, self.n_features_))
        design[..., 0] = 1.0
        design[..., 1] = x
        if self.use_harmonics_:
            # times shared by every series ([1, k]) still need a column per series
            w = 2.0 * np.pi * np.broadcast_to(t, x.shape) / self.season
            for k in range(1, self.harmonics + 1):
                design[..., 2 * k] = np.sin(k * w)
                design[..., 2 * k + 1] = np.cos(k * w)
        return design

    def _trend(self, rows: Any, t: FloatArray) -> FloatArray:
        """Fitted trend of ``rows`` at times ``t`` [k] → [len(rows), k]."""
        x = self._features(t[None, :], self.fit_time_[rows][:, None])
        fitted: FloatArray = np.einsum("nkp,np->nk", x, self.coef_[rows])
        return fitted

    def _idle(self, k: int) -> None:
        # refits on an empty window leave the coefficients NaN, as they start
        self.pos_ = (self.pos_ + k) % self.size_

    def _observe(self, y: FloatArray) -> None:
        self.buffer_[:, self.pos_] = y
        self.pos_ = (self.pos_ + 1) % self.size_
        valid = np.isfinite(y)
        np.copyto(self.last_, y, where=valid)
        rows = self._due.get(self.updates_ % self.refit_steps_)
        if rows is not None:
            self._refit(rows)
        # the trend now and at the path's times, in one evaluation
        trend = self._trend(slice(None), self.time_ + self.step_ * self._steps)
        self._ahead = trend[:, 1:]
        r = y - trend[:, 0]
        # a missing sample lets the residual decay as the AR(1) model expects
        self.resid_ = np.where(np.isfinite(r), r, self.rho_ * self.resid_)

    def _refit(self, rows: Any) -> None:
        # the thinned window, oldest first, read from the ring in one gather
        stride = self._stride
        ys = self.buffer_[rows[:, None], (self.pos_ + self._thinned) % self.size_]
        t = self.time_ - self._back
        x = self._features(t, np.array(self.time_))  # [points, p]
        mask = np.isfinite(ys)
        full = bool(mask.all())  # no sample missing (the usual refit): no mask to apply

        def masked(values: FloatArray, fill: float) -> FloatArray:
            """``np.where(mask, values, fill)``, which is ``values`` when ``full``."""
            return values if full else np.where(mask, values, fill)

        yz = masked(ys, 0.0)
        p = self.n_features_
        penalty = self._penalty
        enough = np.sum(mask, axis=1) >= p + 2
        coef = np.full((len(rows), p), np.nan)
        if not enough.any():
            self.coef_[rows] = coef
            self.rho_[rows] = 0.0
            self._decay[rows] = 0.0
            return
        # IRLS from least squares would start from a fit that one absurd sample tilts, and a
        # few iterations do not undo that: start from the weights of a resistant line instead
        resid = masked(yz - _resistant_line(x[:, 1], ys), np.nan)
        cut = self._cut(resid)
        absr = np.abs(masked(resid, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            w = masked(np.where(absr > cut, cut / absr, 1.0), 0.0)
        lacking = ~enough
        some_lacking = bool(lacking.any())
        for i in range(max(1, self.iterations)):  # IRLS
            wx = w[:, :, None] * x[None, :, :]  # [n, points, p]
            xtwx = np.swapaxes(wx, 1, 2) @ x + penalty * np.sum(w, axis=1)[:, None, None]
            xtwy = np.einsum("ntp,nt->np", wx, yz)
            if some_lacking:
                xtwx[lacking] = np.eye(p)
                xtwy[lacking] = 0.0
            coef = np.linalg.solve(xtwx, xtwy[..., None])[..., 0]
            resid = masked(yz - coef @ x.T, np.nan)
            if i < self.iterations - 1:  # the MAD scale follows the fit as outliers lose weight
                cut = self._cut(resid)
            absr = np.abs(masked(resid, 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                w = masked(np.where(absr > cut, cut / absr, 1.0), 0.0)
        coef[lacking] = np.nan
        self.coef_[rows] = coef
        self.fit_time_[rows] = self.time_
        if self.anchor is not None:  # rho is the anchor: no correlation to measure
            self.rho_[rows] = self.anchor
            self._decay[rows] = self.rho_[rows, None] ** self._steps[None, 1:]
            return
        a, b = resid[:, :-1], resid[:, 1:]
        pair = np.isfinite(a) & np.isfinite(b)
        num = np.sum(np.where(pair, a * b, 0.0), axis=1)
        den = np.sum(np.where(pair, a * a, 0.0), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(den > 0, num / den, 0.0)
        # the lag-1 correlation was measured at the thinned spacing: back to one step
        self.rho_[rows] = np.clip(np.where(enough, rho, 0.0), 0.0, 0.99) ** (1.0 / stride)
        self._decay[rows] = self.rho_[rows, None] ** self._steps[None, 1:]

    def _cut(self, resid: FloatArray) -> FloatArray:
        """The Huber threshold [n, 1] for residuals [n, points] (NaN: missing)."""
        scale = 1.4826 * masked_median(np.abs(resid))
        cut: FloatArray = self.huber_k * np.where(scale > 0, scale, np.inf)[:, None]
        return cut

    def _path(self) -> FloatArray:
        path = self._ahead + self._decay * self.resid_[:, None]
        # too little data for a regression: the last value (persistence)
        return np.where(np.isfinite(path), path, self.last_[:, None])


def _resistant_line(x: FloatArray, ys: FloatArray) -> FloatArray:
    """Tukey's resistant line through ``ys`` [n, points] (NaN: missing) at ``x`` [points]:
    the slope joins the medians of the first and last thirds, the intercept is the median
    offset, so up to a sixth of the points can be anything. Fitted values [n, points]."""
    third = max(1, x.size // 3)
    ends = masked_median(np.stack([ys[:, :third], ys[:, -third:]], axis=1))  # [n, 2]
    dy = ends[:, 1] - ends[:, 0]
    # the thirds' middle times, missing samples or not: it is only where IRLS starts
    dx = float(_sorted_median(x[-third:]) - _sorted_median(x[:third]))
    slope = np.where(np.isfinite(dy), dy / dx, 0.0) if dx > 0 else np.zeros(len(ys))
    fitted: FloatArray = slope[:, None] * x[None, :]
    return fitted + masked_median(ys - fitted)[:, None]


def _sorted_median(v: FloatArray) -> float:
    """``np.median`` of an increasing ``v``, bit for bit (the mean of the two middle values
    of an even count), without its sort and dispatch (a tenth of a refit)."""
    m = v.size // 2
    return float(v[m]) if v.size % 2 else float((v[m - 1] + v[m]) / 2)
