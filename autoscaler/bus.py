"""The action bus: from decided actions to executor calls, safely.

For each action, in order: paused? → duplicate (same idempotency key within the dedupe
window)? → in cooldown for (target, kind)? → over the global rate limit? → which executors?
→ dry-run? → held on every executor (its breaker open, a ``Retry-After`` still running for
it, or an earlier restart or rollback of the target still running there: then it is not
executed and takes no rate-limit slot)? → executor breaker open (or its half-open trials
taken)? → call with a timeout, retrying
temporary failures with jittered exponential backoff (not those the executor already
retried, not a call that timed out of an executor that retries within its call, as the
notifiers and the webhook do whatever the action, nor a notice that timed out, and not
before a ``Retry-After`` the server gave). A call that times out is
cancelled when its executor is ``cancellable`` (asyncio I/O only: Fly, the notifiers), and
otherwise abandoned: an executor working in a thread (docker-py) cannot be stopped, so the
call may still be carried out. An abandoned restart or rollback is therefore never retried,
keeps its cooldown (its outcome is ``uncertain``), and no new one starts for that (executor,
target) while the call still runs; a scale (absolute replicas) is retried as any temporary
failure. At shutdown ``wait_abandoned`` gives such calls the time left and names those still
running, to be journalled as interrupted. Only temporary failures count toward an executor's
breaker: a permanent one (an unknown service, a bad request) is that action's, not the
executor's.
A notice is paced by its own cooldown alone (by dedup key, trigger or resolve: the dedupe
window does not hold it longer), and one that went out clears its twin's, so a resolve is
never held back by its trigger, nor the next trigger by the resolve (a resolve that reached
no notifier leaves its trigger in cooldown: for humans the incident is still open). Gating
is sequential and cheap; the calls run concurrently.
An action that no executor carried out leaves no cooldown or dedupe key, so the next pass
tries again; a notice that reached some of its notifiers counts as sent (a notifier that
failed shows in ``autoscaler_actions_total{status="failed"}``; it is not resent).

A dry-run marks cooldowns and dedupe keys exactly as a real call would, so a dry-run
journal shows the same decisions as a live one. Every piece of state that changes
behaviour is exported by ``drain_state()`` for the engine to persist with the tick.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from autoscaler.config import BusSettings
from autoscaler.metrics import BREAKER_VALUES, Metrics
from policies.types import Action, Notify, Restart, Rollback, TripBreaker
from remediation.base import Executor, ExecutorError, Outcome, OutcomeStatus
from remediation.breaker import CircuitBreaker

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Route = Callable[[Action], Sequence[str]]

_ONCE = (Restart, Rollback)

MAX_RETRY_AFTER = 3600.0
"""The longest ``Retry-After`` the bus waits out: a server (or a proxy) asking for a day or
``1e300`` seconds would otherwise never be called again until a restart."""
"""Actions that must not run twice: a second rolling restart, or a rollback of the rollback."""


class ActionBus:
    """Routes actions to executors under cooldowns, dedupe, rate limit and breakers."""

    def __init__(
        self,
        *,
        settings: BusSettings,
        executors: Mapping[str, Executor],
        route: Route,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.executors = dict(executors)
        self.route = route
        self.dry_run = dry_run
        self.paused = False
        self.metrics = metrics
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.cooldowns: dict[str, float] = {}
        self.dedupe: dict[str, float] = {}
        self.in_flight: dict[int, tuple[Action, str]] = {}
        """Executor calls under way: the action and the executor, by call."""
        self.not_before: dict[tuple[str, str], float] = {}
        """By executor, and target where its server limits each one apart
        (``retry_after_per_target``): when the server said to try again (``Retry-After``)."""
        self.abandoned: dict[tuple[str, str], dict[asyncio.Future[str], Action]] = {}
        """By (executor, target): calls that timed out and still run, with their action."""
        self._executed: deque[float] = deque()
        self._per_target = {
            name: bool(getattr(ex, "retry_after_per_target", False))
            for name, ex in self.executors.items()
        }
        b = settings.breaker
        self.breakers = {
            name: CircuitBreaker(
                name,
                failure_threshold=b.failure_threshold,
                reset_timeout=b.reset_timeout,
                half_open_trials=b.half_open_trials,
            )
            for name in self.executors
        }
        self._dirty: dict[str, Any] = {}
        self._breakers_saved: dict[str, dict[str, Any]] = {}
        """Each breaker's state as ``drain_state`` last exported it."""

    # --- persistence -------------------------------------------------------------------

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore cooldowns, dedupe keys and breaker states persisted earlier."""
        for key, value in state.items():
            kind, _, rest = key.partition(":")
            try:
                if kind == "cooldown":
                    self.cooldowns[rest] = float(value)
                elif kind == "dedupe":
                    self.dedupe[rest] = float(value)
                elif kind == "breaker" and rest in self.breakers:
                    self.breakers[rest].restore(dict(value))
            except (TypeError, ValueError):
                log.warning("ignoring bad persisted state %s", key)

    def drain_state(self, now: float) -> dict[str, Any]:
        """State changed since the last call (``None`` = delete), expired keys pruned."""
        for table, prefix, ttl in (
            (self.cooldowns, "cooldown", 0.0),
            (self.dedupe, "dedupe", self.settings.dedupe_window),
        ):
            for k in [k for k, t in table.items() if t + ttl <= now]:
                del table[k]
                self._dirty[f"{prefix}:{k}"] = None
        for name, br in self.breakers.items():
            saved = br.to_dict()
            if self._breakers_saved.get(name) == saved:
                continue  # unchanged (nearly every pass): nothing to write or export
            self._breakers_saved[name] = saved
            self._dirty[f"breaker:{name}"] = saved
            if self.metrics is not None:
                m = self.metrics
                m.child(m.executor_breaker, name).set(BREAKER_VALUES[br.state])
        out, self._dirty = self._dirty, {}
        return out

    # --- the pass ----------------------------------------------------------------------

    def cooldown_for(self, action: Action) -> float:
        return self.settings.cooldown_of(action.cooldown_kind)

    def _targets(self, action: Action) -> list[str]:
        if isinstance(action, Notify):
            return list(self.settings.notify)
        if isinstance(action, TripBreaker):
            return [self.settings.breakers] if self.settings.breakers else []
        return [name for name in self.route(action) if name]

    async def submit(self, actions: Sequence[Action], now: float) -> list[Outcome]:
        """Gate and execute ``actions``; one outcome per action (per executor for fan-out)."""
        outcomes: list[Outcome] = []
        calls: list[tuple[int, Action, str]] = []
        window = 60.0
        if self._executed and self._executed[-1] > now:
            # the clock went back: the minute of these counts from now, not from the
            # future (they would fill the limit for as long as the step)
            self._executed = deque(min(t, now) for t in self._executed)
        while self._executed and self._executed[0] <= now - window:
            self._executed.popleft()
        if not actions:
            return outcomes  # the usual pass
        for action in actions:
            status, detail = self._gate(action, now)
            if status is not None:
                outcomes.append(Outcome(action, status, detail, now))
                continue
            names = self._targets(action)
            missing = [n for n in names if n not in self.executors]
            if not names or missing:
                why = f"no executor {missing[0]!r}" if missing else "no executor for this action"
                outcomes.append(Outcome(action, "skipped-no-executor", why, now))
                continue
            held = {} if self.dry_run else {n: self._held(action, n, now) for n in names}
            if held and all(held.values()):
                # not executed: it takes no rate-limit slot from other actions (one held by
                # a Retry-After is asked for on every pass until the wait is over)
                outcomes.extend(o for o in held.values() if o is not None)
                continue
            self._executed.append(now)
            self._mark(action, now)
            if self.dry_run:
                self._sent(action)
            for name in names:
                if self.dry_run:
                    outcomes.append(Outcome(action, "dry-run", "executor not called", now, name))
                    continue
                skipped = held[name]
                if skipped is not None:
                    outcomes.append(skipped)
                    continue
                outcomes.append(Outcome(action, "done", "", now, name))  # placeholder
                calls.append((len(outcomes) - 1, action, name))
        if calls:
            results = await asyncio.gather(
                *(self._call(action, name, now) for _, action, name in calls)
            )
            for (i, _, _), outcome in zip(calls, results, strict=True):
                outcomes[i] = outcome
            # an action no executor carried out leaves no cooldown, so the next pass may try
            # again; one that reached any (a notice fanned out) is not sent to all again, nor
            # one that may still take effect (a timed-out restart still running)
            reached = {id(o.action) for o in results if o.status == "done" or o.uncertain}
            for action in {id(a): a for _, a, _ in calls}.values():
                if id(action) not in reached:
                    self._unmark(action)
                else:
                    self._sent(action)
        if self.metrics is not None:
            m = self.metrics
            for (kind, status), n in Counter((o.action.kind, o.status) for o in outcomes).items():
                m.child(m.actions, kind, status).inc(n)
        return outcomes

    def _gate(self, action: Action, now: float) -> tuple[OutcomeStatus | None, str]:
        if self.paused:
            return "skipped-paused", "action execution is paused"
        if action.paced:
            ckey = action.cooldown_key
            until = self.cooldowns.get(ckey, 0.0)
            cooldown = self.cooldown_for(action)
            if until - cooldown > now:
                # set after now: the clock went back. It runs its length from this pass,
                # not as long as the step as well
                until = self.cooldowns[ckey] = now + cooldown
                self._dirty[f"cooldown:{ckey}"] = until
            if until > now:
                return "skipped-cooldown", f"{action.cooldown_kind} cooldown for {until - now:.0f}s"
            seen = self.dedupe.get(action.key)
            if seen is not None and seen > now:  # the clock went back, as above
                seen = self.dedupe[action.key] = now
                self._dirty[f"dedupe:{action.key}"] = now
            if seen is not None and now - seen < self._dedupe_window(action):
                return "skipped-duplicate", f"same action issued {now - seen:.0f}s ago"
        if len(self._executed) >= self.settings.rate_limit:
            return "skipped-rate-limit", f"{self.settings.rate_limit} actions in the last minute"
        return None, ""

    def _dedupe_window(self, action: Action) -> float:
        """A notice's cooldown is per notice already (dedup key, trigger or resolve): it
        alone says when the notice may go out again, as Alertmanager's repeat_interval does;
        a longer dedupe window would hold it past ``bus.cooldowns.notify``."""
        return 0.0 if isinstance(action, Notify) else self.settings.dedupe_window

    def _mark(self, action: Action, now: float) -> None:
        if not action.paced:
            return
        ckey = action.cooldown_key
        cooldown = self.cooldown_for(action)
        if cooldown > 0:
            self.cooldowns[ckey] = now + cooldown
            self._dirty[f"cooldown:{ckey}"] = now + cooldown
        self.dedupe[action.key] = now
        self._dirty[f"dedupe:{action.key}"] = now

    def _sent(self, action: Action) -> None:
        """A notice that went out (or would have, in a dry run): a resolve lets the next
        trigger through, and back. Not before: while a resolve has reached nobody the
        incident is open for humans, and its trigger stays in its cooldown."""
        if isinstance(action, Notify):
            self._unmark(replace(action, resolve=not action.resolve))

    def _unmark(self, action: Action) -> None:
        """Undo ``_mark`` for an action that failed everywhere: the next pass may try again
        (breaker permitting)."""
        if not action.paced:
            return
        ckey = action.cooldown_key
        if self.cooldowns.pop(ckey, None) is not None:
            self._dirty[f"cooldown:{ckey}"] = None
        if self.dedupe.pop(action.key, None) is not None:
            self._dirty[f"dedupe:{action.key}"] = None

    def _paced(self, action: Action, name: str) -> tuple[str, str]:
        """The key of ``not_before`` that holds calls of ``action`` on ``name``."""
        return (name, action.target if self._per_target.get(name) else "")

    def _held(self, action: Action, name: str, now: float) -> Outcome | None:
        """Why ``name`` is not called for ``action`` now, before any call is made: its
        breaker is open, its server asked to wait (``Retry-After``), or an earlier restart
        or rollback of the target that timed out still runs there."""
        if self.breakers[name].is_open(now):
            return Outcome(action, "breaker-open", f"executor {name!r} breaker open", now, name)
        paced = self._paced(action, name)
        wait = self.not_before.get(paced, 0.0) - now
        if wait > 0:
            whom = f" for {action.target}" if paced[1] else ""
            why = f"{name} asked to wait {wait:.0f}s more{whom} (Retry-After); not called"
            return Outcome(action, "skipped-retry-after", why, now, name)
        running = self.abandoned.get((name, action.target))
        if running and isinstance(action, _ONCE):
            why = (
                f"an earlier call for {action.target} on {name} timed out and is "
                f"still running; not starting another {action.kind}"
            )
            return Outcome(action, "skipped-running", why, now, name)
        return None

    async def _call(self, action: Action, name: str, now: float) -> Outcome:
        breaker = self.breakers[name]
        if not breaker.allow(now):  # its half-open trials taken by another action
            return Outcome(action, "breaker-open", f"executor {name!r} breaker open", now, name)
        call = id(asyncio.current_task())
        self.in_flight[call] = (action, name)
        try:
            return await self._attempts(action, name, now, breaker)
        finally:
            self.in_flight.pop(call, None)

    async def _attempts(
        self, action: Action, name: str, now: float, breaker: CircuitBreaker
    ) -> Outcome:
        executor = self.executors[name]
        delay = self.settings.retry_backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                detail = await self._execute(executor, action, name)
            except (ExecutorError, TimeoutError, OSError) as exc:
                temporary = not isinstance(exc, ExecutorError) or exc.temporary
                msg = str(exc) or type(exc).__name__
                told = exc.delay if isinstance(exc, ExecutorError) else 0.0
                retried = isinstance(exc, ExecutorError) and exc.retried
                uncertain = isinstance(action, _ONCE) and (
                    isinstance(exc, _Abandoned)
                    or (isinstance(exc, ExecutorError) and exc.uncertain)
                )
                if uncertain:
                    retried = True  # it may still happen: a retry could do it twice
                    if isinstance(exc, _Abandoned):  # (an executor's own error says so)
                        msg += f"; not retried, the {action.kind} may still be carried out"
                if isinstance(exc, TimeoutError) and (
                    getattr(executor, "retries_in_call", False) or isinstance(action, Notify)
                ):
                    # the executor (a notifier, the webhook whatever the action) retried
                    # within the call until the timeout cut it: a retry here would post up
                    # to its retries + 1 times again, each holding the pass for another
                    # executor_timeout; and a notice cut short may have arrived
                    retried = True
                if temporary and not told and not retried and attempt <= self.settings.retries:
                    await self._sleep(delay * (0.5 + self._rng.random()))
                    delay *= 2
                    continue
                if told > 0:  # the server said when: no call to it before then
                    self.not_before[self._paced(action, name)] = now + min(told, MAX_RETRY_AFTER)
                if temporary:
                    breaker.record_failure(now)
                else:  # the executor answered: it is up, the action was wrong for it
                    breaker.record_success(now)
                log.warning(
                    "action failed",
                    extra={
                        "action": action.key,
                        "executor": name,
                        "error": msg,
                        "attempts": attempt,
                    },
                )
                kind = "temporary" if temporary else "permanent"
                return Outcome(action, "failed", f"{kind}: {msg}", now, name, uncertain)
            except Exception as exc:  # an executor bug must not kill the pass
                breaker.record_failure(now)
                log.exception("executor %s raised", name)
                return Outcome(action, "failed", f"executor error: {exc!r}", now, name)
            breaker.record_success(now)
            return Outcome(action, "done", detail, now, name)

    async def _execute(self, executor: Executor, action: Action, name: str) -> str:
        """``executor.execute(action)`` under the timeout. On timeout a ``cancellable``
        executor's call is cancelled; any other is left to run (cancelling it would not stop
        a worker thread, only hide it) and remembered in ``abandoned`` until it ends."""
        timeout = self.settings.executor_timeout
        if getattr(executor, "cancellable", False):
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    return await executor.execute(action)
            except TimeoutError:
                if not deadline.expired():  # the executor's own timeout, not ours
                    raise
                raise TimeoutError(f"timed out after {timeout:g} s") from None
        call = asyncio.ensure_future(executor.execute(action))
        try:
            return await asyncio.wait_for(asyncio.shield(call), timeout)
        except TimeoutError:
            if call.done():  # the executor's own timeout, not ours
                raise
            self._abandon((name, action.target), call, action)
            raise _Abandoned(f"timed out after {timeout:g} s") from None
        except asyncio.CancelledError:
            call.cancel()  # the pass itself is cancelled (shutdown)
            raise

    def _abandon(self, key: tuple[str, str], call: asyncio.Future[str], action: Action) -> None:
        calls = self.abandoned.setdefault(key, {})
        calls[call] = action

        def ended(done: asyncio.Future[str]) -> None:
            calls.pop(done, None)
            if not calls and self.abandoned.get(key) is calls:
                del self.abandoned[key]
            extra = {"action": action.key, "executor": key[0]}
            if done.cancelled():
                log.warning("abandoned call cancelled", extra=extra)
            elif (exc := done.exception()) is not None:
                log.warning("abandoned call failed", extra={**extra, "error": str(exc)})
            else:
                log.warning("abandoned call done", extra={**extra, "detail": done.result()})

        call.add_done_callback(ended)

    async def wait_abandoned(self, grace: float) -> list[tuple[Action, str]]:
        """At shutdown: wait up to ``grace`` seconds for the calls that timed out and still run;
        those still running then are returned as (action, executor), to be journalled as
        interrupted before their executors are closed."""
        calls = [call for running in self.abandoned.values() for call in running]
        if calls and grace > 0:
            await asyncio.wait(calls, timeout=grace)
        return [
            (action, name)
            for (name, _), running in list(self.abandoned.items())
            for call, action in list(running.items())
            if not call.done()
        ]


class _Abandoned(TimeoutError):
    """The bus stopped waiting for a call that still runs."""
