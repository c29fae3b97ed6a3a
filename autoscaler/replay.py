"""Replay (open loop): recorded series through the live engine on a virtual clock.

The driver walks the tick grid from the first to the last recorded sample and calls the
same ``Engine.tick(now)`` the live service calls, with the configured sources replaced by
a ``ReplaySource`` over the recording and every executor replaced by a
``RecordingExecutor`` (which tracks replicas, so the engine sees its own scaling). Cooldowns,
dedupe, rate limits, ``for`` durations and stabilisation windows all run as they would live.

Inputs (``read_metrics``): a long CSV ``timestamp,target,signal,value`` or a Prometheus
``query_range`` JSON dump. Timestamps are unix seconds or ISO-8601 (naive means UTC).
Handling of bad input, every case an ``InputError`` naming the file and line:

- empty file, header only, missing columns, non-numeric value or timestamp → error;
- timestamps out of order within a series, or the same timestamp twice → error;
- ``NaN``/``Inf`` values (as Prometheus writes them) are kept: the engine counts them as
  invalid and their observation is unusable (policies hold), exactly as it would live;
- gaps are not filled: the last sample is reported until it is older than the signal's
  ``max_age``; then the observation is stale and policies hold, as they would live.
"""

from __future__ import annotations

import asyncio
import csv
import html
import json
import math
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from autoscaler.ahead import ForecastsAhead
from autoscaler.ahead import worth_it as ahead_worth_it
from autoscaler.config import Settings
from autoscaler.dataset import (
    MAX_TIME,
    DatasetError,
    bad_byte_line,
    parse_timestamp,
    read_record_json,
)
from autoscaler.engine import TickReport
from autoscaler.errors import AutoscalerError
from autoscaler.journal import JournalRecord, MemoryStore
from autoscaler.service import build_engine
from autoscaler.sources.base import Sample
from forecasting.types import Forecast, ForecastBatch
from remediation.base import Executor
from remediation.recording import RecordingExecutor, RecordingSpec

FloatArray = NDArray[np.float64]


class InputError(AutoscalerError):
    """A recorded input file cannot be used; the message names the file and line."""

    def __init__(self, path: str | Path, line: int | str | None, message: str) -> None:
        where = f"{path}:{line}" if line not in (None, "") else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


# --- reading recorded series ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One recorded (target, signal): times (epoch seconds, increasing) and values."""

    target: str
    signal: str
    times: FloatArray
    values: FloatArray


def parse_value(text: str) -> float:
    """A sample value; ``NaN``/``+Inf``/``-Inf`` are accepted (Prometheus writes them)."""
    text = text.strip()
    if not text:
        raise ValueError("empty")
    return float(text)


@dataclass(slots=True)
class _Builder:
    """Collects one series while checking order; remembers lines for error messages."""

    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    last_line: int | str = 0


def _add(
    b: _Builder, *, path: Path, line: int | str, key: tuple[str, ...], at: float, value: float
) -> None:
    if not math.isfinite(at) or not 0 <= at <= MAX_TIME:
        raise InputError(path, line, f"timestamp {at!r} is not a time (unix seconds expected)")
    if b.times and at <= b.times[-1]:
        what = "duplicate timestamp" if at == b.times[-1] else "timestamp out of order"
        raise InputError(
            path,
            line,
            f"{what} for {'/'.join(key)}: {_fmt_time(at)} is not after "
            f"{_fmt_time(b.times[-1])} (line {b.last_line}); sort the file by time",
        )
    b.times.append(at)
    b.values.append(value)
    b.last_line = line


