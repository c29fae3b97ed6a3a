"""Values produced by forecasting: one ``Forecast`` per (target, signal)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class Forecast:
    """A forecast issued at ``issued_at`` for the horizon times ``times``.

    ``mean``, ``lower`` and ``upper`` have the same length as ``times`` (epoch seconds,
    increasing). ``lower``/``upper`` bound the prediction interval; policies use ``upper``
    for scale-up decisions.
    """

    issued_at: float
    times: FloatArray
    mean: FloatArray
    lower: FloatArray
    upper: FloatArray
    model: str

    def at(self, t: float) -> tuple[float, float, float]:
        """Mean, lower and upper at the first horizon time at or after ``t`` (the last one
        if ``t`` lies beyond the horizon or is NaN)."""
        # bisect, not np.searchsorted: on a few dozen horizon times and one value numpy's
        # call overhead is most of a policy's read of its forecast (NaN sorts last there)
        last = len(self.times) - 1
        i = min(bisect_left(self.times, t - 1e-9), last) if t == t else last
        return float(self.mean[i]), float(self.lower[i]), float(self.upper[i])

    def max_upper(self, until: float) -> float:
        """Largest upper bound over the horizon up to ``until``."""
        mask = self.times <= until + 1e-9
        if not mask.any():
            mask[0] = True
        return float(np.max(self.upper[mask]))


class ForecastBatch(Mapping[str, Forecast]):
    """Forecasts of one signal for many series issued together, by series name.

    Holds the ``[n, steps]`` arrays (read-only) and builds a series' ``Forecast`` (row views,
    no copies) when it is first looked up: a pass that reads ten of a thousand forecasts
    pays for ten.
    """

    __slots__ = ("_cache", "_models", "_rows", "issued_at", "lower", "mean", "times", "upper")

    def __init__(
        self,
        issued_at: float,
        times: FloatArray,
        mean: FloatArray,
        lower: FloatArray,
        upper: FloatArray,
        rows: Mapping[str, int],
        models: str | Sequence[str],
    ) -> None:
        for a in (times, mean, lower, upper):
            a.setflags(write=False)
        self.issued_at = issued_at
        self.times, self.mean, self.lower, self.upper = times, mean, lower, upper
        self._rows = rows
        """Row of each series that has a forecast; others are absent."""
        self._models = models
        """The model's label, for every row or one per row."""
        self._cache: dict[str, Forecast] = {}

    @property
    def rows(self) -> Mapping[str, int]:
        """Row of each series that has a forecast."""
        return self._rows

    @property
    def models(self) -> str | Sequence[str]:
        """The model's label, for every row or one per row."""
        return self._models

    def __getitem__(self, name: str) -> Forecast:
        f = self._cache.get(name)
        if f is None:
            i = self._rows[name]
            model = self._models if isinstance(self._models, str) else self._models[i]
            f = self._cache[name] = Forecast(
                self.issued_at, self.times, self.mean[i], self.lower[i], self.upper[i], model
            )
        return f

    def get(self, name: str, default: Any = None) -> Any:  # no KeyError round trip
        return self[name] if name in self._rows else default

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)
