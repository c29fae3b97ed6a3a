"""The engine: one pass, ``tick(now)``.

collect (sources, concurrently, each under a timeout) → store (a non-finite value makes
the observation unusable, write the tick column) → orchestrator state (executors) →
forecasts (forecast-enabled signals) → policies (every policy × target) → combine scale
recommendations per target → action bus → journal + state, committed in one transaction.

``now`` is passed in: nothing here reads the wall clock or sleeps, so the live driver and
the replay driver run exactly this code. A failing source, forecaster, policy or executor
is logged and counted; what it affected holds and the pass goes on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from autoscaler.bus import ActionBus, Sleep
from autoscaler.config import Settings, TargetSettings, table_of
from autoscaler.errors import ConfigError
from autoscaler.forecasts import ForecastProvider, TargetForecasts, make_provider
from autoscaler.journal import JournalRecord, StateStore
from autoscaler.metrics import Metrics
from autoscaler.sources.base import EventSource, Sample, Source
from autoscaler.store import WindowStore
from forecasting.types import Forecast
from policies.base import Bounds, Context, Policy, Retrying
from policies.circuit import CircuitSpec
from policies.registry import POLICY_TYPES
from policies.scaling import combine_scale
from policies.types import (
    Action,
    Decision,
    Event,
    Scale,
    TargetState,
    TripBreaker,
)
from remediation.base import Executor, Outcome

log = logging.getLogger(__name__)

UNSAVED_MAX = 100_000
"""Journal records kept while commits fail (about 100 MB at worst); older ones are dropped."""

# Hold reasons carry live values ("queue_length 3 is within [1, 5]"); "changes" sampling
# compares them with the numbers masked, so a hold is journalled when its kind changes, not
# at every pass of a moving value.
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_DIGITS = bytes.maketrans(b"123456789", b"000000000")


def _shape(reason: str) -> str:
    """``reason`` with its numbers masked (``_NUMBER``)."""
    # A reason keeps its shape when a digit is replaced by another (the pattern sees a
    # digit only as a digit), so its shape is that of the reason with every digit a 0: a
    # few hundred texts on a month's replay, their shapes cached, where the regex would run
    # for every hold whose value moved. (In UTF-8 no byte of a multi-byte character is
    # below 0x80: only ASCII digits are touched.)
    return _shape_of_zeroed(reason.encode("utf-8", "surrogatepass").translate(_DIGITS))


@functools.lru_cache(maxsize=4096)
def _shape_of_zeroed(zeroed: bytes) -> str:
    return _NUMBER.sub("#", zeroed.decode("utf-8", "surrogatepass"))


class Memory(dict[str, Any]):
    """A policy's memory that knows whether it changed since it was last persisted.

    Policies assign (``mem[key] = value``); assigning an equal value is not a change. This
    replaces serialising every memory on every pass just to compare it.
    """

    dirty: bool = False

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self or self[key] != value:
            self.dirty = True
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.dirty = True
        super().__delitem__(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.dirty = True
        return super().pop(key, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def clear(self) -> None:
        self.dirty = self.dirty or bool(self)
        super().clear()


T = TypeVar("T")


def in_memory(component: object) -> bool:
    """A source or executor that answers from memory and never waits (the replay source,
    the recording executor) says so with ``in_memory = True``."""
    return getattr(component, "in_memory", False) is True


async def settle(
    calls: Sequence[tuple[Awaitable[T], bool]], limit: float
) -> list[T | BaseException]:
    """Await every call, each under ``limit`` seconds, concurrently; a failure comes back as its
    exception (``gather(..., return_exceptions=True)``). A call marked in-memory is awaited
    in place: a task and a timer per call cost more than the call (most of a replay pass)."""
    out: list[T | BaseException | None] = [None] * len(calls)
    waiting: list[tuple[int, Awaitable[T]]] = []
    for i, (call, direct) in enumerate(calls):
        if not direct:
            waiting.append((i, call))
            continue
        try:
            out[i] = await call
        except Exception as exc:
            out[i] = exc
    if waiting:
        results = await asyncio.gather(
            *(asyncio.wait_for(call, timeout=limit) for _, call in waiting),
            return_exceptions=True,
        )
        for (i, _), res in zip(waiting, results, strict=True):
            out[i] = res
    return out  # type: ignore[return-value]  # every slot was filled


def horizon_steps(settings: Settings) -> int:
    """Ticks ahead that forecasts reach."""
    return max(1, math.ceil(settings.forecasting.horizon / settings.service.interval))


def forecast_inputs(
    store: WindowStore, settings: Settings, *, history: bool = True
) -> Iterator[tuple[str, list[str], NDArray[np.float64]]]:
    """What the forecaster is given in a pass: each forecast signal with the targets that
    have samples of it and their windows ``[targets, ticks]`` (``[targets, 0]`` without
    ``history``)."""
    for signal, st in settings.signals.items():
        if not st.forecast:
            continue
        targets = store.targets(signal)
        if not targets:
            continue
        if history:
            _, window = store.matrix(signal, targets, st.window)
        else:
            window = np.empty((len(targets), 0))
        yield signal, targets, window


def _nest(flat: Mapping[str, str]) -> dict[str, Any]:
    """``{"behavior.max_scale_up": "2"}`` → ``{"behavior": {"max_scale_up": 2}}``: label
    text as TOML would have typed it (whole numbers, numbers, else text)."""
    out: dict[str, Any] = {}
    for path, text in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        value: Any = text.strip()
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                continue
        node[leaf] = value
    return out


@runtime_checkable
class Persistent(Protocol):
    """An executor with state of its own to persist with the journal (breaker board)."""

    def to_dict(self) -> dict[str, Any]: ...

    def restore(self, data: Mapping[str, Any]) -> None: ...


class Discovered(Protocol):
    service: str
    min_replicas: int
    max_replicas: int
    policy: str
    settings: Mapping[str, str]
    """More target settings by key path (``startup_delay``, ``behavior.scale_down_window``),
    as text: from a service's labels."""