def _fmt_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_long_csv(path: str | Path) -> list[Series]:
    """Series from a CSV with the header ``timestamp,target,signal,value`` (any order)."""
    p = Path(path)
    builders: dict[tuple[str, str], _Builder] = {}
    with _open(p) as f:
        reader = csv.reader(f, strict=True)  # a stray or unclosed quote is an error
        header = _header(reader, p, ("timestamp", "target", "signal", "value"))
        it, ig, isg, iv = (header[c] for c in ("timestamp", "target", "signal", "value"))
        width = max(it, ig, isg, iv) + 1
        for line, row in _rows(reader, p):
            if len(row) < width:
                raise InputError(p, line, f"expected {width} columns, got {len(row)}")
            target, signal = row[ig].strip(), row[isg].strip()
            if not target or not signal:
                raise InputError(p, line, "empty target or signal")
            at = _time_at(row[it], p, line)
            value = _value_at(row[iv], p, line)
            key = (target, signal)
            _add(
                builders.setdefault(key, _Builder()),
                path=p,
                line=line,
                key=key,
                at=at,
                value=value,
            )
    if not builders:
        raise InputError(p, None, "no samples (the file has no data rows)")
    return [_series(t, s, b) for (t, s), b in builders.items()]


def read_value_csv(path: str | Path) -> tuple[FloatArray, FloatArray]:
    """Times and values from a CSV ``timestamp,value`` (NAB's format), strictly increasing."""
    p = Path(path)
    b = _Builder()
    with _open(p) as f:
        reader = csv.reader(f, strict=True)  # a stray or unclosed quote is an error
        header = _header(reader, p, ("timestamp", "value"))
        it, iv = header["timestamp"], header["value"]
        width = max(it, iv) + 1
        for line, row in _rows(reader, p):
            if len(row) < width:
                raise InputError(p, line, f"expected {width} columns, got {len(row)}")
            at = _time_at(row[it], p, line)
            value = _value_at(row[iv], p, line)
            if not math.isfinite(value) or value < 0:
                raise InputError(p, line, f"demand must be a finite number >= 0, got {value}")
            _add(b, path=p, line=line, key=("value",), at=at, value=value)
    if not b.times:
        raise InputError(p, None, "no samples (the file has no data rows)")
    return np.array(b.times), np.array(b.values)


def _open(p: Path) -> IO[str]:
    try:
        return p.open(encoding="utf-8-sig", newline="")  # a spreadsheet's BOM is not a column
    except OSError as exc:
        raise InputError(p, None, f"cannot read: {exc.strerror or exc}") from exc


def _header(reader: Any, p: Path, needed: Sequence[str]) -> dict[str, int]:
    try:
        first = next(reader)
    except StopIteration:
        raise InputError(
            p, None, "empty file (expected a header: " + ",".join(needed) + ")"
        ) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _unreadable(p, reader, exc) from None
    names = {c.strip().lower(): i for i, c in enumerate(first)}
    missing = [c for c in needed if c not in names]
    if missing:
        raise InputError(
            p, 1, f"header must name the columns {','.join(needed)}; missing {','.join(missing)}"
        )
    return {c: names[c] for c in needed}


def _rows(reader: Any, p: Path) -> Iterator[tuple[int, list[str]]]:
    """The rows after the header with their line numbers, blank ones skipped."""
    while True:
        try:
            row: list[str] = next(reader)
        except StopIteration:
            return
        except (UnicodeDecodeError, csv.Error) as exc:
            raise _unreadable(p, reader, exc) from None
        if row and any(c.strip() for c in row):
            yield reader.line_num, row


def _unreadable(p: Path, reader: Any, exc: UnicodeDecodeError | csv.Error) -> InputError:
    """The error for a file that is not UTF-8 or not CSV, at the line at fault. Text is
    decoded a block ahead of the CSV reader, so a bad byte is located in the file itself."""
    line = max(1, reader.line_num)
    if isinstance(exc, UnicodeDecodeError):
        line = bad_byte_line(p) or line
    return InputError(p, line, f"not a CSV text file: {exc}")


def _time_at(text: str, p: Path, line: int) -> float:
    try:
        return parse_timestamp(text)
    except ValueError:
        raise InputError(
            p, line, f"timestamp {text.strip()!r} is neither unix seconds nor ISO-8601"
        ) from None


