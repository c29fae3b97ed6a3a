"""Remediation: what acts on the world (executors, breakers, notifiers).

Imports only ``policies`` and ``forecasting``.
"""

from __future__ import annotations

from remediation.base import Executor, ExecutorError, Outcome
from remediation.breaker import CircuitBreaker

__all__ = ["CircuitBreaker", "Executor", "ExecutorError", "Outcome"]
