"""Built-in policy types: config ``type`` → (spec dataclass, factory).

The config loader parses ``[policies.NAME]`` into the spec dataclass named by ``type``
(unknown keys and bad values are errors with their key path; a spec's ``__post_init__``
raises ``InvalidField`` for a value out of range, reported at its key's path, or
``ValueError`` for keys that contradict each other), then calls the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policies.base import Policy
from policies.circuit import CircuitPolicy, CircuitSpec
from policies.degradation import DegradationPolicy, DegradationSpec
from policies.predictive import PredictivePolicy, PredictiveSpec
from policies.restart import RestartPolicy, RestartSpec
from policies.rollback import RollbackPolicy, RollbackSpec
from policies.schedule import SchedulePolicy, ScheduleSpec
from policies.step import StepPolicy, StepSpec
from policies.tracking import TrackingPolicy, TrackingSpec


@dataclass(frozen=True, slots=True)
class PolicyType:
    """How to build one kind of policy from its config table."""

    spec: type[Any]
    build: Callable[[str, Any], Policy]
    scales: bool = False
    """True for rules whose decisions are scale votes (their decisions go to
    ``combine_scale``); remediation rules act directly."""
    forecasts: bool = False
    """True for rules that read the forecast of their spec's ``signal`` at each target's
    lead time (``lead_time``, else the target's ``startup_delay``): config checks that the
    signal is forecast and that the forecasting horizon reaches that far."""


def _factory(cls: Any) -> Callable[[str, Any], Policy]:
    def build(name: str, spec: Any) -> Policy:
        policy: Policy = cls(name=name, spec=spec, targets=spec.targets)
        return policy

    return build


POLICY_TYPES: dict[str, PolicyType] = {
    "step": PolicyType(StepSpec, _factory(StepPolicy), scales=True),
    "target_tracking": PolicyType(TrackingSpec, _factory(TrackingPolicy), scales=True),
    "predictive": PolicyType(
        PredictiveSpec, _factory(PredictivePolicy), scales=True, forecasts=True
    ),
    "schedule": PolicyType(ScheduleSpec, _factory(SchedulePolicy), scales=True),
    "restart": PolicyType(RestartSpec, _factory(RestartPolicy)),
    "rollback": PolicyType(RollbackSpec, _factory(RollbackPolicy)),
    "circuit_breaker": PolicyType(CircuitSpec, _factory(CircuitPolicy)),
    "degradation": PolicyType(DegradationSpec, _factory(DegradationPolicy)),
}
