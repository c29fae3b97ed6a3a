"""The online forecaster: one fitting loop and one update path shared by every model.

A model is scikit-learn shaped: hyper-parameters in ``__init__``, fitted state in attributes
ending in ``_``. It forecasts a batch of series at once (``[n_series, T]`` on a regular
grid, oldest first, NaN for gaps). ``fit`` is literally ``update`` applied to every column
from an empty state, so an online update is exactly what a refit on one more column gives.

Every update: clean the sample (non-finite or beyond ±1e100 → missing; negative → missing
for non-negative metrics; an isolated extreme jump is clipped against the last one-step
forecast, and a wild run of them that comes back as wildly restarts the level), score
the paths issued earlier (interval quantiles), let the model update its state, and issue
the new mean path for steps ``1..horizon``.

Documented "not enough data": a series gets NaN (mean, lower and upper) while it has fewer
than ``min_history`` valid samples, or when its last valid sample is older than
``max_gap`` seconds; the first sample after such a gap starts the level of the models
that keep one (``_restart``) as a series' first sample does. Nothing here raises on
degenerate values; ``ForecastError`` is only raised for unusable arguments (a 3-D array, a
non-positive step, a wrong column length).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forecasting.errors import ForecastError
from forecasting.grid import MAX_ABS, as_batch
from forecasting.scoring import ResidualTracker

FloatArray = NDArray[np.float64]

_SCALE_RATE = 0.1  # EWMA rate of the one-step absolute error used for clipping
_SCALE_FLOOR = 1e-6  # the clipping scale is at least this fraction of the forecast's size...
_SCALE_FLOOR_ABS = 1e-12  # ...and at least this: a flat series (zero error) still clips
_WILD = 100.0  # a level shift beyond this many clipping bounds is wild (see ``_clip``)


class OnlineForecaster(ABC):
    """Base class of every model.

    Parameters shared by all models:

    - ``horizon``: steps forecast ahead (the provider asks for ``horizon`` seconds / step).
    - ``coverage``: nominal coverage of the prediction interval (0.9 → 5 %..95 %).
    - ``interval_window``: recent errors per horizon step the interval quantiles use.
    - ``refresh_every``: quantiles of every series are recomputed once per this many
      updates (round robin, so each update does 1/refresh_every of the work).
    - ``clip``: an innovation beyond ``clip`` x 1.25 x (mean absolute one-step error) is
      clipped, unless the previous sample jumped the same way (a level shift, not a spike);
      ``None`` disables clipping. The error is taken as at least a millionth of the
      forecast (and 1e-12), so a flat series still clips an absurd sample.
    - ``nonnegative``: negative samples are missing and forecasts are clipped at zero.
    - ``min_history``: valid samples a series needs before it is forecast.
    - ``max_gap``: seconds without a valid sample after which a series is not forecast
      (``None``: forever); the sample that ends such a gap starts the level again.
    - ``intervals``: keep interval bookkeeping (off for the members of ``auto``).
    """

    name: ClassVar[str] = ""
    skips_exactly: ClassVar[bool] = False
    """The model implements ``_idle``: a fit skips the empty columns a window starts with
    instead of updating on each of them (see ``_skip_empty``)."""

    def __init__(
        self,
        *,
        horizon: int = 20,
        coverage: float = 0.9,
        interval_window: int = 120,
        refresh_every: int = 24,
        clip: float | None = 5.0,
        nonnegative: bool = False,
        min_history: int = 3,
        max_gap: float | None = None,
        intervals: bool = True,
    ) -> None:
        if horizon < 1:
            raise ForecastError(f"horizon must be at least one step, got {horizon}")
        if not 0.0 < coverage < 1.0:
            raise ForecastError(f"coverage must lie in (0, 1), got {coverage}")
        self.horizon = horizon
        self.coverage = coverage
        self.interval_window = interval_window
        self.refresh_every = refresh_every
        self.clip = clip
        self.nonnegative = nonnegative
        self.min_history = min_history
        self.max_gap = max_gap
        self.intervals = intervals

    # --- public API -----------------------------------------------------------------

    def fit(self, y: ArrayLike, *, step: float = 1.0, end: float | None = None) -> Self:
        """Fit on a batch ``y`` [n_series, T] whose last column is at time ``end``.

        ``end`` defaults to ``(T - 1) * step``; it matters only for time-of-day features and
        the phase of a seasonal component.
        """
        if not (np.isfinite(step) and step > 0):
            raise ForecastError(f"step must be a positive number of seconds, got {step!r}")
        batch = as_batch(y)
        n, t = batch.shape
        self.step_ = float(step)
        last = (t - 1) * self.step_ if end is None else float(end)
        self.time_ = last - t * self.step_  # time of the (virtual) column before the first
        self.n_series_ = n
        self.updates_ = 0
        self.seen_ = np.zeros(n)
        self.since_valid_ = np.full(n, np.inf)
        self.gap_free_ = False  # ``since_valid_`` is all zero: every series valid last update
        self.scale_ = np.full(n, np.nan)
        self.scaled_ = np.zeros(n)  # one-step errors the scale has averaged...
        self.averaging_ = True  # ...until every series has 1 / _SCALE_RATE of them
        self.next_ = np.full(n, np.nan)  # the one-step forecast, issued or not (warm-up)
        self.warming_ = self.min_history > 0  # some series has fewer than ``min_history`` samples
        self.jump_ = np.zeros(n)  # sign of a clipped jump at the previous sample
        self.wild_ = np.zeros(n)  # sign of a wild level shift the current run let through
        self.steady_ = True  # ``jump_`` and ``wild_`` are all zero
        self.mean_ = np.full((n, self.horizon), np.nan)
        self.tracker_: ResidualTracker | None = None
        if self.intervals:
            self.tracker_ = ResidualTracker(
                n,
                horizon=self.horizon,
                window=self.interval_window,
                coverage=self.coverage,
                refresh_every=self.refresh_every,
            )
        self._start(n)
        empty = _leading_empty(batch, nonnegative=self.nonnegative)
        self._skip_empty(empty)
        with np.errstate(invalid="ignore"):  # see ``update``
            for j in range(empty, t):
                self._advance(batch[:, j])
        # no refresh of every interval quantile here: the staggered ones of the updates are
        # what a model fitted one column earlier and updated once has, bit for bit
        return self

    def update(self, column: ArrayLike) -> Self:
        """Add one new sample per series (the next grid column, NaN where missing)."""
        if not hasattr(self, "mean_"):
            raise ForecastError("update() before fit(): fit on the history first")
        # no copy: ``_prepare`` makes the arrays the update keeps, and reads this one only
        y = np.asarray(column, dtype=np.float64).reshape(-1)
        if y.shape != (self.n_series_,):
            raise ForecastError(f"expected {self.n_series_} values, got {y.size}")
        # once here rather than around each operation that may meet a NaN or an infinite
        # forecast (``_clip``): entering one costs as much as a few array operations
        with np.errstate(invalid="ignore"):
            self._advance(y)
        return self

    def predict(self, steps: int | None = None) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Mean, lower and upper bounds [n_series, steps] for the next ``steps`` grid times.

        A series without enough data has NaN in all three.
        """
        mean, lower, upper = self.predict_block(steps)
        return mean, lower, upper

    def predict_block(self, steps: int | None = None) -> FloatArray:
        """``predict``'s mean, lower and upper bounds as one array [3, n_series, steps]
        (a check of all three is then one operation)."""
        steps = self.horizon if steps is None else steps
        if not 1 <= steps <= self.horizon:
            raise ForecastError(f"steps must lie in 1..{self.horizon}, got {steps}")
        block = np.empty((3, self.n_series_, steps))
        mean = block[0]
        mean[...] = self.mean_[:, :steps]
        if self.tracker_ is None:
            block[1:] = mean
            return block
        bounds = block[1:]
        self.tracker_.bounds(mean, scale=self.scale_, out=bounds)
        if self.nonnegative:
            np.maximum(bounds, 0.0, out=bounds)
        return block

    def times(self, steps: int | None = None) -> FloatArray:
        """Grid times of the forecast steps."""
        steps = self.horizon if steps is None else steps
        times: FloatArray = self.time_ + self.step_ * np.arange(1, steps + 1, dtype=np.float64)
        return times

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters (scikit-learn style), for cloning a configured model."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    # --- the update path ------------------------------------------------------------

    def _advance(self, raw: FloatArray) -> None:
        self._step(*self._prepare(raw))

    def _prepare(self, raw: FloatArray) -> tuple[FloatArray, NDArray[np.bool_]]:
        """The sample as this model sees it (cleaned, negatives missing for a non-negative
        metric) and where it is valid. ``auto`` prepares it once for all its members."""
        # ``clean``, negatives dropped and ``isfinite`` in one mask: a sample is valid when it
        # is within ±MAX_ABS (NaN compares False), or within [0, MAX_ABS] if non-negative
        if self.nonnegative:
            valid = (raw >= 0.0) & (raw <= MAX_ABS)
        else:
            valid = np.abs(raw) <= MAX_ABS
        return np.where(valid, raw, np.nan), valid

    def _step(self, y: FloatArray, valid: NDArray[np.bool_], raw: FloatArray | None = None) -> None:
        """One update on a prepared sample (``_prepare``), which it does not modify.

        ``raw``: the sample before a caller clipped it (``auto``, for its members), which the
        models that keep the series unclipped store; ``None``: ``y`` is not clipped.

        A handful of operations on arrays of a few series each, so numpy's cost per call
        (about a microsecond) is what an update costs: work whose result nothing reads is
        skipped (the gap bookkeeping without ``max_gap``, the clipping state without
        clipping or intervals, the warm-up mask once every series has its history).
        """
        self.time_ += self.step_
        # a sample of every series (the usual update): the masks of the gaps are trivial
        full = np.count_nonzero(valid) == self.n_series_
        # while ``since_valid_`` is all zero no series is past a gap: no mask to work out
        gap_free = self.gap_free_ and self.max_gap is not None and self.max_gap >= 0
        if self.max_gap is not None and not gap_free:
            # back after a gap longer than ``max_gap`` (no forecast meanwhile): the state
            # describes the data before the gap, which may have been at another level
            # (a series' first sample "comes back" too: starting its level is a no-op)
            back = valid & (self.since_valid_ * self.step_ > self.max_gap)
            if np.count_nonzero(back):  # (a third of ``any()``'s cost on a small array)
                self.jump_[back] = 0.0
                self.wild_[back] = 0.0
                self._restart(back)
        if self.tracker_ is not None:
            self.tracker_.observe(y)
        # before outlier clipping: for models that learn from level shifts
        self.raw_ = y if raw is None else raw
        self.valid_ = valid
        clips = self.clip is not None or self.tracker_ is not None  # else nothing reads it
        if clips:
            y = self._clip(y, valid, full=full)
        self.seen_ += valid
        if self.max_gap is not None:  # nothing else reads it
            if not full:
                self.since_valid_ = np.where(valid, 0.0, self.since_valid_ + 1.0)
            elif not self.gap_free_:  # (it is never changed in place: all zero, it stays)
                self.since_valid_ = np.zeros(self.n_series_)
            self.gap_free_ = full
        self._observe(y)
        self.updates_ += 1
        mean = self._path()
        if self.warming_:
            if clips:
                self.next_ = np.maximum(mean[:, 0], 0.0) if self.nonnegative else mean[:, 0].copy()
            # ``seen_`` only grows: once every series has its history, for good
            short = self.seen_ < self.min_history
            self.warming_ = bool(short.any())
            mean[short] = np.nan
        # (after a sample of every series ``since_valid_`` is all zero: no row is past the gap)
        if self.max_gap is not None and not (full and self.max_gap >= 0):
            mean[self.since_valid_ * self.step_ > self.max_gap] = np.nan
        if self.nonnegative:
            np.maximum(mean, 0.0, out=mean)  # ``_path`` returns a new array
        if self.tracker_ is not None:
            self.tracker_.push(mean)
        self.mean_ = mean

    def _skip_empty(self, k: int) -> None:
        """Leave the state that ``k`` updates without a single valid sample leave, from the
        empty state, without making them. A window that starts empty (the first pass after
        a start, a long window at a short interval: 172,800 columns for two days at 1 s)
        then fits in the time its data takes. Nothing but counters, ring positions and the
        clock move in such a run: every value seen is missing, so every error, level and
        path stays NaN and every sum zero. ``tests/forecasting`` compares the two paths
        bit for bit."""
        if k <= 0:
            return
        if not self.skips_exactly:
            missing = np.full(self.n_series_, np.nan)
            for _ in range(k):
                self._advance(missing)
            return
        self._idle(k)  # before the clock and the counter move: the model reads them
        time = self.time_
        for _ in range(k):  # added one step at a time, as updates do: the same rounding
            time += self.step_
        self.time_ = time
        if self.tracker_ is not None:
            self.tracker_.skip(k)
        self.raw_ = np.full(self.n_series_, np.nan)
        self.updates_ += k

    def _idle(self, k: int) -> None:
        """Move the model's own counters and rings as ``k`` updates without a valid sample
        would, from the empty state (only for models that set ``skips_exactly``)."""
        raise NotImplementedError

    def _restart(self, rows: NDArray[np.bool_]) -> None:
        """Start the level of ``rows`` again from their next sample: it ends a gap longer
        than ``max_gap``, or a wild spike that passed as a level shift (``_clip``). Models
        whose state is a level (not the last value) override it."""
        return

    def _clip(self, y: FloatArray, valid: NDArray[np.bool_], *, full: bool = False) -> FloatArray:
        """``y`` with an isolated extreme jump clipped (``full``: ``valid`` is all True)."""
        pred = self.mean_[:, 0]
        # before ``min_history`` nothing is clipped (no forecast was issued to clip against),
        # but the scale learns from the forecasts the model would have issued: the interval
        # of the first forecast falls back on it (``ResidualTracker.bounds``)
        if self.warming_:  # as of the previous update (``_step``)
            warm = self.seen_ < self.min_history
            warm &= valid & ~np.isfinite(pred) & np.isfinite(self.next_)
            if warm.any():
                self._learn_scale(warm, np.abs(y - self.next_))
        err = y - pred
        has = np.isfinite(pred) if full else valid & np.isfinite(pred)
        count = np.count_nonzero(has)
        if not count:
            return y
        every = count == has.size  # (then ``has`` selects all: cheaper operations do)
        dev = np.abs(err)
        # a flat series has no error to scale by: without a floor one absurd sample would
        # pass unclipped, and the next ordinary one be clipped towards it
        floor = _SCALE_FLOOR * np.abs(pred) + _SCALE_FLOOR_ABS
        factor = (np.inf if self.clip is None else self.clip) * 1.25
        bound = factor * np.maximum(self.scale_, floor)
        # never while the scale is unknown (NaN), nor with ``clip = 0``
        if factor * _SCALE_FLOOR_ABS > 0:
            # where ``has``, ``floor`` is at least _SCALE_FLOOR_ABS, so ``bound`` is positive
            # or NaN: ``bound > 0`` adds nothing to ``dev > bound`` (NaN compares False)
            extreme = dev > bound
            if not every:
                extreme &= has
        else:
            extreme = has & (bound > 0) & (dev > bound)
        if not np.count_nonzero(extreme):  # the usual update: nothing to clip, no run goes on
            if every:
                if not self.steady_:
                    self.jump_[:] = 0.0
                    self.wild_[:] = 0.0
                    self.steady_ = True
            else:
                self.jump_[has] = 0.0
                self.wild_[has] = 0.0
            self._learn_scale(has, dev, every=every)
            return y
        sign = np.sign(err)
        self.steady_ = False  # a run may start: ``jump_`` and ``wild_`` may be set below
        wild = extreme & (dev > _WILD * bound)
        spike = extreme & (self.jump_ != sign)
        # A wild level shift that now comes back as wildly was a spike of a few samples (two
        # bogus 1e12 readings): this sample passes and the models start their level from
        # it, instead of being clipped towards the spike while slow models decay from it.
        back = spike & (self.wild_ == -sign)
        spike &= ~back
        shift = sign * np.where(spike, bound, 0.0)
        clipped = np.where(spike, pred + shift, y)
        # remember the direction of an extreme sample, clipped or not: a run of them in one
        # direction is a level shift and passes after its first sample
        run = extreme & ~back
        self.jump_ = np.where(has, np.where(run, sign, 0.0), self.jump_)
        passed = run & ~spike
        self.wild_ = np.where(has & ~run, 0.0, np.where(passed & wild, sign, self.wild_))
        if back.any():
            if self.tracker_ is not None:
                self.tracker_.forget(back)
            self._restart(back)
        # nor does a wild error inflate the scale, which would turn clipping off for hours
        self._learn_scale(has, np.minimum(np.abs(np.where(spike, shift, err)), _WILD * bound))
        return clipped

    def _learn_scale(
        self, rows: NDArray[np.bool_], used: FloatArray, *, every: bool = False
    ) -> None:
        """Average the one-step errors ``used`` of ``rows`` into the scale: a plain mean of
        the first ``1 / _SCALE_RATE``, an EWMA after them. ``every``: ``rows`` is all True."""
        if not self.averaging_:  # every series has its first errors: the plain EWMA
            if every:
                self.scale_ = self.scale_ + _SCALE_RATE * (used - self.scale_)
                return
            self.scale_ = np.where(
                rows, self.scale_ + _SCALE_RATE * (used - self.scale_), self.scale_
            )
            return
        self.scaled_ += rows
        rate = 1.0 / np.minimum(np.maximum(self.scaled_, 1.0), 1.0 / _SCALE_RATE)
        old = np.where(np.isfinite(self.scale_), self.scale_, 0.0)
        self.scale_ = np.where(rows, old + rate * (used - old), self.scale_)
        self.averaging_ = bool(np.any(self.scaled_ < 1.0 / _SCALE_RATE))

    # --- what a model implements ----------------------------------------------------

    @abstractmethod
    def _start(self, n: int) -> None:
        """Allocate the empty state of ``n`` series (``step_`` and ``time_`` are set)."""

    @abstractmethod
    def _observe(self, y: FloatArray) -> None:
        """Update the state with the cleaned sample ``y`` [n] at ``time_`` (NaN: missing)."""

    @abstractmethod
    def _path(self) -> FloatArray:
        """The mean forecast [n, horizon] for ``time_ + step_ * (1..horizon)``, as a new
        array (the update masks and clips it in place)."""


def _leading_empty(batch: FloatArray, *, nonnegative: bool) -> int:
    """How many of the first columns of ``batch`` (cleaned) hold no valid sample."""
    valid = np.isfinite(batch)
    if nonnegative:
        valid &= np.where(valid, batch, 0.0) >= 0.0
    has = valid.any(axis=0)
    return int(np.argmax(has)) if has.any() else int(has.size)


def steps_for(seconds: float | None, step: float) -> int:
    """Whole grid steps in ``seconds`` (at least one); 0 when ``seconds`` is None."""
    if seconds is None:
        return 0
    return max(1, round(seconds / step))
