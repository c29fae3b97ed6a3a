"""Policies: pure decision logic and the action vocabulary.

Imports only ``forecasting``.
"""

from __future__ import annotations

from policies.base import Bounds, Context, History, Policy
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
    "Restart",
    "Rollback",
    "Scale",
    "Signal",
    "TargetState",
    "TripBreaker",
]
