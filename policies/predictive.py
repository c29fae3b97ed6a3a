"""Predictive scaling: the step or tracking rules evaluated on the forecast at lead time.

New replicas take ``lead_time`` seconds (the target's startup delay unless set) to become
ready, so the rule looks at the forecast at ``now + lead_time`` and uses its **upper**
bound: capacity is raised before the load arrives. The current observation is a floor: the
rule also asks for what is needed now, and a forecast alone never scales in below that.

- ``mode = "step"``: scale up ``scale_up_step`` when the forecast upper bound (or the
  current value) is above ``above``; otherwise no opinion (reactive rules scale in).
- ``mode = "track"``: the HPA formula on ``max(upper at lead, current value)`` against
  ``target``; this may scale in, but never below what the current value needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.base import Context
from policies.decisions import clamp, fresh, hold, preamble, scale, stale
from policies.evidence import forecast_at, num, read, value_of
from policies.markers import InvalidField, Seconds
from policies.tracking import desired_replicas
from policies.types import Decision


@dataclass(frozen=True, slots=True)
class PredictiveSpec:
    """Config of a ``predictive`` policy."""

    signal: str = "queue_length"
    """Forecast signal (its ``[signals.*]`` table needs ``forecast = true``)."""
    mode: Literal["step", "track"] = "step"
    """``step``: threshold and step size; ``track``: HPA formula against ``target``."""
    above: float = math.inf
    """Step mode: scale up when the forecast upper bound at lead time exceeds this (unset:
    never)."""
    scale_up_step: int = 2
    """Step mode: replicas added per scale-up."""
    target: float = 0.0
    """Track mode: value to hold the signal at (per replica, or per replica's share)."""
    kind: Literal["average", "total"] = "total"
    """Track mode: ``average`` (per-replica) or ``total`` (summed over replicas) signal."""
    tolerance: float = 0.1
    """Track mode: no change while the usage ratio is within this fraction of 1."""
    lead_time: Seconds = 0.0
    """Seconds ahead to look (0: the target's ``startup_delay``)."""
    max_age: Seconds = 120.0
    """A forecast issued longer ago than this is stale."""
    fallback_replicas: int = 0
    """Replicas to raise to after ``fallback_after`` evaluations without data (0 = off)."""
    fallback_after: int = 3
    """Consecutive evaluations without usable data before the fallback applies."""
    targets: tuple[str, ...] = ()
    """Targets the rule applies to (empty: every target)."""

    def __post_init__(self) -> None:
        if self.mode == "track" and not (math.isfinite(self.target) and self.target > 0):
            raise InvalidField("target", "must be positive in track mode")
        if self.scale_up_step < 1:
            raise InvalidField("scale_up_step", "must be at least 1")
        if not 0 <= self.tolerance < 1:
            raise InvalidField("tolerance", "must be in [0, 1)")
        if self.lead_time < 0:
            raise InvalidField("lead_time", "must be >= 0 (0: the target's startup_delay)")
        if self.max_age <= 0:
            raise InvalidField("max_age", "must be > 0")
        if self.fallback_replicas < 0:
            raise InvalidField("fallback_replicas", "must be >= 0")
        if self.fallback_after < 1:
            raise InvalidField("fallback_after", "must be at least 1")


@dataclass(slots=True)
class PredictivePolicy:
    """Scale ahead of a forecast peak."""

    name: str
    spec: PredictiveSpec
    targets: Sequence[str] = field(default=())

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        spec = self.spec
        lead = spec.lead_time or ctx.bounds.lead_time
        inputs: dict[str, Any] = {"signal": spec.signal, "mode": spec.mode, "lead_time": lead}
        current, early = preamble(self.name, ctx, inputs)
        if early is not None or current is None:
            return [early] if early is not None else []
        value = value_of(ctx, spec.signal)
        fc = forecast_at(ctx, spec.signal, at=ctx.now + lead, max_age=spec.max_age)
        if value is None or fc.problem:
            problem = read(ctx, spec.signal).problem if value is None else fc.problem
            return [
                stale(
                    self.name,
                    ctx,
                    problem,
                    inputs,
                    current=current,
                    fallback_replicas=spec.fallback_replicas,
                    fallback_after=spec.fallback_after,
                )
            ]
        fresh(ctx)
        inputs["value"] = value
        inputs["forecast"] = {
            "mean": fc.mean,
            "lower": num(fc.lower),
            "upper": fc.upper,
            "at": fc.at,
            "model": fc.model,
        }
        if spec.mode == "step":
            return [self._step(ctx, current, value, fc.upper, lead, inputs)]
        return [self._track(ctx, current, value, fc.upper, lead, inputs)]

    def _step(
        self,
        ctx: Context,
        current: int,
        value: float,
        upper: float,
        lead: float,
        inputs: dict[str, Any],
    ) -> Decision:
        spec = self.spec
        inputs["above"] = spec.above
        sig = spec.signal
        if upper > spec.above or value > spec.above:
            want = clamp(current + spec.scale_up_step, ctx)
            seen = (
                f"forecast upper bound {upper:g} of {sig} in {lead:g} s"
                if upper > spec.above
                else f"{sig} {value:g} now"
            )
            if want > current:
                reason = f"{seen} > {spec.above:g}: scale up {current} -> {want} ahead of load"
                return scale(
                    self.name, ctx, replicas=want, current=current, reason=reason, inputs=inputs
                )
            reason = f"{seen} > {spec.above:g} but {current} is already the maximum"
            return hold(self.name, ctx, reason, inputs, recommendation=current)
        reason = (
            f"forecast upper bound {upper:g} of {sig} in {lead:g} s is within {spec.above:g}, "
            "no early capacity needed"
        )
        return hold(self.name, ctx, reason, inputs)

    def _track(
        self,
        ctx: Context,
        current: int,
        value: float,
        upper: float,
        lead: float,
        inputs: dict[str, Any],
    ) -> Decision:
        spec = self.spec
        inputs["target"] = spec.target
        target, kind, tolerance = spec.target, spec.kind, spec.tolerance
        need_now, _ = desired_replicas(
            current=current, value=value, target=target, kind=kind, tolerance=tolerance
        )
        need_ahead, _ = desired_replicas(
            current=current, value=upper, target=target, kind=kind, tolerance=tolerance
        )
        inputs["need_now"] = need_now
        inputs["need_ahead"] = need_ahead
        best = max(need_now, need_ahead)
        want = clamp(best, ctx)
        sig = spec.signal
        why = (
            f"{sig} {value:g} now and up to {upper:g} in {lead:g} s against target "
            f"{spec.target:g} need {best} replicas"
        )
        if want == current:
            return hold(self.name, ctx, f"{why}, holding {current}", inputs, recommendation=current)
        verb = "up" if want > current else "down"
        reason = f"{why}: scale {verb} {current} -> {want}"
        return scale(self.name, ctx, replicas=want, current=current, reason=reason, inputs=inputs)