@runtime_checkable
class Discovering(Protocol):
    """An executor that finds opted-in targets by itself (Swarm service labels)."""

    async def discover(self) -> Mapping[str, Discovered]: ...


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one pass saw and did."""

    now: float
    duration: float
    decisions: list[Decision]
    outcomes: list[Outcome]
    source_errors: dict[str, str]
    holds: int

    @property
    def ok(self) -> bool:
        return not self.source_errors


@dataclass(slots=True)
class _Plan:
    """What a pass needs of one target that does not change from pass to pass."""

    settings: TargetSettings
    only: set[str] | None
    bounds: Bounds
    rules: list[tuple[Policy, Memory]]
    """The policies that apply to the target, each with its memory for the target."""
    combine: Memory
    """The memory of the target's scale stabilisation (``combine_scale``)."""


_FINAL = frozenset({"done", "dry-run", "skipped-no-executor"})


def driven_breakers(settings: Settings) -> set[str]:
    """The breakers that a configured ``circuit_breaker`` rule drives: no other is ever
    tripped again, so one saved from an earlier config is not restored."""
    return {c.spec.breaker for c in settings.policies.values() if isinstance(c.spec, CircuitSpec)}


def carried_out(outcomes: Sequence[Outcome]) -> set[int]:
    """``id()`` of the actions that need not be asked for again: carried out (or, in a dry
    run, would have been), one that may still take effect, and one no executor is
    configured for (asked for again, it would be skipped on every pass until the config
    changes)."""
    return {id(o.action) for o in outcomes if o.status in _FINAL or o.uncertain}


