"""``auto``: per series, the model family with the lowest recent rolling-origin error.

All member models run online side by side (their updates are cheap); the forecasts each
issued at earlier origins are scored against the samples that arrived since (EWMA of the
absolute error at steps 1, ~H/2 and H). Every ``reselect_every`` updates, and only then,
each series switches to the member with the lowest score if it beats the current one by
``switch_margin``. Until a member has been scored on enough samples the ``default`` family
is used; a series whose chosen member has no forecast yet falls back to persistence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from forecasting.base import FloatArray, OnlineForecaster
from forecasting.errors import ForecastError
from forecasting.holt_winters import HoltWinters
from forecasting.naive import Persistence, SeasonalNaive
from forecasting.scoring import CandidateScorer
from forecasting.trend import RobustTrend

MEMBER_TYPES: dict[str, type[OnlineForecaster]] = {
    "persistence": Persistence,
    "seasonal-naive": SeasonalNaive,
    "holt-winters": HoltWinters,
    "robust-trend": RobustTrend,
}
_SEASONAL = ("seasonal-naive", "holt-winters", "robust-trend")


class Auto(OnlineForecaster):
    """Chooses per series among ``members`` by recent error.

    - ``members``: family names (keys of ``MEMBER_TYPES``).
    - ``default``: the family used before the scores are trustworthy.
    - ``season``: seconds of the seasonal cycle, passed to the seasonal members.
    - ``member_params``: extra hyper-parameters per family.
    - ``score_window``: seconds of recent errors (EWMA span) a choice is based on.
    - ``reselect_every``: updates between two choices.
    - ``switch_margin``: fraction by which a challenger must beat the current family.
    - ``min_evidence``: scored one-step forecasts a family needs before it can be chosen.
    """

    name = "auto"
    skips_exactly = True

    def __init__(
        self,
        *,
        members: Sequence[str] = ("persistence", "seasonal-naive", "holt-winters", "robust-trend"),
        default: str = "holt-winters",
        season: float = 86400.0,
        member_params: Mapping[str, Mapping[str, Any]] | None = None,
        score_window: float = 43200.0,
        reselect_every: int = 12,
        switch_margin: float = 0.02,
        min_evidence: int = 24,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        unknown = [m for m in members if m not in MEMBER_TYPES]
        if unknown or not members:
            known = ", ".join(MEMBER_TYPES)
            raise ForecastError(f"unknown auto members {unknown} (known: {known})")
        if default not in members:
            raise ForecastError(f"default {default!r} is not one of the members {list(members)}")
        self.members = tuple(members)
        self.default = default
        self.season = season
        self.member_params = {k: dict(v) for k, v in (member_params or {}).items()}
        self.score_window = score_window
        self.reselect_every = reselect_every
        self.switch_margin = switch_margin
        self.min_evidence = min_evidence

    def _start(self, n: int) -> None:
        self.models_: list[OnlineForecaster] = []
        for name in self.members:
            params: dict[str, Any] = {
                "horizon": self.horizon,
                "nonnegative": self.nonnegative,
                "clip": None,  # the input is cleaned once, here
                "min_history": 1,
                "intervals": False,
            }
            if name in _SEASONAL:
                params["season"] = self.season
            if name == "holt-winters":
                params["score_window"] = self.score_window
            params.update(self.member_params.get(name, {}))
            model = MEMBER_TYPES[name](**params)
            model.fit(np.empty((n, 0)), step=self.step_, end=self.time_)
            self.models_.append(model)
        span = max(20.0, min(self.score_window / self.step_, 5000.0))
        self.scorer_ = CandidateScorer(n, len(self.models_), horizon=self.horizon, span=span)
        self.default_index_ = self.members.index(self.default)
        self.choice_ = np.full(n, self.default_index_, dtype=np.int64)
        self._rows = np.arange(n)
        if "persistence" in self.members:  # reuse the member instead of running it twice
            self.fallback_ = self.models_[self.members.index("persistence")]
        else:
            self.fallback_ = Persistence(horizon=self.horizon, clip=None, intervals=False)
            self.fallback_.fit(np.empty((n, 0)), step=self.step_, end=self.time_)
        # the models every update advances: the members, and the fallback if not one of them
        self._running = list(self.models_)
        if self.fallback_ not in self.models_:
            self._running.append(self.fallback_)

    def _idle(self, k: int) -> None:
        # nothing is scored, so no choice changes
        self.scorer_.skip(k)
        for model in self._running:
            model._skip_empty(k)

    def _restart(self, rows: NDArray[np.bool_]) -> None:
        # the members run without ``max_gap``: they learn of the gap from here
        self.scorer_.forget(rows)
        for model in self._running:
            model._restart(rows)

    def _observe(self, y: FloatArray) -> None:
        self.scorer_.observe(y)
        # the sample is cleaned once for the members that would clean it alike
        prepared: dict[bool, tuple[FloatArray, NDArray[np.bool_]]] = {}
        clipped = y is not self.raw_
        if not clipped:  # it is the sample as prepared, which preparing again would give
            prepared[self.nonnegative] = (y, self.valid_)  # bit for bit
        # a clipped sample is what the members forecast from, but the seasonal ones keep the
        # series as it was (``SeasonalNaive._observe``): they get the sample before clipping
        raws: dict[bool, FloatArray] = {}
        for model in self._running:
            sample = prepared.get(model.nonnegative)
            if sample is None:
                sample = prepared[model.nonnegative] = model._prepare(y)
            raw = None
            if clipped:
                raw = raws.get(model.nonnegative)
                if raw is None:
                    raw = raws[model.nonnegative] = model._prepare(self.raw_)[0]
            model._step(*sample, raw)
        if self.updates_ % self.reselect_every == 0:
            self._select()

    def _select(self) -> None:
        scores = self.scorer_.scores(self.min_evidence)
        best = np.argmin(scores, axis=1)
        rows = np.arange(scores.shape[0])
        cur = scores[rows, self.choice_]
        top = scores[rows, best]
        better = (top < cur * (1.0 - self.switch_margin)) | (~np.isfinite(cur) & np.isfinite(top))
        self.choice_ = np.where(better, best, self.choice_)

    def _path(self) -> FloatArray:
        paths = np.array([m.mean_ for m in self.models_])  # [members, n, horizon]: no stack()
        self.scorer_.push(paths.transpose(1, 0, 2))
        chosen = paths[self.choice_, self._rows]
        return np.where(np.isfinite(chosen), chosen, self.fallback_.mean_)

    def chosen(self) -> list[str]:
        """The family currently used for each series."""
        return [self.members[i] for i in self.choice_.tolist()]
