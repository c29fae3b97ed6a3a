"""Circuit-breaker rule: open a named breaker around a failing dependency.

The rule watches a health signal of the dependency (a probe, an error ratio); each *new*
sample (a later ``Observation.at``) counts once, as a success or a failure:

    closed --(failure_threshold consecutive failures)--> open
    open --(reset_timeout elapsed)--> half_open
    half_open --(half_open_trials consecutive successes)--> closed;  a failure --> open

Each transition emits a ``TripBreaker`` action (its ``target`` is the breaker's name) so
the service can publish the state; other evaluations are holds, except while the published
state (``ctx.breakers``) differs from the rule's: then the rule sends its state again, so
a publish that failed or was skipped is repaired on the next pass. Stale or missing
samples count as neither. The state lives in ``ctx.memory``; a rule should watch one
target (``targets``), since every target it watches drives the same breaker. Times in it
from the future (the clock went back) are dropped, so a clock step does not hold the
breaker open, or ignore samples, for as long as the step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.base import Context
from policies.decisions import hold
from policies.evidence import num, read
from policies.markers import InvalidField, Seconds
from policies.types import Decision, TripBreaker

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class CircuitSpec:
    """Config of a ``circuit_breaker`` policy."""

    breaker: str = "vector_store"
    """Name of the breaker (used by the degradation level and in TripBreaker actions)."""
    signal: str = "vector_store_up"
    """Health signal of the dependency."""
    fail_below: float = 0.5
    """A sample below this is a failure (e.g. a probe ``up`` of 0; for an error ratio set
    it to 0, below every sample)."""
    fail_above: float = math.inf
    """A sample above this is a failure (e.g. an error ratio); must exceed ``fail_below``."""
    failure_threshold: int = 5
    """Consecutive failed samples that open the breaker."""
    reset_timeout: Seconds = 30.0
    """Seconds the breaker stays open before half-open trials."""
    half_open_trials: int = 3
    """Consecutive good samples in half-open that close it again."""
    targets: tuple[str, ...] = ()
    """Targets whose signals the rule reads (empty: every target)."""

    def __post_init__(self) -> None:
        if not self.breaker:
            raise InvalidField("breaker", "needs a name")
        if self.fail_above <= self.fail_below:
            raise InvalidField(
                "fail_above",
                f"{self.fail_above:g} is not above fail_below ({self.fail_below:g}), so every"
                " sample would be a failure; for an error-ratio signal set fail_below = 0",
            )
        if self.failure_threshold < 1:
            raise InvalidField("failure_threshold", "must be at least 1")
        if self.half_open_trials < 1:
            raise InvalidField("half_open_trials", "must be at least 1")
        if len(self.targets) > 1:
            raise InvalidField(
                "targets", "name one target: every target a rule watches drives the same breaker"
            )


@dataclass(slots=True)
class CircuitPolicy:
    """A breaker state machine driven by a health signal."""

    name: str
    spec: CircuitSpec
    targets: Sequence[str] = field(default=())

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        out = self._transition(ctx)
        state = ctx.memory.get("state", "closed")
        published = ctx.breakers.get(self.spec.breaker, "closed")
        if published == state or any(d.action is not None for d in out):
            return out
        reason = (
            f"breaker {self.spec.breaker} is {state} but {published} is published: "
            f"publish {state} again"
        )
        inputs = {**out[0].inputs, "published": published} if out else {}
        action = TripBreaker(target=self.spec.breaker, state=state)
        return [Decision(self.name, ctx.target, ctx.now, action, reason, inputs)]

    def _transition(self, ctx: Context) -> Sequence[Decision]:
        spec, mem = self.spec, ctx.memory
        state: BreakerState = mem.get("state", "closed")
        since = float(mem.get("since", ctx.now))
        if since > ctx.now:
            # the clock went back (an NTP step): the open timeout starts over instead of
            # lasting as long as the step
            since = ctx.now
            mem["since"] = since
        failures = int(mem.get("failures", 0))
        trials = int(mem.get("trials", 0))
        inputs: dict[str, Any] = {
            "breaker": spec.breaker,
            "signal": spec.signal,
            "state": state,
            "fail_below": num(spec.fail_below),
            "fail_above": num(spec.fail_above),
            "failure_threshold": spec.failure_threshold,
        }
        mem.setdefault("state", state)
        mem.setdefault("since", since)
        if state == "open":
            if ctx.now - since >= spec.reset_timeout:
                reason = (
                    f"breaker {spec.breaker} has been open for {ctx.now - since:.0f} s: "
                    f"half-open for {spec.half_open_trials} trial samples"
                )
                return [self._move(ctx, "half_open", reason, inputs)]
            left = spec.reset_timeout - (ctx.now - since)
            reason = f"breaker {spec.breaker} stays open for {left:.0f} s more"
            return [hold(self.name, ctx, reason, inputs)]
        reading = read(ctx, spec.signal)
        if not reading.ok:
            reason = f"stale: {reading.problem}, breaker {spec.breaker} stays {state}"
            return [hold(self.name, ctx, reason, inputs)]
        inputs["value"] = reading.value
        last_at = float(mem.get("last_at", -math.inf))
        if last_at > ctx.now and reading.at < last_at:
            last_at = -math.inf  # remembered from before the clock went back: forget it
        if reading.at <= last_at:
            return [
                hold(
                    self.name,
                    ctx,
                    f"no new sample of {spec.signal}, breaker {spec.breaker} stays {state}",
                    inputs,
                )
            ]
        mem["last_at"] = reading.at
        failed = reading.value < spec.fail_below or reading.value > spec.fail_above
        sample = f"{spec.signal} {reading.value:g}"
        if state == "half_open":
            if failed:
                return [
                    self._move(
                        ctx,
                        "open",
                        f"{sample} failed a half-open trial: reopen breaker {spec.breaker}",
                        inputs,
                    )
                ]
            trials += 1
            mem["trials"] = trials
            if trials >= spec.half_open_trials:
                return [
                    self._move(
                        ctx,
                        "closed",
                        f"{sample} passed {trials} half-open trials: close breaker {spec.breaker}",
                        inputs,
                    )
                ]
            return [
                hold(
                    self.name,
                    ctx,
                    f"{sample} passed half-open trial {trials} of {spec.half_open_trials}",
                    inputs,
                )
            ]
        if not failed:
            mem["failures"] = 0
            return [
                hold(
                    self.name,
                    ctx,
                    f"{sample} is healthy, breaker {spec.breaker} stays closed",
                    inputs,
                )
            ]
        failures += 1
        mem["failures"] = failures
        inputs["failures"] = failures
        if failures >= spec.failure_threshold:
            return [
                self._move(
                    ctx,
                    "open",
                    f"{sample} makes {failures} failures in a row: open breaker {spec.breaker}",
                    inputs,
                )
            ]
        return [
            hold(
                self.name,
                ctx,
                f"{sample} is failure {failures} of "
                f"{spec.failure_threshold}, breaker {spec.breaker} stays closed",
                inputs,
            )
        ]

    def _move(
        self, ctx: Context, to: BreakerState, reason: str, inputs: dict[str, Any]
    ) -> Decision:
        ctx.memory.update(state=to, since=ctx.now, failures=0, trials=0)
        action = TripBreaker(target=self.spec.breaker, state=to)
        return Decision(self.name, ctx.target, ctx.now, action, reason, {**inputs, "to": to})
