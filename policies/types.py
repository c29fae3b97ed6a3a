"""Core values that policies consume and produce.

Timestamps are float epoch seconds. All values are frozen; a ``Decision`` carries the
action (or ``None`` for "hold"), the inputs it used and a one-sentence reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from forecasting.errors import AutoscalerError


class PolicyError(AutoscalerError):
    """A policy spec is invalid or a policy could not be evaluated."""


@dataclass(frozen=True, slots=True)
class Signal:
    """A named metric of a target (``target="api"``, ``name="p95_latency"``)."""

    target: str
    name: str


@dataclass(frozen=True, slots=True)
class Observation:
    """The latest value of a signal, the time it was sampled, and whether it is stale.

    A stale or missing observation has ``value`` NaN or a sample older than the signal's
    max age; policies must hold rather than act on it.
    """

    value: float
    at: float
    stale: bool = False

    @property
    def usable(self) -> bool:
        """True when the value is fresh and finite."""
        return not self.stale and math.isfinite(self.value)


@dataclass(frozen=True, slots=True)
class TargetState:
    """What the orchestrator reports about a target right now."""

    target: str
    desired_replicas: int
    running_replicas: int
    image: str = ""
    previous_image: str = ""
    updated_at: float = 0.0
    """When the last deploy (update or rollback) started, epoch seconds; 0 if never."""
    update_state: str = ""
    """``updating``/``paused``/``completed``/``rollback_*`` (Docker) or ``running`` (Fly)."""
    deploy_id: str = ""
    """Identifies the last deploy, so a rollback happens at most once per deploy."""

    @property
    def deploying(self) -> bool:
        """True while an update or rollback is in progress or paused: scaling should wait
        (a swarm write other than a rollback un-pauses a failed update)."""
        return self.update_state in {
            "updating",
            "rollback_started",
            "running",
            "paused",
            "rollback_paused",
        }


@dataclass(frozen=True, slots=True)
class Event:
    """A pushed event (an Alertmanager alert, a probe transition) that policies can match."""

    name: str
    status: Literal["firing", "resolved"]
    target: str
    at: float
    labels: Mapping[str, str] = field(default_factory=dict)
    fingerprint: str = ""


# --- actions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """Something to do to the world. Subclasses set ``kind``."""

    kind: ClassVar[str] = "action"
    paced: ClassVar[bool] = True
    """Subject to the bus's cooldowns and dedupe window. A state sync (``TripBreaker``) is
    not: its rule sends one whenever the published state differs from its own, and a
    cooldown would hold the published state wrong."""
    target: str

    @property
    def cooldown_kind(self) -> str:
        """The action kind used for cooldown bookkeeping (per target and kind)."""
        return self.kind

    @property
    def cooldown_key(self) -> str:
        """What a cooldown holds: the target and the cooldown kind."""
        return f"{self.target}:{self.cooldown_kind}"

    @property
    def key(self) -> str:
        """Idempotency key: the same intent twice has the same key."""
        params = ",".join(f"{k}={v}" for k, v in sorted(self.params().items()))
        return f"{self.kind}:{self.target}:{params}"

    def params(self) -> dict[str, Any]:
        """The action's parameters, JSON-serialisable, without the target."""
        return {}


@dataclass(frozen=True, slots=True)
class Scale(Action):
    """Set the desired replicas of ``target`` (``current`` is what it was when decided)."""

    kind: ClassVar[str] = "scale"
    replicas: int
    current: int

    @property
    def cooldown_kind(self) -> str:
        return "scale_up" if self.replicas > self.current else "scale_down"

    def params(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "from": self.current}


@dataclass(frozen=True, slots=True)
class Restart(Action):
    """Rolling restart of ``target``: ``attempt`` counts the restarts of one failure (for
    backoff bookkeeping; 1 again after a recovery), ``seq`` all the rule's restarts of the
    target, so a new failure soon after a recovery is not taken for a duplicate of the
    previous failure's first restart (the same idempotency key within the dedupe window)."""

    kind: ClassVar[str] = "restart"
    attempt: int = 1
    seq: int = 0

    def params(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class Rollback(Action):
    """Roll ``target`` back to its previous spec; at most once per ``deploy_id``."""

    kind: ClassVar[str] = "rollback"
    deploy_id: str = ""

    def params(self) -> dict[str, Any]:
        return {"deploy_id": self.deploy_id}


@dataclass(frozen=True, slots=True)
class TripBreaker(Action):
    """Move the named circuit breaker (``target`` is its name) to ``state``."""

    kind: ClassVar[str] = "trip_breaker"
    paced: ClassVar[bool] = False
    state: Literal["closed", "open", "half_open"] = "open"

    def params(self) -> dict[str, Any]:
        return {"state": self.state}


@dataclass(frozen=True, slots=True)
class Notify(Action):
    """Tell humans: ``severity`` P0 (worst) to P3, a one-line summary, a stable dedup key."""

    kind: ClassVar[str] = "notify"
    severity: Literal["P0", "P1", "P2", "P3"] = "P2"
    summary: str = ""
    dedup_key: str = ""
    resolve: bool = False

    @property
    def key(self) -> str:
        return f"notify:{self.target}:{self.dedup_key or self.summary}:{self.resolve}"

    @property
    def cooldown_key(self) -> str:
        """A cooldown holds one notice, trigger or resolve: a notice about something else,
        or the resolve of a trigger just sent, is not held back by it."""
        return f"{self.target}:notify:{self.dedup_key or self.summary}:{self.resolve}"

    def params(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "summary": self.summary,
            "dedup_key": self.dedup_key,
            "resolve": self.resolve,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy decided for a target at ``at``, and why.

    ``action`` is ``None`` for a hold. ``inputs`` holds the values, forecasts and thresholds
    the policy used (JSON-serialisable); ``reason`` is one human sentence.

    ``recommendation`` is the replica count a scaling policy votes for, holds included: a
    rule that sees its signal in band, or cannot see it at all, votes for the current count
    so that another rule cannot scale in past it (``combine_scale`` takes the largest
    vote). ``None`` means the decision has no opinion about replicas (remediation rules,
    an inactive schedule, a predictive rule that sees no coming peak).
    """

    policy: str
    target: str
    at: float
    action: Action | None
    reason: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    recommendation: int | None = None

    @property
    def is_hold(self) -> bool:
        return self.action is None
