"""The window store: bounded per-signal history on the tick grid, with staleness.

Each signal holds a 2-D numpy ring buffer; the value seen at tick ``k = round(t / interval)``
is written to columns ``k % slots`` and ``k % slots + slots`` (a double-written ring), so
any window of up to ``slots`` consecutive ticks is one contiguous slice: reading the whole
history of 1,000 targets is a view, not a copy. A column is written once per tick
(``advance``) from the latest fresh sample, and ticks skipped since the last pass are
written as NaN, so history is a regular grid with NaN gaps — exactly what forecasters and
``for`` durations need. Counters are stored as per-second rates (resets handled).

A non-finite sample (``histogram_quantile`` with no traffic, a 0/0 error ratio) is counted
in ``dropped["non_finite"]`` and becomes the current observation as it is: fresh but not
finite, so policies hold and say why (``policies.evidence.read``), and a NaN gap in the
history. Dropping it instead would leave the previous value looking fresh until ``max_age``.

A row whose last sample is older than its window plus ``max_age`` (its history is all NaN
and its observation stale) is forgotten, checked every ``SWEEP_TICKS`` ticks: label values
that come and go (task ids, alert labels) do not hold memory for ever.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from autoscaler.config import SignalSettings
from autoscaler.sources.base import Sample
from policies.types import Observation

FloatArray = NDArray[np.float64]

SWEEP_TICKS = 64
"""Ticks between two looks for rows to forget (a look is one comparison per row)."""

TIMES_AHEAD = 64
"""Passes whose window times one array holds ahead (``_span``): one array per window length
every 64 passes, not one per pass."""


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
    infinite: bool = False
    """An infinite value was ever stored: ``advance`` must keep it out of the ring."""
    newest: float = -math.inf
    """No sample time stored (``last_at``, ``raw_at``) is later than this: while it is not
    ahead of the clock, ``_forget_future`` has nothing to look for."""

    def __post_init__(self) -> None:
        self.ring = np.full((0, 2 * self.slots), np.nan)

    def row(self, target: str) -> int:
        r = self.rows.get(target)
        if r is not None:
            return r
        r = len(self.rows)
        self.rows[target] = r
        if r >= self.ring.shape[0]:
            grow = max(8, self.ring.shape[0])
            self.ring = np.vstack([self.ring, np.full((grow, 2 * self.slots), np.nan)])
            pad = np.full(grow, np.nan)
            self.last_value = np.concatenate([self.last_value, pad])
            self.last_at = np.concatenate([self.last_at, pad])
            self.raw_value = np.concatenate([self.raw_value, pad])
            self.raw_at = np.concatenate([self.raw_at, pad])
        return r


def _newest_at(s: _Series, r: int) -> float:
    """Time of a counter's newest reading: its last finite one, or a non-finite one since
    (NaN when it has none)."""
    return float(np.fmax(s.raw_at[r], s.last_at[r]))


@dataclass(frozen=True, slots=True)
class _Column:
    """One signal's latest values, as Python lists indexed by row."""

    rows: Mapping[str, int]
    values: list[float]
    ats: list[float]
    stale: list[bool]


@dataclass(frozen=True, slots=True)
class Latest:
    """The latest observations of one pass (``WindowStore.latest``)."""

    columns: Mapping[str, _Column]

    def of(self, target: str, failed: Collection[tuple[str, str]] = ()) -> TargetObservations:
        """``target``'s observations by signal; those of ``failed`` (target, signal) keys
        count as stale (their source failed this pass)."""
        return TargetObservations(self.columns, target, failed)