def _value_at(text: str, p: Path, line: int) -> float:
    try:
        return parse_value(text)
    except ValueError:
        raise InputError(p, line, f"value {text.strip()!r} is not a number") from None


def _series(target: str, signal: str, b: _Builder) -> Series:
    return Series(target, signal, np.array(b.times), np.array(b.values))


_TARGET_LABELS = ("target", "app", "service", "job", "instance")


def read_prometheus_json(path: str | Path) -> list[Series]:
    """Series from a Prometheus ``query_range`` response (or a JSON list of them).

    Each matrix result's ``target`` label (else ``app``, ``service``, ``job``,
    ``instance``) names the target and its ``signal`` label (else ``__name__``) the signal.
    Results of one target and signal that take turns (an instance replaced) are one
    series, in time order; two values at one instant are an error.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise InputError(p, None, f"cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(p, exc.lineno, f"not valid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(p, None, f"not a text file: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # an integer too long, arrays nested too deep
        raise InputError(p, None, f"not usable JSON: {str(exc)[:200]}") from None
    if isinstance(doc, dict) and "format" in doc:
        return _read_record_dump(p)
    docs = doc if isinstance(doc, list) else [doc]
    runs: dict[tuple[str, str], list[list[tuple[float, float, str]]]] = {}
    for di, d in enumerate(docs):
        where = f"[{di}]" if isinstance(doc, list) else ""
        data = d.get("data") if isinstance(d, dict) else None
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise InputError(p, where or None, "expected a query_range response (a matrix)")
        results = data.get("result") or []
        if not isinstance(results, list):
            raise InputError(p, f"{where}data.result", "expected a list of series")
        for ri, res in enumerate(results):
            rwhere = f"{where}data.result[{ri}]"
            labels = res.get("metric") if isinstance(res, dict) else None
            if not isinstance(labels, dict):
                labels = {}
            target = next((str(labels[k]) for k in _TARGET_LABELS if k in labels), "")
            signal = str(labels.get("signal") or labels.get("__name__") or "")
            if not target or not signal:
                raise InputError(p, rwhere, "series has no target/app label or no signal name")
            values = res.get("values") or []
            if not isinstance(values, list):
                raise InputError(p, f"{rwhere}.values", 'expected a list of [time, "value"]')
            run = []
            for vi, pair in enumerate(values):
                vwhere = f"{rwhere}.values[{vi}]"
                try:
                    run.append((float(pair[0]), parse_value(str(pair[1])), vwhere))
                except (TypeError, ValueError, IndexError, OverflowError):
                    raise InputError(p, vwhere, f'expected [time, "value"], got {pair!r}') from None
            if run:
                runs.setdefault((target, signal), []).append(run)
    builders: dict[tuple[str, str], _Builder] = {}
    for key, parts in runs.items():
        b = builders[key] = _Builder()
        # Series of one target that take turns (an instance replaced by another) in time
        # order, not in the answer's (by labels); at one instant they are two values.
        for run in sorted(parts, key=lambda r: r[0][0]):
            for at, value, vwhere in run:
                _add(b, path=p, line=vwhere, key=key, at=at, value=value)
    if not builders:
        raise InputError(p, None, "no samples")
    return [_series(t, s, b) for (t, s), b in builders.items()]


def _read_record_dump(p: Path) -> list[Series]:
    """An ``autoscaler record --format json`` dump, read by the dataset module."""
    try:
        samples = read_record_json(p)
    except DatasetError as exc:
        raise InputError(p, None, str(exc).removeprefix(f"{p}: ")) from None
    builders: dict[tuple[str, str], _Builder] = {}
    for smp in samples:  # sorted by time
        key = (smp.target, smp.signal)
        where = f"signals.{smp.signal}"
        b = builders.setdefault(key, _Builder())
        _add(b, path=p, line=where, key=key, at=smp.at, value=smp.value)
    if not builders:
        raise InputError(p, None, "no samples")
    return [_series(t, s, b) for (t, s), b in builders.items()]


def read_metrics(paths: Iterable[str | Path]) -> list[Series]:
    """Series from every file (CSV or Prometheus JSON, told apart by their first byte)."""
    out: dict[tuple[str, str], tuple[Series, str]] = {}
    for path in paths:
        p = Path(path)
        try:
            with p.open("rb") as f:
                head = f.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()  # a UTF-8 BOM
        except OSError as exc:
            raise InputError(p, None, f"cannot read: {exc.strerror or exc}") from exc
        found = read_prometheus_json(p) if head[:1] in (b"{", b"[") else read_long_csv(p)
        for s in found:
            key = (s.target, s.signal)
            if key in out:
                raise InputError(p, None, f"series {'/'.join(key)} is also in {out[key][1]}")
            out[key] = (s, str(p))
    return [s for s, _ in out.values()]


# --- the replay source ------------------------------------------------------------------


class ReplaySource:
    """A pull source over recorded series: at ``now`` it reports, for every series, the
    latest sample at or before ``now`` (as an instant query would), once."""

    in_memory = True  # the engine awaits it in place (no task, no timeout)

    def __init__(self, series: Sequence[Series], name: str = "replay") -> None:
        self.name = name
        keys = [(s.target, s.signal) for s in series]
        times = np.concatenate([s.times for s in series]) if series else np.empty(0)
        values = np.concatenate([s.values for s in series]) if series else np.empty(0)
        which = (
            np.concatenate([np.full(len(s.times), i, dtype=np.int64) for i, s in enumerate(series)])
            if series
            else np.empty(0, dtype=np.int64)
        )
        order = np.argsort(times, kind="stable")
        self._keys = keys
        self._times = times[order].tolist()
        self._values = values[order].tolist()
        self._which = which[order].tolist()
        self._pos = 0

    async def collect(self, now: float) -> Sequence[Sample]:
        latest: dict[int, int] = {}
        pos, times = self._pos, self._times
        while pos < len(times) and times[pos] <= now:
            latest[self._which[pos]] = pos
            pos += 1
        self._pos = pos
        out = []
        for i, j in latest.items():
            target, signal = self._keys[i]
            out.append(Sample(target, signal, self._values[j], self._times[j]))
        return out

    async def aclose(self) -> None:
        return None


# --- the driver -------------------------------------------------------------------------


async def _no_sleep(_: float) -> None:
    return None


MAX_TICKS = 20_000_000
"""Ticks a replay or backtest may run: a year of 1.6 s ticks. More is a stray timestamp
(a typo in the year, milliseconds among seconds), not a recording."""


class SpanError(AutoscalerError):
    """The recording spans more ticks than a run may have."""


def tick_grid(start: float, end: float, interval: float) -> FloatArray:
    """Tick times on the engine's grid (multiples of ``interval``) from ``start`` to ``end``."""
    first = math.ceil(start / interval - 1e-9)
    last = math.floor(end / interval + 1e-9)
    if last - first + 1 > MAX_TICKS:
        raise SpanError(
            f"the recording runs from {_fmt_time(start)} to {_fmt_time(end)}: "
            f"{last - first + 1:,} ticks of {interval:g} s, more than the {MAX_TICKS:,} a run "
            "may have; look for a stray timestamp (a typo in the year, milliseconds), or "
            "use a longer interval"
        )
    return np.arange(first, last + 1, dtype=np.float64) * interval


