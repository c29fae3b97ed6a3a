"""The policy protocol and the context a policy is evaluated in.

A policy is pure judgement: given the context (time, target state, observations,
forecasts, recent history, pushed events and its own small memory) it returns decisions.
It never performs I/O, reads the clock or sleeps. ``memory`` is a JSON-serialisable dict
the engine persists per (policy, target), so `for` durations and stabilisation windows
survive a restart.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from forecasting.types import Forecast
from policies.types import Action, Decision, Event, Observation, TargetState


class History(Protocol):
    """Read access to recent samples of a target's signals, on the tick grid."""

    interval: float
    """Seconds between two ticks of the grid."""

    def window(
        self, target: str, signal: str, seconds: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Times and values (NaN where missing) of the last ``seconds``, oldest first."""
        ...


@dataclass(frozen=True, slots=True)
class Bounds:
    """Replica bounds and lead time of a target."""

    min_replicas: int = 1
    max_replicas: int = 10
    lead_time: float = 60.0
    """Seconds a new replica needs to become ready: predictive rules look this far ahead."""

    def clamp(self, replicas: int) -> int:
        """``replicas`` within the bounds."""
        # min(max(replicas, low), high), in comparisons: a few times per rule and pass,
        # where the two builtin calls cost three times as much
        low, high = self.min_replicas, self.max_replicas
        replicas = low if replicas < low else replicas
        return high if replicas > high else replicas


@dataclass(slots=True)
class Context:
    """Everything a policy may look at for one target in one pass."""

    now: float
    target: str
    bounds: Bounds
    state: TargetState | None
    observations: Mapping[str, Observation]
    forecasts: Mapping[str, Forecast]
    history: History
    events: Sequence[Event] = ()
    memory: MutableMapping[str, Any] = field(default_factory=dict)
    breakers: Mapping[str, str] = field(default_factory=dict)
    """Last published state of each named circuit breaker (``closed``/``open``/
    ``half_open``), for rules that depend on them (degradation level)."""

    def current_replicas(self) -> int | None:
        """Desired replicas the orchestrator reports, if it reports any."""
        return None if self.state is None else self.state.desired_replicas


class Policy(Protocol):
    """A named rule that turns a context into decisions for one target."""

    name: str
    targets: Sequence[str]
    """Targets this policy applies to; empty means every target."""

    def evaluate(self, ctx: Context) -> Sequence[Decision]:
        """Decisions for ``ctx.target`` (a hold is a decision with ``action=None``)."""
        ...


@runtime_checkable
class Retrying(Protocol):
    """A policy whose memory records an action as taken when it decides it (a rollback is
    once per deploy) and must forget that when the action was not carried out: skipped by
    the bus (cooldown, pause, rate limit, breaker) or failed; not when no executor is
    configured for it (a notice without notifiers), which no later pass would change. The
    engine calls this after the bus, with the memory of the decision's (policy, target).
    ``failed`` tells the two apart: an executor's call for it failed (after the bus's
    retries), rather than the bus holding it back; a restart that failed was an attempt."""

    def not_carried_out(
        self, memory: MutableMapping[str, Any], action: Action, *, failed: bool
    ) -> None: ...