class TargetObservations(Mapping[str, Observation]):
    """One target's latest observation of each signal, built when a policy reads it."""

    __slots__ = ("_columns", "_failed", "_target")

    def __init__(
        self, columns: Mapping[str, _Column], target: str, failed: Collection[tuple[str, str]]
    ) -> None:
        self._columns = columns
        self._target = target
        self._failed = failed

    def get(self, signal: str, default: Any = None) -> Any:
        col = self._columns.get(signal)
        r = None if col is None else col.rows.get(self._target)
        if col is None or r is None:
            return default
        stale = col.stale[r] or (self._target, signal) in self._failed
        return Observation(col.values[r], col.ats[r], stale)

    def __getitem__(self, signal: str) -> Observation:
        obs: Observation | None = self.get(signal)
        if obs is None:
            raise KeyError(signal)
        return obs

    def __iter__(self) -> Iterator[str]:
        return (sig for sig, col in self._columns.items() if self._target in col.rows)

    def __len__(self) -> int:
        return sum(1 for _ in self)


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
        self.dropped: dict[str, int] = {"non_finite": 0, "out_of_order": 0}
        self.last_tick: int | None = None
        self._next_sweep: int | None = None
        self._times: dict[int, tuple[int, FloatArray]] = {}
        """Tick times by window length: the first tick and times from it on (``_span``)."""

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
        """Take new samples; returns how many were dropped (older than the latest sample of
        their series, or stamped at a non-finite time) or had a non-finite value."""
        dropped = 0
        gauges: dict[str, tuple[list[int], list[float], list[float]]] = {}
        for smp in samples:
            if not math.isfinite(smp.at):
                self.dropped["non_finite"] += 1
                dropped += 1
                continue
            s = self._get(smp.signal)
            r = s.row(smp.target)
            if smp.at > s.newest:
                s.newest = smp.at
            if not math.isfinite(smp.value):
                # It goes on: it replaces the current observation, which policies then
                # refuse to act on (and it never enters the history); a late one is
                # counted as late below, not twice.
                prev = _newest_at(s, r) if s.settings.kind == "counter" else s.last_at[r]
                if not smp.at < prev:  # NaN (no sample yet) compares False
                    self.dropped["non_finite"] += 1
                    dropped += 1
                    if math.isinf(smp.value):
                        s.infinite = True
            if s.settings.kind == "counter":
                dropped += self._counter(s, r, smp)
                continue
            batch = gauges.get(smp.signal)
            if batch is None:
                batch = gauges[smp.signal] = ([], [], [])
            batch[0].append(r)
            batch[1].append(smp.value)
            batch[2].append(smp.at)
        for signal, (rows, values, ats) in gauges.items():
            dropped += self._gauges(self._series[signal], rows, values, ats)
        return dropped

    def _gauges(self, s: _Series, rows: list[int], values: list[float], ats: list[float]) -> int:
        """Store a batch of gauge samples of one signal at once (in order, per row)."""
        if len(set(rows)) < len(rows):  # several samples of one series: in order, one by one
            late = 0
            for r, v, at in zip(rows, values, ats, strict=True):
                if not math.isnan(s.last_at[r]) and at < s.last_at[r]:
                    late += 1
                    continue
                s.last_value[r], s.last_at[r] = v, at
            self.dropped["out_of_order"] += late
            return late
        idx = np.asarray(rows, dtype=np.intp)
        times = np.asarray(ats, dtype=np.float64)
        ok = ~(times < s.last_at[idx])  # NaN (no sample yet) compares False: accepted
        if not ok.all():
            idx, times = idx[ok], times[ok]
            s.last_value[idx] = np.asarray(values, dtype=np.float64)[ok]
        else:
            s.last_value[idx] = values
        s.last_at[idx] = times
        late = len(rows) - len(idx)
        self.dropped["out_of_order"] += late
        return late

    def _counter(self, s: _Series, r: int, smp: Sample) -> int:
        """Turn a counter sample into a per-second rate (resets handled); 1 if dropped."""
        prev_v, prev_t = s.raw_value[r], s.raw_at[r]
        if not math.isnan(prev_t) and smp.at <= prev_t:
            if smp.at < prev_t:
                self.dropped["out_of_order"] += 1
                return 1
            return 0
        if smp.at < s.last_at[r]:  # older than a non-finite reading since (NaN: False)
            self.dropped["out_of_order"] += 1
            return 1
        if not math.isfinite(smp.value):
            # No rate now (and the raw sample is kept: the next finite one spans the gap).
            s.last_value[r], s.last_at[r] = smp.value, smp.at
            return 0
        s.raw_value[r], s.raw_at[r] = smp.value, smp.at
        if math.isnan(prev_t):
            return 0  # a rate needs two samples
        delta = smp.value - prev_v if smp.value >= prev_v else smp.value  # reset
        s.last_value[r] = delta / (smp.at - prev_t)
        s.last_at[r] = smp.at
        return 0

    def advance(self, now: float) -> None:
        """Write the column of the tick at ``now`` from the latest fresh samples; ticks
        skipped since the previous call become NaN; a non-finite latest value is written
        as NaN (a gap)."""
        k = round(now / self.interval)
        prev = self.last_tick
        self.last_tick = k if prev is None else max(k, prev)
        if self._next_sweep is None or not 0 <= self._next_sweep - k <= SWEEP_TICKS:
            self._next_sweep = k + SWEEP_TICKS  # (also when the clock went back)
            for s in self._series.values():
                self._sweep(s, now)
        for s in self._series.values():
            n = len(s.rows)
            self._forget_future(s, n, now)
            if prev is not None and k > prev + 1:
                for gap in range(max(prev + 1, k - s.slots), k):
                    c = gap % s.slots
                    s.ring[:, c] = np.nan
                    s.ring[:, c + s.slots] = np.nan
            col = k % s.slots
            last = s.last_value[:n]
            usable = (now - s.last_at[:n]) <= s.settings.max_age  # a NaN value stays NaN
            if s.infinite:
                usable &= np.isfinite(last)
            values = np.where(usable, last, np.nan)
            s.ring[:n, col] = values
            s.ring[:n, col + s.slots] = values

    def _sweep(self, s: _Series, now: float) -> None:
        """Forget the rows whose last sample (or counter reading) is older than the ring's
        span plus ``max_age`` and a tick: every column of their history is NaN and their
        observation stale, so nothing is lost; a row still written to is never dropped."""
        n = len(s.rows)
        last = np.fmax(s.last_at[:n], s.raw_at[:n])  # NaN only when neither is set
        old = (now - last) > s.slots * self.interval + s.settings.max_age + self.interval
        unknown = np.isnan(last)  # its samples were forgotten (the clock went back)
        if unknown.any():  # gone once its history is: the ring writes NaN for it each tick
            old |= unknown & np.isnan(s.ring[:n, : s.slots]).all(axis=1)
        if not old.any():
            return
        keep = np.flatnonzero(~old)
        names = list(s.rows)  # in row order: rows are numbered as they are added
        s.rows = {names[i]: j for j, i in enumerate(keep.tolist())}  # a new dict: a
        # ``Latest`` of an earlier pass keeps the one it was built with
        s.ring = s.ring[keep]
        s.last_value, s.last_at = s.last_value[keep], s.last_at[keep]
        s.raw_value, s.raw_at = s.raw_value[keep], s.raw_at[keep]

    def _forget_future(self, s: _Series, n: int, now: float) -> None:
        """Drop samples stamped more than one interval after ``now``: the clock went back
        (an NTP step). Kept, they would count as fresh (``now - at`` is negative) while
        every newer sample was refused as late; forgotten, the next samples are taken."""
        if s.newest <= now + self.interval:
            return  # the usual pass: no sample is stamped ahead (saves four array scans)
        ahead = s.last_at[:n] > now + self.interval  # NaN (no sample) compares False
        if ahead.any():
            s.last_at[:n][ahead] = np.nan
            s.last_value[:n][ahead] = np.nan
        ahead = s.raw_at[:n] > now + self.interval
        if ahead.any():  # a counter's rate needs two samples again
            s.raw_at[:n][ahead] = np.nan
            s.raw_value[:n][ahead] = np.nan
        s.newest = now + self.interval

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

    def values(self, signal: str, targets: Sequence[str]) -> list[float]:
        """The latest value of ``signal`` of each of ``targets`` (NaN when it has none), as
        ``observation(...).value`` gives it, in one read: what a replay's timeline keeps.
        (Plain lists: for a few targets, numpy's per-call overhead is most of the cost.)"""
        s = self._series.get(signal)
        if s is None:
            return [math.nan] * len(targets)
        rows, values, ats = s.rows, s.last_value.tolist(), s.last_at.tolist()
        return [
            math.nan if (r := rows.get(t)) is None or math.isnan(ats[r]) else values[r]
            for t in targets
        ]

    def latest(self, now: float) -> Latest:
        """The latest observation of every (signal, target), computed per signal at once
        and read per target through ``Latest.of``."""
        out: dict[str, _Column] = {}
        for signal, s in self._series.items():
            n = len(s.rows)
            stale = ~((now - s.last_at[:n]) <= s.settings.max_age)
            out[signal] = _Column(
                s.rows, s.last_value[:n].tolist(), s.last_at[:n].tolist(), stale.tolist()
            )
        return Latest(out)

    def _span(self, s: _Series, seconds: float) -> tuple[FloatArray, slice]:
        """Tick times of the last ``seconds`` (oldest first) and their slice of the ring."""
        if self.last_tick is None:
            return np.empty(0), slice(0, 0)
        n = min(s.slots, max(1, math.floor(seconds / self.interval + 1e-9) + 1))
        end = self.last_tick % s.slots + s.slots + 1
        first = self.last_tick - n + 1
        block = self._times.get(n)
        if block is None or not 0 <= first - block[0] <= TIMES_AHEAD:
            # the times of this window and of the next ``TIMES_AHEAD`` passes' windows, in
            # one array (each time is its tick x interval, whichever array holds it); the
            # windows are read-only views of it
            if len(self._times) > 64:
                self._times.clear()
            ticks = np.arange(first, first + n + TIMES_AHEAD, dtype=np.float64)
            block = self._times[n] = (first, ticks * self.interval)
            block[1].setflags(write=False)
        at = first - block[0]
        return block[1][at : at + n], slice(end - n, end)

    def window(self, target: str, signal: str, seconds: float) -> tuple[FloatArray, FloatArray]:
        """Times and values of the last ``seconds`` of a target's signal (NaN = missing)."""
        s = self._series.get(signal)
        r = None if s is None else s.rows.get(target)
        if s is None or r is None:
            return np.empty(0), np.empty(0)
        times, span = self._span(s, seconds)
        return times, s.ring[r, span].copy()

    def matrix(
        self, signal: str, targets: Sequence[str], seconds: float
    ) -> tuple[FloatArray, FloatArray]:
        """Times ``[T]`` and values ``[len(targets), T]`` of the last ``seconds``.

        When ``targets`` is ``targets(signal)`` (the usual case) the values are a read-only
        view of the ring, not a copy.
        """
        s = self._series.get(signal)
        if s is None:
            return np.empty(0), np.full((len(targets), 0), np.nan)
        times, span = self._span(s, seconds)
        if list(targets) == list(s.rows):
            view = s.ring[: len(targets), span]
            view.flags.writeable = False
            return times, view
        out = np.full((len(targets), span.stop - span.start), np.nan)
        for i, t in enumerate(targets):
            r = s.rows.get(t)
            if r is not None:
                out[i] = s.ring[r, span]
        return times, out

    def memory_bytes(self) -> int:
        """Bytes held by the ring buffers."""
        return sum(s.ring.nbytes for s in self._series.values())
