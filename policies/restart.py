"""Restart rule: restart a target whose probe keeps failing or whose alert fires.

Triggers: the probe signal (consecutive failed probes, e.g. ``probe_failures``) reaching
``failures``, or a firing alert ``Event`` named in ``alerts`` for the target (it stays
triggered until the alert resolves). Pacing, all kept in ``ctx.memory``:

- exponential backoff between consecutive attempts (``backoff``, default 2, 4, 8, 16 s;
  the last value repeats), reset once the target is healthy again;
- at most ``max_attempts`` restarts within a sliding ``window``; a trigger after the last
  attempt's backoff, still within that window, escalates once with a ``Notify``
  (``severity``, default P1) and restarts stop until the oldest attempt leaves the window;
  an escalation the bus did not send (a pause, a failed notifier) is sent on the next pass.

An attempt is a restart an executor was asked to carry out: one that failed counts (the
target was not helped), one the bus skipped does not (an operator's pause, the rate limit,
an open executor breaker, a cooldown): no restart ran, and the next pass asks for it again,
so a pause does not end in a "3 restarts did not help" page. A dry-run restart counts as
carried out, so a dry-run journal shows the escalation a live run would send.

Times in the memory from the future (the clock went back) are dropped. A stale or missing
probe is not a failure: the rule holds. So does a triggered rule while a
deploy is in progress or paused (``TargetState.deploying``): our own rolling restart shows
as one, and gets the time it takes before the rule judges it; a new deploy replaces the
tasks anyway; a paused one is for the rollback rule.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.base import Context
from policies.decisions import hold
from policies.evidence import read
from policies.markers import InvalidField, Seconds
from policies.types import Action, Decision, Notify, Restart


@dataclass(frozen=True, slots=True)
class RestartSpec:
    """Config of a ``restart`` policy."""

    signal: str = "probe_failures"
    """Signal counting consecutive failed probes ("" to trigger on alerts only)."""
    failures: int = 3
    """Restart when the signal reaches this many consecutive failures."""
    alerts: tuple[str, ...] = ()
    """Alert names whose firing events for the target trigger a restart."""
    backoff: tuple[Seconds, ...] = (2.0, 4.0, 8.0, 16.0)
    """Seconds to wait after attempt 1, 2, 3, ... (the last value repeats)."""
    max_attempts: int = 3
    """Most restarts within ``window``; beyond that, escalate and stop."""
    window: Seconds = 600.0
    """Sliding window, seconds, in which ``max_attempts`` is counted."""
    severity: Literal["P0", "P1", "P2", "P3"] = "P1"
    """Severity of the escalation ``Notify``."""
    targets: tuple[str, ...] = ()
    """Targets the rule applies to (empty: every target)."""

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise InvalidField("failures", "must be at least 1")
        if self.max_attempts < 1:
            raise InvalidField("max_attempts", "must be at least 1")
        if not self.backoff or min(self.backoff) < 0:
            raise InvalidField("backoff", "needs at least one non-negative delay")
        if not self.signal and not self.alerts:
            raise ValueError("set a signal, alerts, or both")

    def escalation_span(self, cooldown: float) -> float:
        """Shortest time from the first restart to the escalation: ``max_attempts``
        restarts, each at least its backoff (or the bus's restart ``cooldown``, which holds
        it back) after the one before, then the last one's backoff. The rule escalates only
        when this is inside ``window``."""

        def delay(attempt: int) -> float:
            return self.backoff[min(attempt, len(self.backoff)) - 1]

        gaps = sum(max(delay(i), cooldown) for i in range(1, self.max_attempts))
        return gaps + delay(self.max_attempts)


@dataclass(slots=True)
class RestartPolicy:
    """Restart with backoff, then escalate."""

    name: str
    spec: RestartSpec
    targets: Sequence[str] = field(default=())

    def _firing(self, ctx: Context) -> list[str]:
        """Alerts of the rule firing for the target; events update the remembered set.

        A resolve can be lost (the service stopped before the pass that would have read
        it, a full event queue) and Alertmanager does not send it again: when the
        Alertmanager source reports no alert firing for the target (``alerts_firing``
        fresh and 0), what is remembered is forgotten."""
        firing: dict[str, str] = dict(ctx.memory.get("firing", {}))
        count = ctx.observations.get("alerts_firing")
        if firing and count is not None and not count.stale and count.value == 0:
            firing = {}
        for ev in ctx.events:
            if ev.name not in self.spec.alerts or ev.target != ctx.target:
                continue
            key = ev.fingerprint or ev.name
            if ev.status == "firing":
                firing[key] = ev.name
            else:
                firing.pop(key, None)
        ctx.memory["firing"] = firing
        return sorted(set(firing.values()))

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        spec, mem = self.spec, ctx.memory
        inputs: dict[str, Any] = {"signal": spec.signal, "failures": spec.failures}
        triggers = [f"alert {a} is firing" for a in self._firing(ctx)]
        problem = ""
        if spec.signal:
            reading = read(ctx, spec.signal)
            if reading.ok:
                inputs["value"] = reading.value
                if reading.value >= spec.failures:
                    triggers.append(f"{spec.signal} {reading.value:g} >= {spec.failures}")
            else:
                problem = reading.problem
        inputs["triggers"] = triggers
        if not triggers:
            if problem:
                return [hold(self.name, ctx, f"stale: {problem}, not restarting", inputs)]
            mem["streak"] = 0
            return [hold(self.name, ctx, f"{ctx.target} is healthy", inputs)]
        why = " and ".join(triggers)
        if ctx.state is not None and ctx.state.deploying:
            # A rollout replaces the tasks anyway, and the executors refuse a restart during
            # one (a failure that would count as an attempt); a paused one is the rollback
            # rule's: a restart would resume the failed rollout.
            inputs["update_state"] = ctx.state.update_state
            reason = f"{why} but a deploy is in progress ({ctx.state.update_state}), not restarting"
            return [hold(self.name, ctx, reason, inputs)]
        window = spec.window
        attempts = [float(t) for t in mem.get("attempts", []) if 0 <= ctx.now - float(t) < window]
        mem["attempts"] = attempts
        _forget_future(mem, ctx.now, spec)
        inputs["attempts_in_window"] = len(attempts)
        # Backoff first: the last attempt gets its full delay to take effect before the
        # rule judges that it did not help and escalates.
        next_at = float(mem.get("next_at", 0.0))
        if ctx.now < next_at:
            inputs["next_at"] = next_at
            reason = f"{why} but backing off for {next_at - ctx.now:g} s before the next restart"
            return [hold(self.name, ctx, reason, inputs)]
        if len(attempts) >= spec.max_attempts:
            until = attempts[0] + window
            inputs["paused_until"] = until
            if float(mem.get("escalated_until", 0.0)) < until:
                mem["escalated_until"] = until
                summary = (
                    f"{ctx.target}: {len(attempts)} restarts within {window:g} s did not help "
                    f"({why}); restarts paused for {until - ctx.now:.0f} s"
                )
                action = Notify(
                    target=ctx.target,
                    severity=spec.severity,
                    summary=summary,
                    dedup_key=_escalation_key(ctx.target),
                )
                reason = (
                    f"{why} after {len(attempts)} restarts within {window:g} s: escalating "
                    f"({spec.severity}) and pausing restarts for {until - ctx.now:.0f} s"
                )
                return [Decision(self.name, ctx.target, ctx.now, action, reason, inputs)]
            reason = (
                f"{why} but {len(attempts)} restarts within {window:g} s were escalated, "
                f"restarts paused for {until - ctx.now:.0f} s"
            )
            return [hold(self.name, ctx, reason, inputs)]
        streak = int(mem.get("streak", 0)) + 1
        delay = spec.backoff[min(streak, len(spec.backoff)) - 1]
        mem["streak"] = streak
        mem["next_at"] = ctx.now + delay
        mem["attempts"] = [*attempts, ctx.now]
        seq = mem["seq"] = int(mem.get("seq", 0)) + 1
        inputs.update(attempt=streak, backoff=delay)
        reason = f"{why}: restart attempt {streak}, next one no sooner than {delay:g} s later"
        restart = Restart(target=ctx.target, attempt=streak, seq=seq)
        return [Decision(self.name, ctx.target, ctx.now, restart, reason, inputs)]

    def not_carried_out(
        self, memory: MutableMapping[str, Any], action: Action, *, failed: bool
    ) -> None:
        """A restart the bus skipped is no attempt: the decision's attempt, backoff and
        streak are undone, so the next pass asks for it again. One that failed stays an
        attempt. Its ``seq`` is kept: a new key, never taken for a duplicate of this one.
        An escalation not sent (skipped or failed) is sent again on the next pass."""
        if isinstance(action, Restart) and not failed and memory.get("seq") == action.seq:
            memory["attempts"] = list(memory.get("attempts", []))[:-1]
            memory["streak"] = action.attempt - 1
            memory.pop("next_at", None)
        elif isinstance(action, Notify) and action.dedup_key == _escalation_key(action.target):
            memory.pop("escalated_until", None)


def _escalation_key(target: str) -> str:
    """Dedup key of the escalation notices of ``target``."""
    return f"restart-escalation:{target}"


def _forget_future(mem: MutableMapping[str, Any], now: float, spec: RestartSpec) -> None:
    """Drop times that lie further ahead than the rule ever sets them: the clock went back
    (an NTP step), and they would hold restarts back for as long as the step."""
    if float(mem.get("next_at", 0.0)) > now + max(spec.backoff):
        del mem["next_at"]
    if float(mem.get("escalated_until", 0.0)) > now + spec.window:
        del mem["escalated_until"]
