"""Step / threshold rules with Prometheus-style ``for`` durations.

``scale_up_step`` replicas are added when ``signal`` has been above ``above`` continuously
for ``for_`` seconds; ``scale_down_step`` are removed when it has been below ``below`` for
``scale_down_for`` seconds. Missing or stale data never scales down and never scales up:
the rule holds and says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from policies.base import Context
from policies.markers import Seconds
from policies.types import Decision, Scale


@dataclass(frozen=True, slots=True)
class StepSpec:
    """Config of a ``step`` policy (``[policies.NAME] type = "step"``)."""

    signal: str = "queue_length"
    """Signal name the rule watches."""
    above: float = math.inf
    """Scale up when the signal is above this value (unit of the signal)."""
    below: float = -math.inf
    """Scale down when the signal is below this value."""
    for_: Seconds = 0.0
    """Seconds the ``above`` condition must hold continuously (0 = act at once)."""
    scale_down_for: Seconds = 600.0
    """Seconds the ``below`` condition must hold before a scale-down."""
    scale_up_step: int = 2
    """Replicas added per scale-up."""
    scale_down_step: int = 1
    """Replicas removed per scale-down."""
    targets: tuple[str, ...] = ()
    """Targets the rule applies to (empty: every target)."""


def _held_for(ctx: Context, signal: str, seconds: float, cond: str, threshold: float) -> bool:
    """True when every sample of the last ``seconds`` satisfies the condition and the
    window is fully covered (no gap): absence of evidence is not evidence."""
    if seconds <= 0:
        return True
    times, values = ctx.history.window(ctx.target, signal, seconds)
    if len(values) == 0 or np.isnan(values).any():
        return False
    if times[0] > ctx.now - seconds + 1e-6 + _grid_slack(times):
        return False
    return bool(np.all(values > threshold) if cond == ">" else np.all(values < threshold))


def _grid_slack(times: np.ndarray) -> float:
    return float(times[1] - times[0]) if len(times) > 1 else 0.0


@dataclass(slots=True)
class StepPolicy:
    """A threshold rule with step sizes and ``for`` durations."""

    name: str
    spec: StepSpec
    targets: Sequence[str] = field(default=())

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        spec = self.spec
        obs = ctx.observations.get(spec.signal)
        current = ctx.current_replicas()
        inputs = {"signal": spec.signal, "above": spec.above, "below": spec.below}
        if obs is None or not obs.usable:
            why = "missing" if obs is None else ("stale" if obs.stale else "not finite")
            return [self._hold(ctx, f"stale: {spec.signal} is {why}, holding", inputs)]
        inputs["value"] = obs.value
        if current is None:
            return [self._hold(ctx, "no replica count known for the target, holding", inputs)]
        inputs["replicas"] = current
        if obs.value > spec.above:
            if _held_for(ctx, spec.signal, spec.for_, ">", spec.above):
                want = min(current + spec.scale_up_step, ctx.bounds.max_replicas)
                if want > current:
                    reason = (
                        f"{spec.signal} {obs.value:g} > {spec.above:g}"
                        f"{_for_text(spec.for_)}: scale up {current} -> {want}"
                    )
                    return [self._scale(ctx, want, current, reason, inputs)]
                return [self._hold(ctx, f"{spec.signal} above threshold but at max", inputs)]
            return [self._hold(ctx, f"{spec.signal} above threshold, waiting for `for`", inputs)]
        if obs.value < spec.below:
            if _held_for(ctx, spec.signal, spec.scale_down_for, "<", spec.below):
                want = max(current - spec.scale_down_step, ctx.bounds.min_replicas)
                if want < current:
                    reason = (
                        f"{spec.signal} {obs.value:g} < {spec.below:g}"
                        f"{_for_text(spec.scale_down_for)}: scale down {current} -> {want}"
                    )
                    return [self._scale(ctx, want, current, reason, inputs)]
                return [self._hold(ctx, f"{spec.signal} below threshold but at min", inputs)]
            return [self._hold(ctx, f"{spec.signal} below threshold, waiting for `for`", inputs)]
        return [self._hold(ctx, f"{spec.signal} {obs.value:g} within thresholds", inputs)]

    def _hold(self, ctx: Context, reason: str, inputs: dict[str, object]) -> Decision:
        return Decision(self.name, ctx.target, ctx.now, None, reason, dict(inputs))

    def _scale(
        self, ctx: Context, want: int, current: int, reason: str, inputs: dict[str, object]
    ) -> Decision:
        action = Scale(target=ctx.target, replicas=want, current=current)
        return Decision(self.name, ctx.target, ctx.now, action, reason, dict(inputs))


def _for_text(seconds: float) -> str:
    return f" for {seconds:g}s" if seconds > 0 else ""
