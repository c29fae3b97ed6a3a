"""Forecasts of a replay, computed ahead in a second process.

A replay is open loop: the window store is fed by the recording alone, never by what the
engine decides, so every forecast the engine will ask for is known before the replay runs.
A worker process runs the same replay source, window store and forecaster over the same
ticks and streams the results back; the engine, in this process, evaluates policies
meanwhile and reads each tick's forecasts from the stream. On two cores this overlaps the
two halves of a pass (forecasting is about half of it with ``auto``).

The forecasts are the ones the engine would have made: same inputs (``forecast_inputs``),
same provider, same order. The stream is checked as it is read: a tick or a target list
that does not match what the engine asks for is an error, never a silent difference.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from autoscaler.config import Settings
from autoscaler.engine import forecast_inputs, horizon_steps
from autoscaler.errors import AutoscalerError
from autoscaler.forecasts import make_provider
from autoscaler.store import WindowStore
from forecasting.types import Forecast, ForecastBatch

CHUNK = 64
"""Ticks per message: a pipe round trip per tick would cost more than it saves."""

MIN_TICKS = 10_000
"""Shorter runs forecast in process: starting the worker takes about a second."""

T = TypeVar("T")

Entry = tuple[tuple[str, ...], Mapping[str, Forecast]] | str
"""One signal's result at one tick: the targets and their forecasts, or an error text."""


class AheadError(AutoscalerError):
    """The forecast worker failed or fell out of step with the engine."""


def worth_it(ticks: int) -> bool:
    """Whether a run of ``ticks`` gains from a worker, and may start one: long enough, a
    second core, and no other thread. The worker is forked, and a fork copies only the
    calling thread: a lock another thread held (logging's, an allocator's) would stay held
    in the worker forever (Python 3.12 warns of it). A replay run from such a process
    forecasts in process instead: slower, the same decisions."""
    return ticks >= MIN_TICKS and (os.cpu_count() or 1) >= 2 and threading.active_count() == 1


def _run(
    settings: Settings, series: Sequence[Any], ticks: NDArray[np.float64], conn: Connection
) -> None:
    """The worker: the engine's forecast half of every pass, sent in chunks."""
    from autoscaler.replay import ReplaySource  # replay imports this module

    try:
        forecast_all(settings, ReplaySource(series), ticks, conn)
    except BaseException:  # reported to the engine side, which raises it there
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass  # the engine side stopped first (it failed or was interrupted)
    finally:
        conn.close()


def forecast_all(
    settings: Settings, source: Any, ticks: NDArray[np.float64], conn: Connection
) -> None:
    """The forecast half of the pass at every tick, sent on ``conn`` in chunks of
    ``CHUNK`` ticks (the worker's body; ``bench/replay.py --forecasts-only`` runs it alone)."""
    store = WindowStore(interval=settings.service.interval, signals=settings.signals)
    provider = make_provider(settings.forecasting)
    step = settings.service.interval
    steps = horizon_steps(settings)
    chunk: list[tuple[float, dict[str, Entry]]] = []
    for now in ticks.tolist():
        store.ingest(_at_once(source.collect(now)))
        store.advance(now)
        entries: dict[str, Entry] = {}
        for signal, targets, history in forecast_inputs(store, settings):
            try:
                result = provider.forecast(
                    signal, targets, history, step=step, horizon_steps=steps, now=now
                )
            except Exception as exc:  # the engine logs and counts it where it reads it
                entries[signal] = f"{type(exc).__name__}: {exc}"
                continue
            entries[signal] = (tuple(targets), result)
        chunk.append((now, entries))
        if len(chunk) >= CHUNK:
            conn.send(("ticks", _pack(chunk)))
            chunk = []
    conn.send(("ticks", _pack(chunk)))
    conn.send(("done", None))


PackedTick = tuple[float, dict[str, Entry], dict[str, tuple[Any, ...]]]
"""A tick on the wire: the entries sent as they are, and the forecast batches as
references into the buffer of its chunk (``_pack``)."""

Packed = tuple[list[PackedTick], NDArray[np.float64]]


