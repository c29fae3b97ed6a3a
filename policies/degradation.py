"""The platform's degradation level, from the states of its circuit breakers.

    1 full service
    2 GPU degraded: CPU inference only
    3 vector store degraded: cached embeddings
    4 emergency

Each breaker that is not closed (open or half-open: not yet trusted) raises the level to
the one ``mapping`` gives it; breakers not in the mapping do not count. With
``emergency_at`` set, that many degraded breakers at once mean level 4. The ``degradation``
policy watches ``ctx.breakers`` and notifies humans when the level changes. Its notices
share one dedup key per target (a resolve closes the incident the triggers opened), so the
bus's notify cooldown holds a second change soon after a first: a notice not carried out is
sent again on the next pass while the level it announces still differs from the last one
told.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.base import Context
from policies.decisions import hold
from policies.markers import InvalidField
from policies.types import Action, Decision, Notify

FULL, CPU_ONLY, CACHED_EMBEDDINGS, EMERGENCY = 1, 2, 3, 4
LEVEL_NAMES: Mapping[int, str] = {
    FULL: "full service",
    CPU_ONLY: "GPU degraded, CPU only",
    CACHED_EMBEDDINGS: "vector store degraded, cached embeddings",
    EMERGENCY: "emergency",
}
DEFAULT_MAPPING: Mapping[str, int] = {"gpu": CPU_ONLY, "vector_store": CACHED_EMBEDDINGS}
_SEVERITY: Mapping[int, Literal["P0", "P1", "P2", "P3"]] = {2: "P3", 3: "P2", 4: "P1"}


def degradation_level(
    states: Mapping[str, str], *, mapping: Mapping[str, int], emergency_at: int = 0
) -> int:
    """The level (1-4) given breaker states (``closed``/``open``/``half_open``)."""
    degraded = [name for name, st in states.items() if st != "closed" and name in mapping]
    level = max((mapping[name] for name in degraded), default=FULL)
    if emergency_at > 0 and len(degraded) >= emergency_at:
        level = EMERGENCY
    return min(max(level, FULL), EMERGENCY)


@dataclass(frozen=True, slots=True)
class DegradationSpec:
    """Config of a ``degradation`` policy."""

    levels: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAPPING))
    """Breaker name → level (2-4) while that breaker is not closed."""
    emergency_at: int = 2
    """This many degraded breakers at once mean level 4 (0: off)."""
    targets: tuple[str, ...] = ()
    """Targets the rule reports for (empty: every target)."""

    def __post_init__(self) -> None:
        for breaker, level in self.levels.items():
            if not FULL <= level <= EMERGENCY:
                raise InvalidField(f"levels.{breaker}", "must be between 1 and 4")
        if self.emergency_at < 0:
            raise InvalidField("emergency_at", "must be >= 0")


@dataclass(slots=True)
class DegradationPolicy:
    """Report the degradation level; notify when it changes."""

    name: str
    spec: DegradationSpec
    targets: Sequence[str] = field(default=())

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        spec = self.spec
        level = degradation_level(ctx.breakers, mapping=spec.levels, emergency_at=spec.emergency_at)
        before = int(ctx.memory.get("level", FULL))
        ctx.memory["level"] = level
        if level != before:
            ctx.memory["told"] = before  # the level humans know of, until this notice is sent
        degraded = sorted(n for n, s in ctx.breakers.items() if s != "closed" and n in spec.levels)
        inputs: dict[str, Any] = {
            "level": level,
            "previous": before,
            "degraded": degraded,
            "breakers": dict(ctx.breakers),
        }
        name = LEVEL_NAMES[level]
        if level == before:
            return [hold(self.name, ctx, f"degradation level {level} ({name}) unchanged", inputs)]
        cause = f" (breakers not closed: {', '.join(degraded)})" if degraded else ""
        reason = f"degradation level {before} -> {level}: {name}{cause}"
        notify = Notify(
            target=ctx.target,
            severity=_SEVERITY.get(level, "P3"),
            summary=reason,
            dedup_key=_dedup_key(ctx.target),
            resolve=level == FULL,
        )
        return [Decision(self.name, ctx.target, ctx.now, notify, reason, inputs)]

    def not_carried_out(
        self, memory: MutableMapping[str, Any], action: Action, *, failed: bool
    ) -> None:
        """A level change whose notice was not sent (the notify cooldown of the change
        before it, a pause, a failed notifier) is told again: the rule goes back to the
        level humans know of."""
        if isinstance(action, Notify) and action.dedup_key == _dedup_key(action.target):
            memory["level"] = int(memory.get("told", FULL))


def _dedup_key(target: str) -> str:
    """Dedup key of the degradation notices of ``target``."""
    return f"degradation:{target}"
