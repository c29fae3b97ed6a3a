"""Policies: pure decision logic and the action vocabulary.

Imports only ``forecasting``.
"""

from __future__ import annotations

from policies.base import Bounds, Context, History, Policy
from policies.degradation import degradation_level
from policies.registry import POLICY_TYPES, PolicyType
from policies.scaling import ScaleBehavior, combine_scale
from policies.types import (
    Action,
    Decision,
    Event,
    Notify,
    Observation,
    PolicyError,
    Restart,
    Rollback,
    Scale,
    Signal,
    TargetState,
    TripBreaker,
)

__all__ = [
    "POLICY_TYPES",
    "Action",
    "Bounds",
    "Context",
    "Decision",
    "Event",
    "History",
    "Notify",
    "Observation",
    "Policy",
    "PolicyError",
    "PolicyType",
    "Restart",
    "Rollback",
    "Scale",
    "ScaleBehavior",
    "Signal",
    "TargetState",
    "TripBreaker",
    "combine_scale",
    "degradation_level",
]
