"""Reading the evidence a rule acts on: fresh observations, ``for`` windows, forecasts.

Absence of evidence is not evidence: a missing, stale or non-finite value comes back with
a ``problem`` (the rule then holds with a reason starting "stale:"), and a ``for`` window
with a gap, or one the history does not yet cover, does not hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from policies.base import Context

Op = Literal[">", "<"]


@dataclass(frozen=True, slots=True)
class Reading:
    """The current value of a signal, or why it cannot be used (``problem``)."""

    signal: str
    value: float
    at: float = math.nan
    problem: str = ""

    @property
    def ok(self) -> bool:
        """True when the value is fresh and finite."""
        return not self.problem


def read(ctx: Context, signal: str) -> Reading:
    """The latest observation of ``signal`` for ``ctx.target``."""
    obs = ctx.observations.get(signal)
    if obs is None:
        return Reading(signal, math.nan, problem=f"{signal} is missing")
    if obs.stale:
        age = ctx.now - obs.at
        return Reading(signal, obs.value, obs.at, f"{signal} is stale (sampled {age:.0f} s ago)")
    if not math.isfinite(obs.value):
        return Reading(signal, obs.value, obs.at, f"{signal} is not finite ({obs.value})")
    return Reading(signal, obs.value, obs.at)


def value_of(ctx: Context, signal: str) -> float | None:
    """The latest value of ``signal`` for ``ctx.target`` when ``read`` finds no problem
    with it, else None (``read`` then says why): for the rules that read their signals on
    every pass, which need no ``Reading`` while the value is good."""
    obs = ctx.observations.get(signal)
    if obs is None or obs.stale or not math.isfinite(obs.value):
        return None
    return obs.value


def holds(value: float, op: Op, threshold: float) -> bool:
    """``value op threshold``."""
    return value > threshold if op == ">" else value < threshold


def held_for(ctx: Context, signal: str, seconds: float, *, op: Op, threshold: float) -> bool:
    """True when every sample of the last ``seconds`` satisfies ``op threshold`` and the
    samples cover the whole window (a gap or a short history means "not yet")."""
    if seconds <= 0:
        return True
    times, values = ctx.history.window(ctx.target, signal, seconds)
    if len(values) == 0 or bool(np.isnan(values).any()):
        return False
    # The grid step is the slack: the first sample may lie up to one step inside the window
    # (a window shorter than a step holds one sample, the current one).
    if float(times[0]) > ctx.now - seconds + ctx.history.interval + 1e-6:
        return False
    return bool(np.all(values > threshold) if op == ">" else np.all(values < threshold))


@dataclass(frozen=True, slots=True)
class ForecastReading:
    """A forecast of ``signal`` at time ``at`` (mean, lower, upper), or its ``problem``."""

    signal: str
    at: float
    mean: float = math.nan
    lower: float = math.nan
    upper: float = math.nan
    model: str = ""
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def forecast_at(ctx: Context, signal: str, *, at: float, max_age: float) -> ForecastReading:
    """The forecast of ``signal`` at time ``at``; a forecast issued more than ``max_age``
    seconds ago, one whose horizon ends before ``at`` or a non-finite one is a problem."""
    fc = ctx.forecasts.get(signal)
    if fc is None:
        return ForecastReading(signal, at, problem=f"no forecast of {signal}")
    if ctx.now - fc.issued_at > max_age:
        age = ctx.now - fc.issued_at
        return ForecastReading(signal, at, problem=f"forecast of {signal} is {age:.0f} s old")
    if len(fc.times) == 0 or float(fc.times[-1]) < at - 1e-6:
        return ForecastReading(
            signal, at, problem=f"forecast of {signal} does not reach {at - ctx.now:g} s ahead"
        )
    mean, lower, upper = fc.at(at)
    if not (math.isfinite(mean) and math.isfinite(upper)):
        return ForecastReading(signal, at, problem=f"forecast of {signal} is not finite")
    return ForecastReading(signal, at, mean, lower, upper, fc.model)


def num(x: float) -> float | None:
    """A JSON-safe number: ``None`` for NaN and infinities (unset thresholds)."""
    return x if math.isfinite(x) else None