def replay_executors(
    settings: Settings, *, initial_replicas: int | None = None
) -> dict[str, RecordingExecutor]:
    """A ``RecordingExecutor`` in place of every configured executor (same names, so
    routing, notify lists and breakers are unchanged). Targets start at
    ``initial_replicas``; else, behind a ``recording`` executor, at its replicas (its
    ``initial_replicas`` defaults to 2) brought within the target's bounds; else at their
    ``min_replicas``."""
    out: dict[str, RecordingExecutor] = {}
    for name, comp in settings.executors.items():
        replicas = {
            t: (initial_replicas if initial_replicas is not None else ts.min_replicas)
            for t, ts in settings.targets.items()
            if ts.executor == name
        }
        if isinstance(comp.spec, RecordingSpec) and initial_replicas is None:
            spec = replace(comp.spec, path="")  # a replay writes its own outputs
            for t in replicas:
                ts = settings.targets[t]
                start = spec.replicas.get(t, spec.initial_replicas)
                replicas[t] = min(max(start, ts.min_replicas), ts.max_replicas)
        out[name] = RecordingExecutor(name, RecordingSpec(replicas=replicas))
    return out


@dataclass(frozen=True, slots=True)
class ForecastTrace:
    """Forecasts of one (target, signal) at its lead time: issue times and the mean and
    interval there."""

    issued: FloatArray
    mean: FloatArray
    lower: FloatArray
    upper: FloatArray


