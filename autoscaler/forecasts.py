"""The engine's forecasting adapter: one online model per forecast-enabled signal.

The engine calls ``forecast`` every tick for every forecast-enabled signal with the
history of all its targets on the tick grid. The provider keeps the fitted model of each
signal between calls and tells calls apart by their tick on that grid, ``round(now /
step)``, as the window store does (a live pass starts a few milliseconds after its
scheduled time, never exactly on it). When the targets are the same and the tick moved on
by one, it feeds the new column to the model (an O(n) update); by a few (missed ticks, whose
columns the store left NaN), it feeds each of the new columns in turn; otherwise (first
call, targets added or removed, a new step or horizon, a clock that went back, a gap longer
than the window) it refits from the history it was given. Called again within the same
tick it updates nothing and answers the same forecasts, timed from the new ``now``.

A target gets a ``Forecast`` only when it has enough data (``min_history`` valid samples,
the last one not older than ``max_gap``); the others are simply absent from the result.
Nothing raises into the engine: an unusable call (mismatched shapes, a non-positive step)
is logged and answered with no forecasts, and the signal's state is dropped.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from autoscaler.config import ForecastSettings
from forecasting.auto import Auto
from forecasting.base import OnlineForecaster
from forecasting.errors import ForecastError
from forecasting.registry import make_model
from forecasting.types import Forecast, ForecastBatch

log = logging.getLogger(__name__)


class ForecastProvider(Protocol):
    """What the engine asks for forecasts."""

    def forecast(
        self,
        signal: str,
        targets: Sequence[str],
        history: NDArray[np.float64],
        *,
        step: float,
        horizon_steps: int,
        now: float,
    ) -> Mapping[str, Forecast]:
        """Forecasts of ``signal`` for the ``targets`` that have enough data.

        ``history`` is ``[len(targets), T]`` on the tick grid, its last column at the grid
        time nearest ``now`` (``round(now / step) * step``), NaN where missing. Forecast
        times are ``now + step * (1..horizon_steps)``.
        """
        ...


@dataclass(slots=True)
class _SignalState:
    targets: tuple[str, ...]
    step: float
    horizon_steps: int
    tick: int
    """``round(now / step)`` of the call the model has seen up to."""
    now: float
    model: OnlineForecaster
    result: Mapping[str, Forecast]


class OnlineProvider:
    """``ForecastProvider`` over the models of ``forecasting``, one online state per signal."""

    def __init__(self, settings: ForecastSettings) -> None:
        make_model(settings.model)  # an unknown model name fails here, at start-up
        self.settings = settings
        self._states: dict[str, _SignalState] = {}
        self.refits = 0
        """Refits from history so far (updates are the other calls): for tests and metrics."""

    def forecast(
        self,
        signal: str,
        targets: Sequence[str],
        history: NDArray[np.float64],
        *,
        step: float,
        horizon_steps: int,
        now: float,
    ) -> Mapping[str, Forecast]:
        try:
            return self._forecast(
                signal, tuple(targets), history, step=step, horizon_steps=horizon_steps, now=now
            )
        except (ForecastError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            log.warning("forecast of signal %r failed: %s", signal, exc)
            self._states.pop(signal, None)
            return {}

    def _forecast(
        self,
        signal: str,
        targets: tuple[str, ...],
        history: NDArray[np.float64],
        *,
        step: float,
        horizon_steps: int,
        now: float,
    ) -> Mapping[str, Forecast]:
        hist = np.asarray(history, dtype=np.float64)
        if hist.ndim == 1 and len(targets) == 1:
            hist = hist[None, :]
        if hist.ndim != 2 or hist.shape[0] != len(targets):
            raise ForecastError(
                f"history has shape {hist.shape}, expected ({len(targets)}, T) for {len(targets)}"
                " targets"
            )
        if not (math.isfinite(step) and step > 0):
            raise ForecastError(f"step must be a positive number of seconds, got {step!r}")
        if horizon_steps < 1 or not math.isfinite(now):
            raise ForecastError(
                f"need horizon_steps >= 1 and a finite now ({horizon_steps}, {now})"
            )
        if not targets or hist.shape[1] == 0:
            self._states.pop(signal, None)
            return {}
        tick = round(now / step)
        state = self._states.get(signal)
        if (
            state is None
            or state.targets != targets
            or state.step != step
            or state.horizon_steps != horizon_steps
        ):
            state = None
        # columns the model has not seen: all of them, unless it saw the ticks before these
        new = hist.shape[1] if state is None else tick - state.tick
        if state is not None and new == 0:
            if now != state.now:  # a second pass in the tick (the first one after a start)
                state.result = self._result(
                    state.model, targets, now=now, step=step, horizon_steps=horizon_steps
                )
                state.now = now
            return state.result
        if state is not None and 0 < new <= hist.shape[1]:
            # every tick since the model's last one is in ``hist`` (with a window of a tick
            # or two, all of its columns are new): a refit would see only those
            model = state.model
            for j in range(hist.shape[1] - new, hist.shape[1]):
                model.update(hist[:, j])
        else:
            # the history's last column is at the tick's grid time, not at ``now``
            model = self._model(horizon_steps).fit(hist, step=step, end=tick * step)
            self.refits += 1
        result = self._result(model, targets, now=now, step=step, horizon_steps=horizon_steps)
        if state is not None and state.model is model:  # updated: the same state moves on
            state.tick, state.now, state.result = tick, now, result
        else:
            self._states[signal] = _SignalState(
                targets, step, horizon_steps, tick, now, model, result
            )
        return result

    def _model(self, horizon_steps: int) -> OnlineForecaster:
        s = self.settings
        params: dict[str, Any] = {
            "horizon": horizon_steps,
            "coverage": s.coverage,
            "nonnegative": s.nonnegative,
            "min_history": max(1, s.min_history),
            "max_gap": s.max_gap if s.max_gap > 0 else None,
            "clip": s.clip if s.clip > 0 else None,
        }
        if s.model in ("auto", "holt-winters"):
            params["reselect_every"] = max(1, s.reselect_every)
        if s.model in ("auto", "holt-winters", "seasonal-naive", "seasonal-change", "robust-trend"):
            params["season"] = s.season if s.season > 0 else None
        if (
            s.model in ("seasonal-naive", "seasonal-change", "robust-trend", "auto")
            and params["season"] is None
        ):
            params["season"] = 86400.0  # these need some cycle; a daily one is harmless
        return make_model(s.model, **params)

    @staticmethod
    def _result(
        model: OnlineForecaster,
        targets: tuple[str, ...],
        *,
        now: float,
        step: float,
        horizon_steps: int,
    ) -> ForecastBatch:
        block = model.predict_block(horizon_steps)
        mean, lower, upper = block
        times = now + _offsets(step, horizon_steps)
        ok = np.logical_and.reduce(np.isfinite(block), axis=(0, 2))  # all three finite
        rows = {t: i for i, (t, good) in enumerate(zip(targets, ok.tolist(), strict=True)) if good}
        names = model.chosen() if isinstance(model, Auto) else None
        models = model.name if names is None else [f"{model.name}:{n}" for n in names]
        return ForecastBatch(now, times, mean, lower, upper, rows, models)


@functools.lru_cache(maxsize=8)
def _offsets(step: float, horizon_steps: int) -> NDArray[np.float64]:
    """``step * (1..horizon_steps)``, the forecast times less ``now`` (read-only, shared)."""
    offsets = step * np.arange(1, horizon_steps + 1, dtype=np.float64)
    offsets.setflags(write=False)
    return offsets


class TargetForecasts(Mapping[str, Forecast]):
    """One target's forecasts, by signal, read through from the pass's batches."""

    __slots__ = ("_batches", "_target")

    def __init__(self, target: str, batches: Mapping[str, Mapping[str, Forecast]]) -> None:
        self._target = target
        self._batches = batches

    def __getitem__(self, signal: str) -> Forecast:
        return self._batches[signal][self._target]

    def get(self, signal: str, default: Any = None) -> Any:  # no KeyError round trip
        batch = self._batches.get(signal)
        return default if batch is None else batch.get(self._target, default)

    def __iter__(self) -> Iterator[str]:
        return (s for s, b in self._batches.items() if self._target in b)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def make_provider(settings: ForecastSettings) -> ForecastProvider:
    """The provider the engine uses for ``settings`` (``[forecasting]``)."""
    return OnlineProvider(settings)