def _pack(chunk: list[tuple[float, dict[str, Entry]]]) -> Packed:
    """``chunk`` in far fewer objects than its batches: every forecast array of the chunk
    in one buffer, and the targets, rows and labels that repeat from tick to tick as one
    object each (pickle writes a repeat as a reference). Unpickling is on the engine's side
    of the replay, which waits for it: this cuts it to about a third."""
    arrays: list[NDArray[np.float64]] = []
    size = 0
    once: dict[tuple[Any, ...], Any] = {}
    ticks: list[PackedTick] = []
    for now, entries in chunk:
        plain: dict[str, Entry] = {}
        batches: dict[str, tuple[Any, ...]] = {}
        for signal, entry in entries.items():
            batch = None if isinstance(entry, str) else entry[1]
            if not isinstance(batch, ForecastBatch):
                plain[signal] = entry  # an error, or no forecasts
                continue
            targets, models = entry[0], batch.models
            labels = ("one", models) if isinstance(models, str) else ("each", *models)
            n, steps = batch.mean.shape
            batches[signal] = (
                once.setdefault(("targets", *targets), targets),
                batch.issued_at,
                size,
                n,
                steps,
                once.setdefault(("rows", *batch.rows.items()), batch.rows),
                once.setdefault(labels, models),
            )
            arrays += (batch.times, batch.mean.ravel(), batch.lower.ravel(), batch.upper.ravel())
            size += steps * (1 + 3 * n)
        ticks.append((now, plain, batches))
    return ticks, np.concatenate(arrays) if arrays else np.empty(0)


def _unpack(packed: Packed) -> Iterator[tuple[float, dict[str, Entry]]]:
    """The ticks of a chunk that ``_pack`` made; a batch's arrays are views of the buffer."""
    ticks, data = packed
    for now, plain, batches in ticks:
        entries = dict(plain)
        for signal, (targets, issued_at, at, n, steps, rows, models) in batches.items():
            block = n * steps
            mean = at + steps
            lower = mean + block
            upper = lower + block
            entries[signal] = (
                targets,
                ForecastBatch(
                    issued_at,
                    data[at:mean],
                    data[mean:lower].reshape(n, steps),
                    data[lower:upper].reshape(n, steps),
                    data[upper : upper + block].reshape(n, steps),
                    rows,
                    models,
                ),
            )
        yield now, entries


def _at_once(call: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (the replay source's ``collect``)."""
    try:
        call.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    call.close()
    raise AheadError("the replay source waited; it answers from memory")


class ForecastsAhead:
    """A ``ForecastProvider`` that reads the worker's stream (start it with ``start``)."""

    def __init__(self, settings: Settings, series: Sequence[Any], ticks: NDArray[np.float64]):
        self._settings = settings
        self._series = series
        self._ticks = ticks
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._stream: Iterator[tuple[float, dict[str, Entry]]] = iter(())
        self._now: float | None = None
        self._entries: dict[str, Entry] = {}
        self.failure: AheadError | None = None
        """Set when the stream failed or fell out of step: the engine swallows a
        forecaster's exceptions (it holds and goes on), so the driver calls ``check``."""

    def start(self) -> None:
        # fork: the worker starts at once with the series it needs already in memory, and
        # runs no event loop (spawn would re-import the caller's main module)
        ctx = multiprocessing.get_context("fork")
        ours, theirs = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_run,
            args=(self._settings, list(self._series), self._ticks, theirs),
            name="autoscaler-forecasts",
            daemon=True,
        )
        self._process.start()
        theirs.close()
        self._conn = ours
        self._stream = self._read()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
            self._process = None

    def check(self) -> None:
        """Raise the stream's failure, if any (after each engine pass)."""
        if self.failure is not None:
            raise self.failure

    def _read(self) -> Iterator[tuple[float, dict[str, Entry]]]:
        assert self._conn is not None
        while True:
            try:
                kind, body = self._conn.recv()
            except EOFError:
                raise AheadError("the forecast worker stopped without a word") from None
            if kind == "ticks":
                yield from _unpack(body)
            elif kind == "done":
                return
            else:
                raise AheadError(f"the forecast worker failed:\n{body}")

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
            entry = self._entry(signal, targets, now)
        except AheadError as exc:
            self.failure = self.failure or exc
            return {}
        if isinstance(entry, str):
            raise RuntimeError(entry)  # as the engine's own forecaster would have raised
        return entry[1]

    def _entry(self, signal: str, targets: Sequence[str], now: float) -> Entry:
        if self.failure is not None:
            raise self.failure
        if now != self._now:
            while True:  # ticks without forecasts (no samples yet) the engine skips too
                try:
                    at, entries = next(self._stream)
                except StopIteration:
                    raise AheadError(f"no forecasts were made for {now}") from None
                if at == now:
                    break
                if at > now or entries:
                    raise AheadError(f"forecasts for {at} arrived where {now} was asked for")
            self._now, self._entries = now, entries
        entry = self._entries.get(signal)
        if entry is None:
            raise AheadError(f"no forecast of {signal} was made at {now}")
        if not isinstance(entry, str) and entry[0] != tuple(targets):
            raise AheadError(
                f"forecasts of {signal} at {now} were made for {len(entry[0])} targets,"
                f" the engine asks for {len(targets)}"
            )
        return entry