class ForecastTap:
    """Wraps the engine's forecaster and keeps each forecast's value at a target's lead
    time, for the report (the engine itself is unchanged). Kept in flat float arrays, a
    row ``issued, mean, lower, upper`` per forecast: a month of ticks for ten targets stays
    small."""

    def __init__(self, inner: Any, lead: Mapping[str, float]) -> None:
        self.inner = inner
        self.lead = dict(lead)
        self._rows: dict[tuple[str, str], array[float]] = {}

    def forecast(
        self,
        signal: str,
        targets: Sequence[str],
        history: FloatArray,
        *,
        step: float,
        horizon_steps: int,
        now: float,
    ) -> Mapping[str, Forecast]:
        out: Mapping[str, Forecast] = self.inner.forecast(
            signal, targets, history, step=step, horizon_steps=horizon_steps, now=now
        )
        if isinstance(out, ForecastBatch):
            self._keep_batch(signal, out, now=now, step=step)
            return out
        times: FloatArray | None = None
        first = 0.0
        for target, f in out.items():
            n = len(f.times)
            if n == 0:
                continue
            if f.times is not times:  # (the forecasts of one batch share their times)
                times, first = f.times, float(f.times[0])
            i = self._index(now + self.lead.get(target, step), first=first, step=step, n=n)
            self._kept(target, signal).extend(
                (now, float(f.mean[i]), float(f.lower[i]), float(f.upper[i]))
            )
        return out

    @staticmethod
    def _index(at: float, *, first: float, step: float, n: int) -> int:
        """The horizon step at ``at``: ``Forecast.at`` without its searchsorted (horizon
        times are on the tick grid)."""
        return min(n - 1, max(0, math.ceil((at - first) / step - 1e-9)))

    def _keep_batch(self, signal: str, batch: ForecastBatch, *, now: float, step: float) -> None:
        """``forecast`` for a batch: its arrays read once for all its series, with no
        ``Forecast`` built per series (most of the tap's cost on a long replay)."""
        n = len(batch.times)
        if n == 0 or not batch.rows:
            return
        first = float(batch.times[0])
        lead, last = self.lead, n - 1
        targets = list(batch.rows)
        rows = np.fromiter(batch.rows.values(), dtype=np.intp, count=len(targets))
        # _index, inline: it is most of the cost of this loop
        cols = np.array(
            [
                min(last, max(0, math.ceil((now + lead.get(t, step) - first) / step - 1e-9)))
                for t in targets
            ],
            dtype=np.intp,
        )
        values = zip(
            targets,
            batch.mean[rows, cols].tolist(),
            batch.lower[rows, cols].tolist(),
            batch.upper[rows, cols].tolist(),
            strict=True,
        )
        kept = self._rows
        for target, mean, lower, upper in values:
            key = (target, signal)
            if key not in kept:
                kept[key] = array("d")
            kept[key].extend((now, mean, lower, upper))

    def _kept(self, target: str, signal: str) -> array[float]:
        rows = self._rows.get((target, signal))
        if rows is None:
            rows = self._rows[(target, signal)] = array("d")
        return rows

    def traces(self) -> dict[tuple[str, str], ForecastTrace]:
        """What was kept, per (target, signal)."""
        out = {}
        for key, rows in self._rows.items():
            kept = np.frombuffer(rows, dtype=np.float64).reshape(-1, 4)
            out[key] = ForecastTrace(*(kept[:, k].copy() for k in range(4)))
        return out


