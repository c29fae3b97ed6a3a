"""Step / threshold rules with Prometheus-style ``for`` durations.

``scale_up_step`` replicas are added when ``signal`` has been above ``above`` continuously
for ``for_`` seconds; ``scale_down_step`` are removed when it has been below ``below`` for
``scale_down_for`` seconds. The gap between ``below`` and ``above`` is the hysteresis band:
a value hovering at either threshold cannot flap the target. Inside the band, and while
waiting out a ``for``, the rule votes for the current count. Missing or stale data never
scales down and never scales up: the rule holds and says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.base import Context
from policies.decisions import clamp, fresh, hold, preamble, scale, stale
from policies.evidence import held_for, num, read
from policies.markers import InvalidField, Seconds
from policies.types import Decision


@dataclass(frozen=True, slots=True)
class StepSpec:
    """Config of a ``step`` policy (``[policies.NAME] type = "step"``)."""

    signal: str = "queue_length"
    """Signal name the rule watches."""
    above: float = math.inf
    """Scale up when the signal is above this value (unit of the signal)."""
    below: float = -math.inf
    """Scale down when the signal is below this value (must not exceed ``above``)."""
    for_: Seconds = 0.0
    """Seconds the ``above`` condition must hold continuously (0 = act at once)."""
    scale_down_for: Seconds = 600.0
    """Seconds the ``below`` condition must hold before a scale-down."""
    scale_up_step: int = 2
    """Replicas added per scale-up."""
    scale_down_step: int = 1
    """Replicas removed per scale-down."""
    fallback_replicas: int = 0
    """Replicas to raise to after ``fallback_after`` evaluations without data (0 = off)."""
    fallback_after: int = 3
    """Consecutive evaluations without usable data before the fallback applies."""
    targets: tuple[str, ...] = ()
    """Targets the rule applies to (empty: every target)."""

    def __post_init__(self) -> None:
        if self.below > self.above:
            raise InvalidField("below", f"{self.below:g} must not exceed above ({self.above:g})")
        if self.scale_up_step < 1:
            raise InvalidField("scale_up_step", "must be at least 1")
        if self.scale_down_step < 1:
            raise InvalidField("scale_down_step", "must be at least 1")
        if self.fallback_replicas < 0:
            raise InvalidField("fallback_replicas", "must be >= 0")
        if self.fallback_after < 1:
            raise InvalidField("fallback_after", "must be at least 1")

    def held(self) -> list[tuple[str, str, float]]:
        """``(key, signal, seconds)`` of each condition that must hold for a while: the
        signal's window must cover it (``check`` says so), or it never can."""
        out = []
        if math.isfinite(self.above):
            out.append(("for", self.signal, self.for_))
        if math.isfinite(self.below):
            out.append(("scale_down_for", self.signal, self.scale_down_for))
        return out


@dataclass(slots=True)
class StepPolicy:
    """A threshold rule with step sizes and ``for`` durations."""

    name: str
    spec: StepSpec
    targets: Sequence[str] = field(default=())
    _inputs: dict[str, Any] = field(init=False, repr=False)
    """The inputs every decision shows that come from the spec alone."""
    _band: str = field(init=False, repr=False)
    """The hysteresis band as reasons show it."""

    def __post_init__(self) -> None:
        spec = self.spec
        self._inputs = {
            "signal": spec.signal,
            "above": num(spec.above),
            "below": num(spec.below),
            "for": spec.for_,
            "scale_down_for": spec.scale_down_for,
        }
        self._band = f"{spec.below:g}, {spec.above:g}"

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        spec = self.spec
        inputs = self._inputs.copy()
        current, early = preamble(self.name, ctx, inputs)
        if early is not None or current is None:
            return [early] if early is not None else []
        reading = read(ctx, spec.signal)
        if not reading.ok:
            return [
                stale(
                    self.name,
                    ctx,
                    reading.problem,
                    inputs,
                    current=current,
                    fallback_replicas=spec.fallback_replicas,
                    fallback_after=spec.fallback_after,
                )
            ]
        fresh(ctx)
        value = reading.value
        inputs["value"] = value
        sig = spec.signal
        if value > spec.above:
            if not held_for(ctx, sig, spec.for_, op=">", threshold=spec.above):
                reason = (
                    f"{sig} {value:g} > {spec.above:g} but not yet for {spec.for_:g} s, "
                    f"holding {current} replicas"
                )
                return [hold(self.name, ctx, reason, inputs, recommendation=current)]
            want = clamp(current + spec.scale_up_step, ctx)
            if want > current:
                reason = (
                    f"{sig} {value:g} > {spec.above:g}{_for_text(spec.for_)}: "
                    f"scale up {current} -> {want}"
                )
                return [
                    scale(
                        self.name, ctx, replicas=want, current=current, reason=reason, inputs=inputs
                    )
                ]
            top = ctx.bounds.max_replicas
            where = "already the maximum" if current <= top else f"above the maximum {top}"
            reason = f"{sig} {value:g} > {spec.above:g} but {current} is {where}"
            return [hold(self.name, ctx, reason, inputs, recommendation=current)]
        if value < spec.below:
            if not held_for(ctx, sig, spec.scale_down_for, op="<", threshold=spec.below):
                reason = (
                    f"{sig} {value:g} < {spec.below:g} but not yet for "
                    f"{spec.scale_down_for:g} s, holding {current} replicas"
                )
                return [hold(self.name, ctx, reason, inputs, recommendation=current)]
            want = clamp(current - spec.scale_down_step, ctx)
            if want < current:
                reason = (
                    f"{sig} {value:g} < {spec.below:g}{_for_text(spec.scale_down_for)}: "
                    f"scale down {current} -> {want}"
                )
                return [
                    scale(
                        self.name, ctx, replicas=want, current=current, reason=reason, inputs=inputs
                    )
                ]
            low = ctx.bounds.min_replicas
            where = "already the minimum" if current >= low else f"below the minimum {low}"
            reason = f"{sig} {value:g} < {spec.below:g} but {current} is {where}"
            return [hold(self.name, ctx, reason, inputs, recommendation=current)]
        reason = f"{sig} {value:g} is within [{self._band}], holding {current} replicas"
        return [hold(self.name, ctx, reason, inputs, recommendation=current)]


def _for_text(seconds: float) -> str:
    return f" for {seconds:g} s" if seconds > 0 else ""