@dataclass(slots=True)
class Engine:
    """Everything one pass needs, wired together."""

    settings: Settings
    sources: Sequence[Source]
    policies: Sequence[Policy]
    executors: Mapping[str, Executor]
    state_store: StateStore
    metrics: Metrics
    event_sources: Sequence[EventSource] = ()
    forecaster: ForecastProvider | None = None
    """Forecasts for forecast-enabled signals; ``[forecasting]``'s models when None."""
    dry_run: bool = False
    in_place: bool = False
    """Forecast and commit on the loop, not in a worker thread: for replays and backtests,
    where nothing else waits on the loop and the thread hop costs more than the work. Live,
    both go to a thread, so a long refit (the first pass after a start, a new target) never
    stalls health checks, webhooks or the watchdog."""
    sleep: Sleep = asyncio.sleep
    """The action bus's retry sleep; replays pass a no-op so virtual time never waits."""
    forecast_history: bool = True
    """Give the forecaster each forecast signal's window from the store. Off for one that
    keeps a store of its own (a replay's forecasts computed ahead in a second process), to
    which the window would be a few microseconds per signal and pass, unread."""
    store: WindowStore = field(init=False)
    bus: ActionBus = field(init=False)
    targets: dict[str, TargetSettings] = field(init=False)
    source_up: dict[str, bool] = field(init=False, default_factory=dict)
    last_tick: float | None = field(init=False, default=None)
    _memory: dict[str, Memory] = field(init=False, default_factory=dict)
    _plans: dict[str, _Plan] = field(init=False, default_factory=dict)
    _last_hold: dict[tuple[str, str], tuple[str, str]] = field(init=False, default_factory=dict)
    """The last journalled hold of each (policy, target): its reason and that reason's shape."""
    _produced: dict[str, Sequence[Sample]] = field(init=False, default_factory=dict)
    """Each source's samples of its last good pass: what goes stale when it fails."""
    _failed_keys: set[tuple[str, str]] = field(init=False, default_factory=set)
    _scaling: set[str] = field(init=False, default_factory=set)
    breakers: dict[str, str] = field(init=False, default_factory=dict)
    now: float = field(init=False, default=0.0)
    """Time of the pass in progress: the clock of executors that need one (breaker board)."""
    followups: list[Decision] = field(init=False, default_factory=list)
    """Decisions made while acting (a board's transition notice), handled in the same pass;
    one added after the pass's acting is handled in the next pass."""
    on_followups: Callable[[Sequence[Decision], Sequence[Outcome]], None] | None = field(
        init=False, default=None
    )
    """Told, at the end of every pass's acting, the follow-ups handled (most passes: none)
    and their outcomes."""
    target_policies: dict[str, set[str]] = field(init=False, default_factory=dict)
    """Discovered targets that name their policies (``autoscaler.policy`` label)."""
    _executor_state: dict[str, str] = field(init=False, default_factory=dict)
    """Last published state of each named breaker (from TripBreaker actions carried out)."""
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _discovering: dict[str, Discovering] = field(init=False, default_factory=dict)
    _persistent: dict[str, Persistent] = field(init=False, default_factory=dict)
    """Executors by capability, sorted once: a runtime Protocol check costs microseconds."""
    _by_executor: list[tuple[str, Executor, list[str], bool]] = field(
        init=False, default_factory=list
    )
    """The targets of each executor, with the executor and whether it is in memory."""
    _labelled: dict[str, tuple[Any, TargetSettings]] = field(init=False, default_factory=dict)
    _found: dict[str, set[str]] = field(init=False, default_factory=dict)
    """By discovering executor: the targets it found (and config did not name) last time."""
    """Discovered targets' settings with the labels they came from: parsed once."""
    _retrying: dict[str, Retrying] = field(init=False, default_factory=dict)
    """Policies to tell of their actions that were not carried out, by name."""
    _unsaved_records: list[JournalRecord] = field(init=False, default_factory=list)
    _unsaved_state: dict[str, Any] = field(init=False, default_factory=dict)
    """What a failed commit could not write: committed with the next pass."""

    def __post_init__(self) -> None:
        s = self.settings
        if self.forecaster is None:
            self.forecaster = make_provider(s.forecasting)
        self._scaling = {name for name, c in s.policies.items() if POLICY_TYPES[c.type].scales}
        self._retrying = {p.name: p for p in self.policies if isinstance(p, Retrying)}
        self.store = WindowStore(interval=s.service.interval, signals=s.signals)
        self.targets = dict(s.targets)
        self.bus = ActionBus(
            settings=s.bus,
            executors=self.executors,
            route=self._route,
            dry_run=self.dry_run,
            metrics=self.metrics,
            sleep=self.sleep,
        )
        for name, ex in self.executors.items():
            if isinstance(ex, Discovering):
                self._discovering[name] = ex
            if isinstance(ex, Persistent):
                self._persistent[name] = ex
        self._watch_targets()
        self._group_targets()
        self.restore(self.state_store.load_state())

    # --- state -------------------------------------------------------------------------

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore bus state and policy memories persisted by earlier runs."""
        self.bus.restore(state)
        for name, ex in self._persistent.items():
            saved = state.get(f"executor:{name}")
            if isinstance(saved, dict):
                ex.restore(saved)
        self.bus.paused = bool(state.get("service:paused", False))
        self.metrics.paused.set(1.0 if self.bus.paused else 0.0)
        self._plans.clear()  # they hold the memories replaced below
        driven = driven_breakers(self.settings)
        for key, value in state.items():
            if key.startswith("published:") and isinstance(value, str):
                if key[10:] in driven:
                    self.breakers[key[10:]] = value
                else:  # deleted with the first commit: not stale if the rule comes back
                    self._unsaved_state[key] = None
            if key.startswith("memory:") and isinstance(value, dict):
                self._memory[key[7:]] = Memory(value)

    def set_paused(self, paused: bool) -> bool:
        """Pause or resume action execution (decisions are still made and journalled).
        Takes effect at once; returns whether it was saved. A failed save (a read-only or
        full disk) is counted and kept for the next pass's commit, as a pass's own state is,
        so a restart still comes back as the operator left it."""
        self.bus.paused = paused
        self.metrics.paused.set(1.0 if paused else 0.0)
        try:
            self.state_store.commit([], {"service:paused": paused})
        except Exception:
            self.metrics.errors.labels("journal").inc()
            log.exception("saving service:paused failed: kept for the next pass")
            self._unsaved_state["service:paused"] = paused
            return False
        self._unsaved_state.pop("service:paused", None)
        return True

    async def flush(self, now: float, interrupted: Sequence[tuple[Action, str]] = ()) -> None:
        """Commit what no pass did: at shutdown, after a pass was cut short or commits
        failed. The cooldowns and dedupe keys of the actions an interrupted pass was
        carrying out are saved (they were marked before the calls), as is what its calls
        changed in an executor that keeps state (a breaker tripped on the board), and each
        of those ``interrupted`` (action, executor) is journalled as such: it may have
        taken effect, and a restart must not do it again at once."""
        records = [
            JournalRecord(
                now,
                "shutdown",
                action.target,
                action.kind,
                action.params(),
                "the service stopped while this action was being carried out; it may have"
                " taken effect",
                {},
                "interrupted",
                "",
                executor,
            )
            for action, executor in interrupted
        ]
        state: dict[str, Any] = {
            **self.bus.drain_state(now),
            **self._drain_memory(),
            **self._drain_executors(),
        }
        if not records and not state and not self._unsaved_records and not self._unsaved_state:
            return
        await self._commit(records, state)
        if self._unsaved_records or self._unsaved_state:
            log.error(
                "could not save at shutdown: %d journal records and %d state keys are lost",
                len(self._unsaved_records),
                len(self._unsaved_state),
            )

    def _route(self, action: Action) -> Sequence[str]:
        t = self.targets.get(action.target)
        return [t.executor] if t is not None and t.executor else []

    # --- the pass ----------------------------------------------------------------------

    async def tick(self, now: float) -> TickReport:
        """One pass at time ``now``. Never raises for a component failure."""
        async with self._lock:
            started = time.perf_counter()
            self.now = now
            source_errors = await self._collect(now)
            events = self._drain_events(now)
            await self._discover()
            states = await self._states()
            if self.in_place:
                forecasts = self._forecasts(now)
            else:
                forecasts = await asyncio.to_thread(self._forecasts, now)
            decisions = self._evaluate(now, states, forecasts, events)
            actions = [d.action for d in decisions if d.action is not None]
            outcomes = await self.bus.submit(actions, now)
            handled: list[Decision] = []
            told: list[Outcome] = []
            while self.followups:  # decided while acting (breaker transitions to notify)
                extra, self.followups = self.followups, []
                handled.extend(extra)
                told.extend(await self.bus.submit([d.action for d in extra if d.action], now))
            decisions.extend(handled)
            outcomes.extend(told)
            if self.on_followups is not None:
                self.on_followups(handled, told)
            self._not_carried_out(decisions, outcomes)
            holds = await self._journal(now, decisions, outcomes)
            duration = time.perf_counter() - started
            self.last_tick = now
            m = self.metrics
            m.child(m.ticks, "error" if source_errors else "ok").inc()
            m.tick_duration.observe(duration)
            m.last_tick.set(now)
            return TickReport(now, duration, decisions, outcomes, source_errors, holds)

    def _not_carried_out(self, decisions: Sequence[Decision], outcomes: Sequence[Outcome]) -> None:
        """Tell the policies that keep "done" in their memory which of their actions the
        bus skipped or that failed, and which of the two (``Retrying``); not one that may
        still take effect, nor one no executor is configured for (a notice without
        notifiers): asked for again, it would be skipped again on every pass until the
        config changes."""
        if not self._retrying:
            return
        carried = carried_out(outcomes)
        failed = {id(o.action) for o in outcomes if o.status == "failed"}
        for d in decisions:
            policy = self._retrying.get(d.policy)
            if policy is None or d.action is None or id(d.action) in carried:
                continue
            memory = self._memory.get(f"{d.policy}:{d.target}")
            if memory is not None:
                policy.not_carried_out(memory, d.action, failed=id(d.action) in failed)

    async def _collect(self, now: float) -> dict[str, str]:
        results = await settle(
            [(src.collect(now), in_memory(src)) for src in self.sources],
            self.settings.service.tick_timeout,
        )
        errors: dict[str, str] = {}
        failed_keys: set[tuple[str, str]] = set()
        for src, res in zip(self.sources, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                msg = "timed out" if isinstance(res, TimeoutError) else (str(res) or repr(res))
                errors[src.name] = msg
                self.metrics.source_errors.labels(src.name).inc()
                self.metrics.source_up.labels(src.name).set(0)
                self.source_up[src.name] = False
                failed_keys.update(
                    (smp.target, smp.signal) for smp in self._produced.get(src.name, ())
                )
                log.warning("source failed", extra={"source": src.name, "error": msg})
                continue
            self.source_up[src.name] = True
            m = self.metrics
            m.child(m.source_up, src.name).set(1)
            self._produced[src.name] = tuple(res)  # our own: a source may reuse its list
            if not res:
                continue
            before = dict(self.store.dropped)
            if self.store.ingest(res):
                for reason, count in self.store.dropped.items():
                    if count > before.get(reason, 0):
                        m.child(m.dropped_samples, reason).inc(count - before.get(reason, 0))
        self.store.advance(now)
        self._failed_keys = failed_keys
        return errors

    def _drain_events(self, now: float) -> list[Event]:
        events: list[Event] = []
        for es in self.event_sources:
            try:
                events.extend(es.drain(now))
            except Exception:
                self.metrics.errors.labels("events").inc()
                log.exception("event source failed")
        return events

    async def _discover(self) -> None:
        """Add targets that executors discover (opt-in labels), and drop those an executor
        no longer finds (opted out, or removed): no decision is made for them from this
        pass on. Configured targets win; a discovery that failed drops nothing. A dropped
        target's policy memory stays, for a service that opts in again."""
        for name, ex in self._discovering.items():
            try:
                found = await asyncio.wait_for(
                    ex.discover(), timeout=self.settings.bus.executor_timeout
                )
            except Exception as exc:
                self.metrics.errors.labels("discovery").inc()
                log.warning("discovery failed", extra={"executor": name, "error": str(exc)})
                continue
            ours = {t for t in found if t not in self.settings.targets}
            gone = self._found.get(name, set()) - ours
            self._found[name] = ours
            for target in gone:
                if any(target in f for f in self._found.values()):
                    continue  # another executor still finds it
                del self.targets[target]
                self.target_policies.pop(target, None)
                self._labelled.pop(target, None)
                self._plans.pop(target, None)
                log.info("target %s is no longer discovered by %s: dropped", target, name)
            for target in ours:
                d = found[target]
                self.targets[target] = self._discovered(target, name, d)
                if d.policy:
                    self.target_policies[target] = {p.strip() for p in d.policy.split(",")}
                else:
                    self.target_policies.pop(target, None)
        if self._discovering:
            self._watch_targets()
            self._group_targets()

    def _watch_targets(self) -> None:
        """Tell the sources that want them (``watch_targets``) the targets, configured and
        discovered: the Alertmanager source reports a known 0 for a quiet one."""
        for src in self.sources:
            watch = getattr(src, "watch_targets", None)
            if watch is not None:
                watch(self.targets.keys())

    def _discovered(self, target: str, executor: str, d: Discovered) -> TargetSettings:
        """A discovered target's settings, its labelled settings checked as config is; with
        a bad one the labels are ignored (logged once per change) and defaults apply."""
        key = (
            executor,
            d.service,
            d.min_replicas,
            d.max_replicas,
            tuple(sorted(d.settings.items())),
        )
        hit = self._labelled.get(target)
        if hit is not None and hit[0] == key:
            return hit[1]
        base = {
            "executor": executor,
            "service": d.service,
            "min_replicas": d.min_replicas,
            "max_replicas": d.max_replicas,
        }
        try:
            clash = sorted(k for k in d.settings if k in base)
            if clash:
                raise ConfigError([f"{k}: set by the executor, not a label" for k in clash])
            tset = table_of(TargetSettings, {**_nest(d.settings), **base}, "")
        except ConfigError as exc:
            log.warning(
                "ignoring the settings labels of discovered target %s: %s",
                target,
                "; ".join(exc.problems),
            )
            self.metrics.errors.labels("discovery").inc()
            tset = TargetSettings(**base)  # type: ignore[arg-type]
        self._labelled[target] = (key, tset)
        return tset

    def _group_targets(self) -> None:
        """Group the targets by executor, for ``_states``: again whenever they change."""
        by_executor: dict[str, list[str]] = {}
        for name, t in self.targets.items():
            if t.executor in self.executors:
                by_executor.setdefault(t.executor, []).append(name)
        self._by_executor = [
            (name, self.executors[name], targets, in_memory(self.executors[name]))
            for name, targets in by_executor.items()
        ]

    async def _states(self) -> dict[str, TargetState]:
        groups = self._by_executor
        results = await settle(
            [(ex.states(targets), direct) for _, ex, targets, direct in groups],
            self.settings.bus.executor_timeout,
        )
        names = [name for name, _, _, _ in groups]
        states: dict[str, TargetState] = {}
        for name, res in zip(names, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                self.metrics.errors.labels("state").inc()
                log.warning("executor state failed", extra={"executor": name, "error": str(res)})
                continue
            states.update(res)
        return states

    def _forecasts(self, now: float) -> dict[str, Mapping[str, Forecast]]:
        """Forecasts by signal, then target. Live it runs in a worker thread while the pass
        holds the lock: nothing else reads or writes the window store or the forecaster."""
        out: dict[str, Mapping[str, Forecast]] = {}
        step = self.settings.service.interval
        steps = horizon_steps(self.settings)
        inputs = forecast_inputs(self.store, self.settings, history=self.forecast_history)
        for signal, targets, history in inputs:
            assert self.forecaster is not None
            try:
                out[signal] = self.forecaster.forecast(
                    signal, targets, history, step=step, horizon_steps=steps, now=now
                )
            except Exception:
                self.metrics.errors.labels("forecast").inc()
                log.exception("forecast of %s failed", signal)
        return out

    def _evaluate(
        self,
        now: float,
        states: Mapping[str, TargetState],
        forecasts: Mapping[str, Mapping[str, Forecast]],
        events: Sequence[Event],
    ) -> list[Decision]:
        """Every applicable policy for every target; ``forecasts`` is by signal, then
        target."""
        history = self.store
        events_by_target: dict[str, list[Event]] = {}
        for e in events:
            events_by_target.setdefault(e.target, []).append(e)
        latest = self.store.latest(now)
        failed = self._failed_keys
        out: list[Decision] = []
        for target, tset in self.targets.items():
            plan = self._plan(target, tset)
            state = states.get(target)
            decided: list[Decision] = []
            if plan.rules:  # (a target with none still goes to combine_scale: its bounds)
                bounds = plan.bounds
                obs = latest.of(target, failed)
                fcs = TargetForecasts(target, forecasts)
                tev = events_by_target.get(target, ())
                for policy, memory in plan.rules:
                    ctx = Context(
                        now, target, bounds, state, obs, fcs, history, tev, memory, self.breakers
                    )
                    try:
                        decided.extend(policy.evaluate(ctx))
                    except Exception as exc:
                        self.metrics.errors.labels("policy").inc()
                        log.exception("policy %s failed for %s", policy.name, target)
                        reason = f"policy error, holding: {exc!r}"
                        decided.append(Decision(policy.name, target, now, None, reason))
            self._merge(target, decided, plan, state, now, out)
        counts: dict[tuple[str, str], int] = {}
        for d in out:
            key = (d.policy, "hold" if d.action is None else d.action.kind)
            counts[key] = counts.get(key, 0) + 1
        m = self.metrics
        for (policy_name, kind), n in counts.items():
            m.child(m.decisions, policy_name, kind).inc(n)
        return out

    def _plan(self, target: str, tset: TargetSettings) -> _Plan:
        """The target's plan, rebuilt when its settings or its policy list changed."""
        only = self.target_policies.get(target)
        plan = self._plans.get(target)
        if plan is not None and plan.only == only:
            if plan.settings is tset or plan.settings == tset:
                return plan
        memory = self._memory
        rules = [
            (p, memory.setdefault(f"{p.name}:{target}", Memory()))
            for p in self.policies
            if (not p.targets or target in p.targets) and (only is None or p.name in only)
        ]
        bounds = Bounds(tset.min_replicas, tset.max_replicas, tset.startup_delay)
        combine = memory.setdefault(f"combine:{target}", Memory())
        plan = self._plans[target] = _Plan(tset, only, bounds, rules, combine)
        return plan

    def _merge(
        self,
        target: str,
        decisions: list[Decision],
        plan: _Plan,
        state: TargetState | None,
        now: float,
        out: list[Decision],
    ) -> None:
        """Fold the scaling rules' votes (holds vote too) into at most one scale decision;
        keep every other decision as it is. The result is appended to ``out``."""
        scaling: list[Decision] = []
        for d in decisions:
            if d.policy in self._scaling or isinstance(d.action, Scale):
                scaling.append(d)
            else:
                out.append(d)
        if state is not None and state.deploying:
            why = f"deploy in progress ({state.update_state}), scaling waits"
            out.extend(d for d in scaling if d.action is None)
            out.extend(
                Decision(d.policy, target, now, None, why, d.inputs)
                for d in scaling
                if isinstance(d.action, Scale)
            )
            return
        combined = combine_scale(
            target,
            scaling,
            bounds=plan.bounds,
            current=None if state is None else state.desired_replicas,
            now=now,
            memory=plan.combine,
            behavior=plan.settings.behavior,
        )
        if combined is not None and combined.action is not None:
            out.append(combined)
            return
        for d in scaling:  # (a loop: a generator costs more than the one or two votes)
            if d.action is None:
                out.append(d)
        if combined is not None:
            out.append(combined)

    async def _journal(
        self, now: float, decisions: Sequence[Decision], outcomes: Sequence[Outcome]
    ) -> int:
        mode = self.settings.service.journal_holds
        by_action: dict[int, list[Outcome]] = {}
        for o in outcomes:
            by_action.setdefault(id(o.action), []).append(o)
        records: list[JournalRecord] = []
        published: dict[str, str] = {}
        holds = 0
        for d in decisions:
            if d.action is None:
                holds += 1
                if mode == "none":
                    continue
                key = (d.policy, d.target)
                last = self._last_hold.get(key)
                if mode == "changes" and last is not None and last[0] == d.reason:
                    continue
                shape = _shape(d.reason)
                self._last_hold[key] = (d.reason, shape)
                if mode == "changes" and last is not None and last[1] == shape:
                    continue
                records.append(
                    JournalRecord(now, d.policy, d.target, "hold", {}, d.reason, d.inputs)
                )
                continue
            self._last_hold.pop((d.policy, d.target), None)
            for o in by_action.get(id(d.action), []):
                if isinstance(d.action, TripBreaker) and (
                    o.status in ("done", "dry-run")
                    # with no publishing executor the journal is where breakers are published
                    or (o.status == "skipped-no-executor" and not self.settings.bus.breakers)
                ):
                    self.breakers[d.action.target] = d.action.state
                    published[f"published:{d.action.target}"] = d.action.state
                records.append(
                    JournalRecord(
                        now,
                        d.policy,
                        d.target,
                        d.action.kind,
                        d.action.params(),
                        d.reason,
                        d.inputs,
                        o.status,
                        o.detail,
                        o.executor,
                    )
                )
                log.info(
                    "decision",
                    extra={
                        "policy": d.policy,
                        "target": d.target,
                        "action": d.action.kind,
                        "params": d.action.params(),
                        "status": o.status,
                        "reason": d.reason,
                    },
                )
        state: dict[str, Any] = {
            **self.bus.drain_state(now),
            **published,
            **self._drain_memory(),
            **self._drain_executors(),
        }
        await self._commit(records, state)
        return holds

    def _drain_executors(self) -> dict[str, Any]:
        """The state of the executors that keep one (the breaker board), where it changed
        since the last call, as state keys to save."""
        out: dict[str, Any] = {}
        for name, persistent in self._persistent.items():
            saved = persistent.to_dict()
            text = json.dumps(saved, sort_keys=True, default=str)
            if self._executor_state.get(name) != text:
                self._executor_state[name] = text
                out[f"executor:{name}"] = saved
        return out

    def _drain_memory(self) -> dict[str, Any]:
        """The policy memories changed since the last call, as state keys to save."""
        out: dict[str, Any] = {}
        for mkey, memory in self._memory.items():
            if memory.dirty:
                memory.dirty = False
                out[f"memory:{mkey}"] = dict(memory)
        return out

    async def _commit(self, records: list[JournalRecord], state: dict[str, Any]) -> None:
        """Commit, with whatever an earlier failed commit left. A failure (a locked or full
        disk) keeps both for the next pass, newer state over older: the pass has acted, and
        a cooldown it started must survive a restart. Records beyond ``UNSAVED_MAX`` are
        dropped oldest first (the log says how many), so a disk that stays full cannot
        exhaust memory."""
        if self._unsaved_records or self._unsaved_state:
            records = [*self._unsaved_records, *records]
            state = {**self._unsaved_state, **state}
        try:
            if self.in_place:
                self.state_store.commit(records, state)
            else:
                await asyncio.to_thread(self.state_store.commit, records, state)
        except Exception:
            self.metrics.errors.labels("journal").inc()
            lost = max(0, len(records) - UNSAVED_MAX)
            log.exception(
                "journal commit failed: %d records and %d state keys kept for the next pass%s",
                len(records) - lost,
                len(state),
                f", {lost} oldest records dropped" if lost else "",
            )
            self._unsaved_records, self._unsaved_state = records[lost:], state
            return
        self._unsaved_records, self._unsaved_state = [], {}