TickHook = Callable[[float, TickReport], None]


@dataclass(slots=True, repr=False)
class ReplayResult:
    """What a replay produced."""

    ticks: FloatArray
    targets: list[str]
    records: list[JournalRecord]
    replicas: NDArray[np.int64]
    """Desired replicas after each tick, ``[ticks, targets]`` (-1: no executor)."""
    observations: FloatArray
    """Each signal's observed value at each tick, ``[signals, ticks, targets]``."""
    forecasts: dict[tuple[str, str], ForecastTrace]
    signals: list[str]
    wall_seconds: float
    target_ticks: int

    def __repr__(self) -> str:
        # A summary: ``asyncio.run(replay(...))`` reprs its result twice on the way out
        # (Python 3.11's signal.getsignal on the runner's SIGINT handler), and the full
        # repr of a month's journal takes seconds.
        return (
            f"ReplayResult({len(self.ticks)} ticks, {len(self.targets)} targets,"
            f" {len(self.records)} journal records)"
        )


class Progress:
    """A one-line text progress bar on stderr, redrawn at most once per percent."""

    def __init__(self, total: int, *, enabled: bool, stream: IO[str] | None = None) -> None:
        self.total = max(1, total)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._shown = -1
        self._started = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        pct = done * 100 // self.total
        if pct == self._shown:
            return
        self._shown = pct
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        elapsed = time.perf_counter() - self._started
        self.stream.write(f"\r[{bar}] {pct:3d}% {done}/{self.total} ticks {elapsed:5.1f}s")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


async def replay(
    settings: Settings,
    series: Sequence[Series],
    *,
    initial_replicas: int | None = None,
    speed: float | None = None,
    progress: Progress | None = None,
    on_tick: TickHook | None = None,
    forecast_ahead: bool | None = None,
) -> ReplayResult:
    """Drive the engine over the recording; ``speed`` = virtual seconds per real second
    (``None``: as fast as possible). ``forecast_ahead``: compute the forecasts in a second
    process while the engine runs (``autoscaler.ahead``); ``None`` does so for long replays
    at full speed with forecasting on, on a machine with two cores or more."""
    if not series:
        raise InputError("(metrics)", None, "no series to replay")
    interval = settings.service.interval
    start = min(float(s.times[0]) for s in series)
    end = max(float(s.times[-1]) for s in series)
    ticks = tick_grid(start, end, interval)
    executors = replay_executors(settings, initial_replicas=initial_replicas)
    store = MemoryStore()
    engine = build_engine(
        settings,
        dry_run=False,
        state_store=store,
        executors=dict[str, Executor](executors),
        sources=[ReplaySource(series)],
        event_sources=[],
        in_place=True,
        sleep=_no_sleep,
    )
    if forecast_ahead is None:
        forecast_ahead = (
            speed is None
            and any(st.forecast for st in settings.signals.values())
            and ahead_worth_it(len(ticks))
        )
    ahead = ForecastsAhead(settings, series, ticks) if forecast_ahead else None
    engine.forecast_history = ahead is None
    lead = {t: ts.startup_delay for t, ts in settings.targets.items()}
    tap = ForecastTap(ahead or engine.forecaster, lead)
    engine.forecaster = tap
    signals = sorted({s.signal for s in series})
    targets = list(settings.targets)
    pairs = [(executors.get(settings.targets[t].executor), t) for t in targets]
    replicas = np.full((len(ticks), len(targets)), -1, dtype=np.int64)
    observations = np.full((len(signals), len(ticks), len(targets)), np.nan)
    started = time.perf_counter()
    if progress is not None:
        progress.total = max(1, len(ticks))
    if ahead is not None:
        ahead.start()
    try:
        for i, now in enumerate(ticks.tolist()):
            if speed is not None:
                due = started + (now - float(ticks[0])) / speed
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            report = await engine.tick(now)
            if ahead is not None:
                ahead.check()
            replicas[i] = [-1 if ex is None else ex.replicas.get(t, -1) for ex, t in pairs]
            for k, sig in enumerate(signals):
                observations[k, i] = engine.store.values(sig, targets)
            if on_tick is not None:
                on_tick(now, report)
            if progress is not None:
                progress.update(i + 1)
    finally:
        if ahead is not None:
            ahead.close()
    wall = time.perf_counter() - started
    return ReplayResult(
        ticks=ticks,
        targets=targets,
        records=list(store.records),
        replicas=replicas,
        observations=observations,
        forecasts=tap.traces(),
        signals=signals,
        wall_seconds=wall,
        target_ticks=len(ticks) * len(settings.targets),
    )


