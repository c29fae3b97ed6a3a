"""Target tracking, as the Kubernetes HPA computes it.

For each metric, ``desired = ceil(current * value / target)`` (``kind = "average"``: the
value is a per-replica average such as CPU utilisation) or ``desired = ceil(value /
target)`` (``kind = "total"``: the value is a total such as requests per second, the target
is what one replica handles). A ratio within ``tolerance`` of 1 changes nothing. Several
metrics: the largest recommendation wins. Some metrics missing: scale up on the others if
they say so, otherwise hold (never scale in on partial data), as the HPA does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.base import Context
from policies.decisions import clamp, fresh, hold, preamble, scale, stale
from policies.evidence import read, value_of
from policies.markers import InvalidField
from policies.types import Decision


@dataclass(frozen=True, slots=True)
class MetricTarget:
    """One metric of a ``target_tracking`` policy and the value to hold it at."""

    signal: str = "cpu_utilization"
    """Signal name."""
    target: float = 0.7
    """Value to hold the signal at: per replica (``average``) or handled by one replica
    (``total``), in the unit of the signal."""
    kind: Literal["average", "total"] = "average"
    """``average``: the signal is a per-replica average; ``total``: summed over replicas."""
    per_target: dict[str, float] = field(default_factory=dict)
    """Overrides of ``target`` for named targets, e.g. ``{ gpu_worker = 0.85 }``."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target) and self.target > 0):
            raise InvalidField("target", "must be positive")
        for name, value in self.per_target.items():
            if not (math.isfinite(value) and value > 0):
                raise InvalidField(f"per_target.{name}", "must be positive")

    def target_for(self, target: str) -> float:
        """The target value for the named autoscaler target."""
        return self.per_target.get(target, self.target)


@dataclass(frozen=True, slots=True)
class TrackingSpec:
    """Config of a ``target_tracking`` policy."""

    metrics: tuple[MetricTarget, ...] = (MetricTarget(),)
    """Metrics to track (``[[policies.NAME.metrics]]``); the largest recommendation wins."""
    tolerance: float = 0.1
    """No change while ``|value / target - 1|`` is within this fraction."""
    fallback_replicas: int = 0
    """Replicas to raise to after ``fallback_after`` evaluations without data (0 = off)."""
    fallback_after: int = 3
    """Consecutive evaluations without usable data before the fallback applies."""
    targets: tuple[str, ...] = ()
    """Targets the rule applies to (empty: every target)."""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise InvalidField("metrics", "needs at least one metric")
        if not 0 <= self.tolerance < 1:
            raise InvalidField("tolerance", "must be in [0, 1)")
        if self.fallback_replicas < 0:
            raise InvalidField("fallback_replicas", "must be >= 0")
        if self.fallback_after < 1:
            raise InvalidField("fallback_after", "must be at least 1")


def desired_replicas(
    *, current: int, value: float, target: float, kind: str, tolerance: float
) -> tuple[int, float]:
    """The HPA recommendation for one metric and the usage ratio it is based on."""
    base = current if current >= 1 else 1  # max(current, 1); comparisons are cheaper here
    ratio = value / target if kind == "average" else value / (target * base)
    if abs(ratio - 1.0) <= tolerance:
        return base, ratio  # at zero replicas, a ratio of 1 is one replica's worth of load
    # The epsilon keeps 4 * 0.7 / 0.7 from rounding up to 5.
    want = math.ceil(base * ratio - 1e-9)
    return (want if want > 0 else 0), ratio


@dataclass(slots=True)
class TrackingPolicy:
    """HPA-style target tracking over one or more metrics."""

    name: str
    spec: TrackingSpec
    targets: Sequence[str] = field(default=())

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        spec = self.spec
        inputs: dict[str, Any] = {"tolerance": spec.tolerance}
        current, early = preamble(self.name, ctx, inputs)
        if early is not None or current is None:
            return [early] if early is not None else []
        recs: dict[str, int] = {}
        problems: list[str] = []
        metrics: dict[str, dict[str, Any]] = {}
        for m in spec.metrics:
            value = value_of(ctx, m.signal)
            goal = m.target_for(ctx.target)
            if value is None:
                problems.append(read(ctx, m.signal).problem)
                metrics[m.signal] = {"target": goal, "value": None}
                continue
            want, ratio = desired_replicas(
                current=current,
                value=value,
                target=goal,
                kind=m.kind,
                tolerance=spec.tolerance,
            )
            recs[m.signal] = want
            metrics[m.signal] = {
                "value": value,
                "target": goal,
                "ratio": round(ratio, 4),
                "recommendation": want,
            }
        inputs["metrics"] = metrics
        if len(recs) == 1:  # the usual single metric: max's key calls cost more than the rest
            [(best_signal, best)] = recs.items()
        else:
            best_signal = max(recs, key=recs.__getitem__) if recs else ""
            best = recs.get(best_signal, 0)
        if problems and best <= current:
            # Partial data may scale up on what is known, never in.
            return [
                stale(
                    self.name,
                    ctx,
                    "; ".join(problems),
                    inputs,
                    current=current,
                    fallback_replicas=spec.fallback_replicas,
                    fallback_after=spec.fallback_after,
                )
            ]
        fresh(ctx)
        want = clamp(best, ctx)
        top = metrics[best_signal]
        why = f"{best_signal} {top['value']:g} against target {top['target']:g}"
        if want == current:
            if best == current:
                reason = (
                    f"{why} is within the {spec.tolerance:g} tolerance, holding {current} replicas"
                )
            else:
                reason = f"{why} asks for {best} but the bounds hold {current} replicas"
            return [hold(self.name, ctx, reason, inputs, recommendation=current)]
        verb = "up" if want > current else "down"
        reason = f"{why} asks for {best} replicas: scale {verb} {current} -> {want}"
        if problems:
            reason += f" (ignoring {'; '.join(problems)})"
        return [scale(self.name, ctx, replicas=want, current=current, reason=reason, inputs=inputs)]
