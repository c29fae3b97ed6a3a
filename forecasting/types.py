"""Values produced by forecasting: one ``Forecast`` per (target, signal)."""

from __future__ import annotations

from dataclasses import dataclass

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
        if ``t`` lies beyond the horizon)."""
        i = int(np.searchsorted(self.times, t - 1e-9))
        i = min(i, len(self.times) - 1)
        return float(self.mean[i]), float(self.lower[i]), float(self.upper[i])

    def max_upper(self, until: float) -> float:
        """Largest upper bound over the horizon up to ``until``."""
        mask = self.times <= until + 1e-9
        if not mask.any():
            mask[0] = True
        return float(np.max(self.upper[mask]))