# --- outputs ----------------------------------------------------------------------------


def finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def action_rows(records: Iterable[JournalRecord]) -> list[dict[str, Any]]:
    """One object per action (holds left out), in journal order."""
    return [
        {
            "at": r.at,
            "target": r.target,
            "kind": r.kind,
            "params": finite(dict(r.params)),
            "policy": r.policy,
            "reason": r.reason,
            "status": r.status,
            "detail": r.detail,
        }
        for r in records
        if r.kind != "hold"
    ]


def write_journal(path: Path, records: Iterable[JournalRecord]) -> None:
    """Every journal record (holds as ``service.journal_holds`` says), one JSON per line."""
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(finite(r.to_dict()), sort_keys=True, default=str) + "\n")


def write_actions(path: Path, records: Iterable[JournalRecord]) -> int:
    rows = action_rows(records)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    return len(rows)


def csv_number(v: float) -> str:
    """A finite value as CSV text that reads back exactly (``7`` for 7.0); ``""`` for NaN
    and infinities."""
    if not math.isfinite(v):
        return ""
    return repr(float(v)).removesuffix(".0")


def write_timeline(path: Path, result: ReplayResult) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "target", "desired_replicas", *result.signals])
        for i, now in enumerate(result.ticks.tolist()):
            for j, target in enumerate(result.targets):
                obs = result.observations[:, i, j].tolist()
                when = str(int(now)) if now.is_integer() else repr(now)  # every digit
                w.writerow([when, target, int(result.replicas[i, j]), *map(csv_number, obs)])


def summarise(result: ReplayResult, settings: Settings) -> dict[str, Any]:
    """Totals for ``summary.json`` and the terminal table."""
    interval = settings.service.interval
    actions = action_rows(result.records)
    per_target: dict[str, dict[str, Any]] = {}
    for j, target in enumerate(result.targets):
        reps = result.replicas[:, j]
        reps = reps[reps >= 0]
        mine = [a for a in actions if a["target"] == target]
        per_target[target] = {
            "replica_hours": round(float(reps.sum()) * interval / 3600.0, 4),
            "min_replicas": int(reps.min()) if len(reps) else None,
            "max_replicas": int(reps.max()) if len(reps) else None,
            "actions": len(mine),
            "executed": sum(1 for a in mine if a["status"] == "done"),
        }
    by_status: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    for a in actions:
        by_status[a["status"]] = by_status.get(a["status"], 0) + 1
        by_kind[a["kind"]] = by_kind.get(a["kind"], 0) + 1
    n = len(result.ticks)
    return {
        "start": float(result.ticks[0]) if n else None,
        "end": float(result.ticks[-1]) if n else None,
        "interval": interval,
        "ticks": n,
        "targets": per_target,
        "actions": {"total": len(actions), "by_status": by_status, "by_kind": by_kind},
        "wall_seconds": round(result.wall_seconds, 3),
        "target_ticks_per_second": round(result.target_ticks / result.wall_seconds)
        if result.wall_seconds > 0
        else None,
    }


