"""The window store: bounded per-signal history on the tick grid, with staleness.

Each signal holds a 2-D numpy ring buffer ``[targets, slots]``; slot ``k % slots`` holds
the value seen at tick ``k = round(t / interval)``. A column is written once per tick
(``advance``) from the latest fresh sample, so history is a regular grid with NaN gaps —
exactly what forecasters and ``for`` durations need. Non-finite samples are dropped and
counted. Counters are stored as per-second rates (resets handled).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from autoscaler.config import SignalSettings
from autoscaler.sources.base import Sample
from policies.types import Observation

FloatArray = NDArray[np.float64]


@dataclass(slots=True)
class _Series:
    """All targets' history of one signal."""

    settings: SignalSettings
    slots: int
    rows: dict[str, int] = field(default_factory=dict)
    ring: FloatArray = field(default_factory=lambda: np.empty((0, 0)))
    last_value: FloatArray = field(default_factory=lambda: np.empty(0))
    last_at: FloatArray = field(default_factory=lambda: np.empty(0))
    raw_value: FloatArray = field(default_factory=lambda: np.empty(0))
    raw_at: FloatArray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        self.ring = np.full((0, self.slots), np.nan)

    def row(self, target: str) -> int:
        r = self.rows.get(target)
        if r is not None:
            return r
        r = len(self.rows)
        self.rows[target] = r
        if r >= self.ring.shape[0]:
            grow = max(8, self.ring.shape[0])
            self.ring = np.vstack([self.ring, np.full((grow, self.slots), np.nan)])
            pad = np.full(grow, np.nan)
            self.last_value = np.concatenate([self.last_value, pad])
            self.last_at = np.concatenate([self.last_at, pad])
            self.raw_value = np.concatenate([self.raw_value, pad])
            self.raw_at = np.concatenate([self.raw_at, pad])
        return r


