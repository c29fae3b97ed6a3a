"""The live driver: an APScheduler interval job calling ``engine.tick(clock())``.

Passes run on the tick grid (multiples of ``service.interval`` since the epoch, as the
window store files samples), a few milliseconds after each grid time; the first pass
runs at once. The scheduler runs on the wall clock; a watch on the monotonic clock
re-arms the passes when the wall clock is set back (``_watch_clock``). A pass scheduled
half-way between grid times would, with the timer's jitter, land on alternate grid slots
and leave gaps in every window.

Root tasks live in one ``asyncio.TaskGroup``; SIGTERM/SIGINT set a stop event; shutdown
lets an in-flight pass finish within ``service.shutdown_timeout`` and closes the journal.
A failed pass never stops the loop: it is logged and counted, and the next one runs on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from autoscaler.config import Settings, stale_after
from autoscaler.engine import Engine, TickReport
from autoscaler.http import make_app, serve
from policies.types import Action

log = logging.getLogger(__name__)

TickHook = Callable[[TickReport | None, BaseException | None], None]


GC_THRESHOLDS = (20_000, 20, 10)
"""Allocations between young collections (CPython's default is 700). A pass allocates tens
of thousands of short-lived objects that reference counting frees; collecting every 700 of
them cost about 5 ms of a 50 ms pass for 1,000 targets (``bench/tick.py``)."""


def settle_gc() -> None:
    """Tune the collector for the steady loop, once the first pass is done: what that pass
    built (windows, memories, models) lives as long as the service, so it is frozen out of
    every later collection, and young collections run less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass(slots=True)
class LiveDriver:
    """Runs the engine on a schedule, serves HTTP, stops cleanly."""

    engine: Engine
    settings: Settings
    clock: Callable[[], float] = time.time
    extra_routes: Iterable[web.RouteDef] = ()
    on_tick: list[TickHook] = field(default_factory=list)
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    port: int | None = None
    _running: asyncio.Task[None] | None = None
    _scheduler: AsyncIOScheduler | None = None
    _frozen: bool = False
    _last_pass: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when the last pass ended (or the driver was made)."""

    async def _tick(self) -> None:
        report: TickReport | None = None
        error: BaseException | None = None
        try:
            report = await self.engine.tick(self.clock())
            if not self._frozen:
                settle_gc()
                self._frozen = True
        except Exception as exc:  # a failed pass is counted; the loop goes on
            error = exc
            self.engine.metrics.ticks.labels("error").inc()
            log.exception("tick failed")
        self._last_pass = time.monotonic()
        for hook in self.on_tick:
            try:
                hook(report, error)
            except Exception:
                log.exception("tick hook failed")

    async def _job(self) -> None:
        task = asyncio.ensure_future(self._tick())
        self._running = task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # the scheduler's shutdown cancels the job, not the pass (shielded): ``run``
            # waits for the pass, and a stop is not an error for the scheduler to log
            if not self.stop_event.is_set():
                raise
        finally:
            self._running = None

    async def _first(self) -> None:
        """The first pass, at once; then a pass at every grid time."""
        await self._job()
        self._arm()

    def _arm(self) -> None:
        """(Re)schedule the passes: one at every grid time from the next one on."""
        if self._scheduler is None:
            return  # stopping
        interval = self.settings.service.interval
        self._scheduler.add_job(
            self._job,
            "interval",
            id="tick",
            seconds=interval,
            start_date=datetime.fromtimestamp(grid_after(time.time(), interval), UTC),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            replace_existing=True,
        )

    async def _watch_clock(self) -> None:
        """APScheduler times the passes on the wall clock: set back by an hour (an NTP
        step, a VM restored from a snapshot), it would run no pass for an hour. Timed on
        the monotonic clock, this re-arms the passes on the grid when none has ended for
        three intervals, none is running, and the next is more than two intervals away."""
        interval = self.settings.service.interval
        while True:
            await asyncio.sleep(interval)
            scheduler = self._scheduler
            job = None if scheduler is None else scheduler.get_job("tick")
            if job is None or self._running is not None or job.next_run_time is None:
                continue
            if time.monotonic() - self._last_pass < 3 * interval:
                continue
            wait = job.next_run_time.timestamp() - time.time()
            if wait > 2 * interval:
                log.warning(
                    "no pass for %.0f s and the next is %.0f s away: the clock went back;"
                    " passes re-armed on the grid",
                    time.monotonic() - self._last_pass,
                    wait,
                )
                self._arm()

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT or ``stop_event``."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop_event.set)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests): the stop event is set directly
        runner: web.AppRunner | None = None
        http = self.settings.http
        if http.enabled:
            max_age = stale_after(self.settings)
            app = make_app(
                engine=self.engine,
                clock=self.clock,
                token=http.token,
                healthz_max_age=max_age,
                extra_routes=self.extra_routes,
            )
            runner, self.port = await serve(
                app, http.host, http.port, request_timeout=http.request_timeout
            )
            log.info("http listening", extra={"host": http.host, "port": self.port})
        scheduler = AsyncIOScheduler()
        scheduler.add_job(self._first, id="first", misfire_grace_time=None)  # at once
        self._scheduler = scheduler
        scheduler.start()
        watch = asyncio.ensure_future(self._watch_clock())
        try:
            await self.stop_event.wait()
        finally:
            log.info("stopping")
            watch.cancel()
            for stop_hook in self.on_stop:
                try:
                    stop_hook()
                except Exception:
                    log.exception("stop hook failed")
            scheduler.shutdown(wait=False)
            self._scheduler = None
            running = self._running
            interrupted: list[tuple[Action, str]] = []
            deadline = time.monotonic() + self.settings.service.shutdown_timeout
            if running is not None:
                try:
                    await asyncio.wait_for(
                        asyncio.shield(running), self.settings.service.shutdown_timeout
                    )
                except TimeoutError:
                    log.warning("in-flight pass did not finish before the shutdown timeout")
                    interrupted = list(self.engine.bus.in_flight.values())
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await asyncio.wait_for(running, 1.0)
            # calls the bus stopped waiting for (timed out) may still be running: give them
            # what is left of the shutdown time before their executors are closed
            still = await self.engine.bus.wait_abandoned(deadline - time.monotonic())
            if still:
                log.warning("%d timed-out executor calls still running at shutdown", len(still))
            await self.engine.flush(self.clock(), [*interrupted, *still])
            if runner is not None:
                await runner.cleanup()
            for ex in self.engine.executors.values():
                try:
                    await ex.aclose()
                except Exception:
                    log.exception("closing executor failed")
            for src in self.engine.sources:
                try:
                    await src.aclose()
                except Exception:
                    log.exception("closing source failed")
            self.engine.state_store.close()


def grid_after(t: float, interval: float) -> float:
    """The first tick-grid time strictly after ``t``."""
    return (math.floor(t / interval) + 1) * interval