def render_report(result: ReplayResult, settings: Settings, summary: Mapping[str, Any]) -> str:
    """The replay's HTML page: per target, replicas with actions, and each signal (with
    the forecast at the target's lead time and its interval, for forecast signals)."""
    from autoscaler import report as rp

    blocks = [
        (
            '<p class="note">Open-loop replay: the recorded metrics drove the live engine on a '
            "virtual clock; executors were replaced by a recorder, so replicas are what the "
            "service would have asked for. Recorded metrics do not react to those replicas.</p>"
        ),
    ]
    rows = [
        [t, v["replica_hours"], v["min_replicas"], v["max_replicas"], v["actions"], v["executed"]]
        for t, v in summary["targets"].items()
    ]
    blocks.append(
        rp.table(
            ["target", "replica-hours", "min", "max", "actions", "executed"],
            [[("" if c is None else c) for c in r] for r in rows],
        )
    )
    x = result.ticks
    actions = action_rows(result.records)
    for j, target in enumerate(result.targets):
        blocks.append(f"<h2>{html.escape(target)}</h2>")
        reps = result.replicas[:, j].astype(np.float64)
        reps[reps < 0] = np.nan
        mine = [a for a in actions if a["target"] == target and a["kind"] == "scale"]
        done = [a for a in mine if a["status"] == "done"]
        skipped = [a for a in mine if a["status"] != "done"]
        marks = []
        for label, group, color in (("executed", done, "#2ca02c"), ("skipped", skipped, "#999")):
            if group:
                marks.append(
                    rp.Marks(
                        f"scale {label}",
                        np.array([a["at"] for a in group]),
                        np.array([float(a["params"].get("replicas", np.nan)) for a in group]),
                        np.array(
                            [
                                a["params"].get("replicas", 0) > a["params"].get("from", 0)
                                for a in group
                            ]
                        ),
                        color,
                    )
                )
        blocks.append(
            rp.chart(
                title=f"{target}: desired replicas and scale actions",
                lines=[rp.Line("desired replicas", x, reps, rp.PALETTE[0], step=True)],
                marks=marks,
                ylabel="replicas",
            )
        )
        for k, sig in enumerate(result.signals):
            y = result.observations[k, :, j]
            if not np.isfinite(y).any():
                continue
            lines = [rp.Line(sig, x, y, rp.PALETTE[1])]
            bands = []
            fc = result.forecasts.get((target, sig))
            if fc is not None:
                lead = settings.targets[target].startup_delay
                fx = fc.issued + lead
                lines.append(
                    rp.Line(f"forecast +{lead:g}s", fx, fc.mean, rp.PALETTE[4], dash="4 3")
                )
                bands.append(rp.Band("interval", fx, fc.lower, fc.upper, rp.PALETTE[4]))
            blocks.append(rp.chart(title=f"{target}: {sig}", lines=lines, bands=bands))
    if actions:
        shown = actions[:500]
        blocks.append(
            f"<h2>Actions ({len(actions)}{', first 500' if len(actions) > 500 else ''})</h2>"
        )
        blocks.append(
            rp.table(
                ["at (UTC)", "target", "kind", "params", "status", "policy", "reason"],
                [
                    [
                        _fmt_time(a["at"]),
                        a["target"],
                        a["kind"],
                        json.dumps(a["params"]),
                        a["status"],
                        a["policy"],
                        a["reason"],
                    ]
                    for a in shown
                ],
            )
        )
    return rp.page("Replay report", blocks)