class WindowStore:
    """Bounded history of every (target, signal), and the latest observation of each."""

    def __init__(
        self, *, interval: float, signals: Mapping[str, SignalSettings] | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._settings = dict(signals or {})
        self._series: dict[str, _Series] = {}
        # Which tick each slot position holds, per ring length (series share the grid).
        self._ticks_by_slots: dict[int, NDArray[np.int64]] = {}
        self.dropped: dict[str, int] = {"non_finite": 0, "out_of_order": 0}
        self.last_tick: int | None = None

    def settings(self, signal: str) -> SignalSettings:
        return self._settings.get(signal) or SignalSettings()

    def _get(self, signal: str) -> _Series:
        s = self._series.get(signal)
        if s is None:
            st = self.settings(signal)
            slots = max(2, math.ceil(st.window / self.interval))
            s = _Series(settings=st, slots=slots)
            self._series[signal] = s
        return s

    @property
    def signals(self) -> list[str]:
        return list(self._series)

    def targets(self, signal: str) -> list[str]:
        s = self._series.get(signal)
        return [] if s is None else list(s.rows)

    def ingest(self, samples: Iterable[Sample]) -> int:
        """Take new samples; returns how many were dropped (non-finite or older than the
        latest sample of their series)."""
        dropped = 0
        for smp in samples:
            if not (math.isfinite(smp.value) and math.isfinite(smp.at)):
                self.dropped["non_finite"] += 1
                dropped += 1
                continue
            s = self._get(smp.signal)
            r = s.row(smp.target)
            if s.settings.kind == "counter":
                prev_v, prev_t = s.raw_value[r], s.raw_at[r]
                if not math.isnan(prev_t) and smp.at <= prev_t:
                    if smp.at < prev_t:
                        self.dropped["out_of_order"] += 1
                        dropped += 1
                    continue
                s.raw_value[r], s.raw_at[r] = smp.value, smp.at
                if math.isnan(prev_t):
                    continue  # a rate needs two samples
                delta = smp.value - prev_v if smp.value >= prev_v else smp.value  # reset
                s.last_value[r] = delta / (smp.at - prev_t)
                s.last_at[r] = smp.at
            else:
                if not math.isnan(s.last_at[r]) and smp.at < s.last_at[r]:
                    self.dropped["out_of_order"] += 1
                    dropped += 1
                    continue
                s.last_value[r] = smp.value
                s.last_at[r] = smp.at
        return dropped

    def advance(self, now: float) -> None:
        """Write the column of the tick at ``now`` from the latest fresh samples."""
        k = round(now / self.interval)
        self.last_tick = k
        for s in self._series.values():
            n = len(s.rows)
            col = k % s.slots
            fresh = (now - s.last_at[:n]) <= s.settings.max_age
            s.ring[:n, col] = np.where(fresh, s.last_value[:n], np.nan)
        self._mark(k)

    def _mark(self, k: int) -> None:
        for s in self._series.values():
            arr = self._ticks_by_slots.get(s.slots)
            if arr is None:
                arr = np.full(s.slots, -1, dtype=np.int64)
                self._ticks_by_slots[s.slots] = arr
            arr[k % s.slots] = k

    def observation(self, target: str, signal: str, now: float) -> Observation:
        """Latest value of a target's signal; NaN and stale when missing or too old."""
        s = self._series.get(signal)
        r = None if s is None else s.rows.get(target)
        if s is None or r is None or math.isnan(s.last_at[r]):
            return Observation(value=math.nan, at=math.nan, stale=True)
        at = float(s.last_at[r])
        return Observation(
            value=float(s.last_value[r]), at=at, stale=(now - at) > s.settings.max_age
        )

    def _columns(self, s: _Series, seconds: float) -> tuple[FloatArray, NDArray[np.int64]]:
        """Tick times and slot columns of the last ``seconds`` (oldest first)."""
        if self.last_tick is None:
            return np.empty(0), np.empty(0, dtype=np.int64)
        n = min(s.slots, max(1, math.floor(seconds / self.interval) + 1))
        ticks = np.arange(self.last_tick - n + 1, self.last_tick + 1, dtype=np.int64)
        return (ticks * self.interval).astype(np.float64), ticks % s.slots

    def window(self, target: str, signal: str, seconds: float) -> tuple[FloatArray, FloatArray]:
        """Times and values of the last ``seconds`` of a target's signal (NaN = missing)."""
        s = self._series.get(signal)
        r = None if s is None else s.rows.get(target)
        if s is None or r is None:
            return np.empty(0), np.empty(0)
        times, cols = self._columns(s, seconds)
        values = s.ring[r, cols].copy()
        values[self._valid(s, cols, times) == 0] = np.nan
        return times, values

    def _valid(self, s: _Series, cols: NDArray[np.int64], times: FloatArray) -> NDArray[np.int8]:
        ticks = self._ticks_by_slots.get(s.slots)
        if ticks is None:
            return np.zeros(len(cols), dtype=np.int8)
        expect = np.rint(times / self.interval).astype(np.int64)
        valid: NDArray[np.int8] = (ticks[cols] == expect).astype(np.int8)
        return valid

    def matrix(
        self, signal: str, targets: Sequence[str], seconds: float
    ) -> tuple[FloatArray, FloatArray]:
        """Times ``[T]`` and values ``[len(targets), T]`` of the last ``seconds``."""
        s = self._series.get(signal)
        if s is None:
            return np.empty(0), np.full((len(targets), 0), np.nan)
        times, cols = self._columns(s, seconds)
        out = np.full((len(targets), len(cols)), np.nan)
        idx = [s.rows.get(t, -1) for t in targets]
        present = np.array([i >= 0 for i in idx], dtype=bool)
        if present.any():
            rows = np.array([i for i in idx if i >= 0], dtype=np.int64)
            out[present] = s.ring[np.ix_(rows, cols)]
        out[:, self._valid(s, cols, times) == 0] = np.nan
        return times, out

    def memory_bytes(self) -> int:
        """Bytes held by the ring buffers."""
        return sum(s.ring.nbytes for s in self._series.values())
