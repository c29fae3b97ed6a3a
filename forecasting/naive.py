"""Baselines and fallbacks: persistence, seasonal naive, and its change-only variant."""

from __future__ import annotations

from typing import Any

import numpy as np

from forecasting.base import FloatArray, OnlineForecaster, steps_for


class Persistence(OnlineForecaster):
    """Every future value equals the last valid sample (carried across gaps)."""

    name = "persistence"
    skips_exactly = True

    def _idle(self, k: int) -> None:
        pass

    def _start(self, n: int) -> None:
        self.last_ = np.full(n, np.nan)

    def _observe(self, y: FloatArray) -> None:
        np.copyto(self.last_, y, where=np.isfinite(y))

    def _path(self) -> FloatArray:
        return self.last_[:, None].repeat(self.horizon, axis=1)


class SeasonalNaive(OnlineForecaster):
    """The value one season earlier (``season`` seconds, daily by default).

    Falls back to persistence for a step whose value one season ago is missing, and so
    for the whole path while less than one season of history has been seen. Seasons longer
    than ``max_season_steps`` grid steps are not kept (memory): the model is then
    persistence, and says so in ``seasonal_``.
    """

    name = "seasonal-naive"
    skips_exactly = True

    def __init__(
        self, *, season: float = 86400.0, max_season_steps: int = 8064, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.season = season
        self.max_season_steps = max_season_steps

    def _start(self, n: int) -> None:
        m = steps_for(self.season, self.step_)
        self.seasonal_ = 1 < m <= self.max_season_steps
        self.period_ = m if self.seasonal_ else 1
        self.buffer_ = np.full((n, self.period_), np.nan)
        self.pos_ = 0
        self.last_ = np.full(n, np.nan)
        # ring position of "now + h - k·m", the same season phase as the step ahead
        self._ahead = np.arange(1, self.horizon + 1)

    def _idle(self, k: int) -> None:
        self.pos_ = (self.pos_ + k) % self.period_

    def _observe(self, y: FloatArray) -> None:
        # The season keeps the series as it was, not as clipped: a sample clipped toward
        # the value a season ago would otherwise store that value again, and a spike that
        # came before the clipper could judge it (the first samples) would repeat forever.
        self.buffer_[:, self.pos_] = self.raw_
        self.pos_ = (self.pos_ + 1) % self.period_
        np.copyto(self.last_, y, where=np.isfinite(y))

    def _past(self) -> FloatArray:
        """The values one season before each step ahead [n, horizon] (a view when the ring
        does not wrap: most updates)."""
        start = self.pos_  # the slot of "now + 1 - m"
        if start + self.horizon <= self.period_:
            return self.buffer_[:, start : start + self.horizon]
        return self.buffer_[:, (self.pos_ - 1 + self._ahead) % self.period_]

    def _path(self) -> FloatArray:
        if not self.seasonal_:
            return self.last_[:, None].repeat(self.horizon, axis=1)
        past = self._past()
        return np.where(np.isfinite(past), past, self.last_[:, None])


class SeasonalChange(SeasonalNaive):
    """The last value, moved as the series moved one season earlier:
    ``y(t+h) = y(t) · y(t+h-m) / y(t-m)``.

    Knows when yesterday's ramps and steps came without carrying yesterday's level (a quiet
    Sunday after a busy Friday): between them the forecast is the last value. The season is
    kept unclipped, so a step that outlier clipping softened today is still seen whole
    tomorrow. The ratio is bounded to ``[1/max_ratio, max_ratio]``; where either past value
    is missing or not positive the step falls back to persistence, as does the whole path
    during the first season.
    """

    name = "seasonal-change"

    def __init__(self, *, max_ratio: float = 4.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_ratio = max_ratio

    def _start(self, n: int) -> None:
        super()._start(n)
        self.base_ = np.full(n, np.nan)

    def _observe(self, y: FloatArray) -> None:
        self.base_ = self.buffer_[:, self.pos_].copy()  # y(t-m): the slot y(t) replaces
        # the season keeps the series unclipped (``SeasonalNaive._observe``): clipping takes
        # the first sample of every level shift, exactly the change this model repeats
        super()._observe(y)

    def _path(self) -> FloatArray:
        last = self.last_[:, None].repeat(self.horizon, axis=1)
        if not self.seasonal_:
            return last
        past = self._past()
        base = self.base_[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.clip(past / base, 1.0 / self.max_ratio, self.max_ratio)
        usable = np.isfinite(ratio) & (base > 0) & (past >= 0)
        return np.where(usable, last * ratio, last)
