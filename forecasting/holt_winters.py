"""Additive Holt-Winters with a damped trend, a grid of smoothing parameters run in parallel.

Instead of optimising (alpha, beta, phi, gamma) by numerical search (statsmodels), every
candidate of a small grid runs online side by side, vectorised as an extra array axis, and
each series periodically picks the candidate with the lowest recent rolling-origin error
(``CandidateScorer``). Fitting is therefore one pass, an update is a handful of array
operations, and the choice keeps adapting as the series changes.

The error-correction form (Hyndman et al., *Forecasting with Exponential Smoothing*):

    e  = y - (l + phi·b + s[phase])
    l <- l + phi·b + alpha·e
    b <- phi·b + beta·e
    s[phase] <- s[phase] + gamma·e

Candidates with ``gamma < 0`` do not smooth their season: they take it from the running
time-of-day profile (mean per bin minus the overall mean, forgetting over
``profile_memory`` seasons), like a fitted model whose seasonal smoothing is zero but whose
profile keeps being re-estimated. Fast level/trend candidates (``alpha = beta = 0.8..0.9``)
over such a profile are what smooth demand curves (taxi rides, request rates) need.

A daily season is switched on once two seasons of samples were seen; until then seasonal
candidates behave as their non-seasonal twins and are not chosen. The season is stored as
at most ``max_season_bins`` time-of-day bins (each bin spans several grid steps when the
grid is fine, e.g. 15 s ticks → 5-minute bins), which keeps memory at
``n_series x candidates x bins`` whatever the tick interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from forecasting.base import FloatArray, OnlineForecaster, steps_for
from forecasting.scoring import CandidateScorer

# (alpha, beta, phi, gamma); gamma = 0 is non-seasonal, beta = 0 has no trend, gamma < 0
# takes the season from the running time-of-day profile instead of smoothing it.
DEFAULT_GRID: tuple[tuple[float, float, float, float], ...] = (
    (0.5, 0.0, 0.9, 0.0),
    (0.2, 0.0, 0.9, 0.0),
    (0.9, 0.0, 0.9, 0.0),
    (0.3, 0.05, 0.9, 0.0),
    (0.6, 0.1, 0.9, 0.0),
    (0.9, 0.2, 0.8, 0.0),
    (0.5, 0.1, 0.98, 0.0),
    (0.9, 0.8, 0.8, 0.0),
    (0.9, 0.8, 0.8, -1.0),
    (0.2, 0.0, 0.9, 0.1),
    (0.5, 0.0, 0.9, 0.2),
    (0.3, 0.02, 0.9, 0.1),
    (0.7, 0.05, 0.9, 0.3),
)


class HoltWinters(OnlineForecaster):
    """Damped additive Holt-Winters; per-series parameters chosen by recent error.

    - ``grid``: candidate ``(alpha, beta, phi, gamma)`` tuples; the first is the default
      used until the others have been scored.
    - ``season``: seconds of the seasonal cycle (``None``: never seasonal).
    - ``max_season_bins``: time-of-day bins the season is stored in.
    - ``score_window``: seconds of recent errors (EWMA span) the choice is based on.
    - ``reselect_every``: updates between two choices (not on every tick).
    - ``switch_margin``: a candidate must beat the current one by this fraction.
    - ``profile_memory``: seasons of memory of the time-of-day profile (``gamma < 0``).
    """

    name = "holt-winters"
    skips_exactly = True

    def __init__(
        self,
        *,
        grid: Sequence[tuple[float, float, float, float]] = DEFAULT_GRID,
        season: float | None = 86400.0,
        max_season_bins: int = 288,
        score_window: float = 43200.0,
        reselect_every: int = 12,
        switch_margin: float = 0.02,
        profile_memory: float = 7.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.profile_memory = profile_memory
        self.grid = tuple(tuple(g) for g in grid)
        self.season = season
        self.max_season_bins = max_season_bins
        self.score_window = score_window
        self.reselect_every = reselect_every
        self.switch_margin = switch_margin

    def _start(self, n: int) -> None:
        g = np.array(self.grid, dtype=np.float64).reshape(-1, 4)
        self.alpha_, self.beta_, self.phi_, self.gamma_ = (g[:, i].copy() for i in range(4))
        c = g.shape[0]
        m = steps_for(self.season, self.step_) if self.season else 0
        self.seasonal_ok_ = m >= 2 and bool(np.any(self.gamma_ != 0))
        self.profile_mask_ = self.gamma_ < 0
        self.season_steps_ = m
        self.bins_ = min(m, self.max_season_bins) if self.seasonal_ok_ else 1
        self.steps_per_bin_ = max(m / self.bins_, 1.0) if self.seasonal_ok_ else 1.0
        self._season_rate = np.maximum(self.gamma_, 0.0) / self.steps_per_bin_  # per update
        self.season_on_ = False
        self.level_ = np.full((n, c), np.nan)
        self.trend_ = np.zeros((n, c))
        self.season_ = np.zeros((n, c, self.bins_))
        # time-of-day profile: mean per bin minus the overall mean, both forgetting with a
        # memory of ``profile_memory`` seasons (per bin visit / per update)
        self.bin_sum_ = np.zeros((n, self.bins_))
        self.bin_count_ = np.zeros((n, self.bins_))
        self.all_sum_ = np.zeros(n)
        self.all_count_ = np.zeros(n)
        self.profile_full_ = False  # every bin and series has a sample (``_profile``)
        memory = max(self.profile_memory, 1.0)
        self.bin_keep_ = 1.0 - 1.0 / (memory * self.steps_per_bin_)
        self.all_keep_ = 1.0 - 1.0 / (memory * max(m, 1))
        # sum_{i=1..h} phi^i per candidate: the damped trend's contribution at step h
        powers = self.phi_[:, None] ** np.arange(1, self.horizon + 1)[None, :]
        self.damp_ = np.cumsum(powers, axis=1)  # [c, horizon]
        span = max(20.0, min(self.score_window / self.step_, 5000.0))
        self.scorer_ = CandidateScorer(n, c, horizon=self.horizon, span=span)
        self.choice_ = np.zeros(n, dtype=np.int64)
        self.paths_ = np.full((n, c, self.horizon), np.nan)
        self._ahead = np.arange(1, self.horizon + 1)
        self._rows = np.arange(n)

    def _bin(self, t: FloatArray) -> Any:
        period = self.season_steps_ * self.step_
        phase = np.mod(t, period) / period
        return np.minimum((phase * self.bins_).astype(np.int64), self.bins_ - 1)

    def _bin_of(self, t: float) -> int:
        """``_bin`` of one time, in Python floats (the same operations, the same bits):
        numpy's dispatch on a scalar costs more than the arithmetic."""
        period = self.season_steps_ * self.step_
        phase = t % period / period
        return min(int(phase * self.bins_), self.bins_ - 1)

    def _idle(self, k: int) -> None:
        # nothing is scored, so no choice changes; the level stays unset and sums zero
        self.scorer_.skip(k)
        if self.seasonal_ok_ and not self.season_on_:
            first = 2 * self.season_steps_ - 1 - self.updates_  # the update that starts it
            if first < k:
                self._start_season(self._bin_of(self.time_ + (max(first, 0) + 1) * self.step_))

    def _restart(self, rows: NDArray[np.bool_]) -> None:
        # the next sample starts the level as a series' first one does (the season stays:
        # it is the time of day's shape, not the level); the paths issued from the stale
        # level were never used and would only punish the candidates that follow it fast
        self.level_[rows] = np.nan
        self.trend_[rows] = 0.0
        self.scorer_.forget(rows)

    def _observe(self, y: FloatArray) -> None:
        self.scorer_.observe(y)
        valid = np.isfinite(y)
        b_now = self._bin_of(self.time_) if self.seasonal_ok_ else 0
        s_now = self.season_[:, :, b_now]
        if self.season_on_:
            profile = self._profile(slice(b_now, b_now + 1))  # [n, 1]
            s_now = np.where(self.profile_mask_, profile, s_now)
        damped = self.phi_ * self.trend_
        ahead = self.level_ + damped  # without the season: the new level's start
        err = y[:, None] - (ahead + s_now)
        e = np.where(np.isfinite(err), err, 0.0)  # (a missing sample gives NaN too)
        if np.isfinite(self.level_).all():  # no level to start: ``start`` below is all False
            self.level_ = ahead + self.alpha_ * e
        else:
            # a series' first valid sample starts its level
            start = valid[:, None] & ~np.isfinite(self.level_)
            self.level_ = np.where(start, y[:, None] - s_now, ahead + self.alpha_ * e)
        self.trend_ = damped + self.beta_ * e
        if self.season_on_:
            self.season_[:, :, b_now] = s_now + self._season_rate * e
        if self.seasonal_ok_:
            if valid.all():  # a sample of every series: the masks below select all
                keep_bin: Any = self.bin_keep_
                keep_all: Any = self.all_keep_
                yv = y
            else:
                keep_bin = np.where(valid, self.bin_keep_, 1.0)
                keep_all = np.where(valid, self.all_keep_, 1.0)
                yv = np.where(valid, y, 0.0)
            # in place, on the bin's column: the same products and sums, fewer copies
            bin_sum, bin_count = self.bin_sum_[:, b_now], self.bin_count_[:, b_now]
            bin_sum *= keep_bin
            bin_sum += yv
            bin_count *= keep_bin
            bin_count += valid
            self.all_sum_ *= keep_all
            self.all_sum_ += yv
            self.all_count_ *= keep_all
            self.all_count_ += valid
            if not self.season_on_ and self.updates_ + 1 >= 2 * self.season_steps_:
                self._start_season(b_now)
        if self.updates_ % self.reselect_every == 0:
            self._select()

    def _profile(self, bins: Any) -> FloatArray:
        """The time-of-day profile [n, len(bins)] (zero where a bin has no data yet)."""
        if not self.profile_full_:
            # a count is 0 until its first sample, then at least 1 for good (it decays only
            # on a visit that adds 1): once every count is, the masks below select all
            self.profile_full_ = bool((self.bin_count_ > 0).all() and (self.all_count_ > 0).all())
        if self.profile_full_:
            centre = self.all_sum_ / self.all_count_
            full: FloatArray = self.bin_sum_[:, bins] / self.bin_count_[:, bins] - centre[:, None]
            return full
        count = self.bin_count_[:, bins]
        seen = self.all_count_ > 0
        has = (count > 0) & seen[:, None]
        mean = self.bin_sum_[:, bins] / np.where(has, count, 1.0)
        centre = self.all_sum_ / np.where(seen, self.all_count_, 1.0)
        return np.where(has, mean - centre[:, None], 0.0)

    def _start_season(self, b_now: int) -> None:
        profile = self._profile(slice(None))  # [n, bins]
        learning = self.gamma_ > 0
        self.season_[:, learning, :] = profile[:, None, :]
        # the level tracked the seasonal swing so far: take the current phase out of it
        self.level_[:, self.gamma_ != 0] -= profile[:, b_now, None]
        self.season_on_ = True

    def _select(self) -> None:
        scores = self.scorer_.scores()
        if not self.season_on_:
            scores[:, self.gamma_ != 0] = np.inf
        best = np.argmin(scores, axis=1)
        rows = np.arange(scores.shape[0])
        cur = scores[rows, self.choice_]
        better = scores[rows, best] < cur * (1.0 - self.switch_margin)
        better |= ~np.isfinite(cur) & np.isfinite(scores[rows, best])
        self.choice_ = np.where(better, best, self.choice_)

    def _path(self) -> FloatArray:
        base = self.level_[:, :, None] + self.trend_[:, :, None] * self.damp_[None, :, :]
        if self.season_on_:
            bins = self._bin(self.time_ + self.step_ * self._ahead)
            season = self.season_[:, :, bins]  # a new array: the profile's rows go in place
            season[:, self.profile_mask_] = self._profile(bins)[:, None, :]
            base += season
        self.paths_ = base
        self.scorer_.push(base)
        return base[self._rows, self.choice_]
