"""The platform runbook's rules as Python specs (the reference config must match them)."""

from __future__ import annotations

from policies.circuit import CircuitPolicy, CircuitSpec
from policies.restart import RestartPolicy, RestartSpec
from policies.rollback import Breach, RollbackPolicy, RollbackSpec
from policies.step import StepPolicy, StepSpec

QUEUE = StepSpec(
    signal="queue_length",
    above=5,
    below=1,
    for_=0,
    scale_down_for=600,
    scale_up_step=2,
    scale_down_step=1,
    targets=("api",),
)
BACKLOG = StepSpec(
    signal="backlog",
    above=100,
    below=10,
    for_=0,
    scale_down_for=600,
    scale_up_step=2,
    scale_down_step=1,
    targets=("api",),
)
LATENCY = StepSpec(
    signal="p95_latency_ms",
    above=150,
    below=100,
    for_=120,
    scale_down_for=600,
    scale_up_step=2,
    scale_down_step=1,
    targets=("api",),
)
RESTART = RestartSpec(
    signal="probe_failures",
    failures=3,
    backoff=(2, 4, 8, 16),
    max_attempts=3,
    window=600,
    severity="P1",
    targets=("api",),
)
ROLLBACK = RollbackSpec(
    breaches=(Breach("error_rate", 0.05, 120), Breach("p95_latency_ms", 500, 180)),
    window=1800,
    severity="P1",
    targets=("api",),
)
VECTOR_STORE = CircuitSpec(
    breaker="vector_store",
    signal="vector_store_up",
    fail_below=0.5,
    failure_threshold=5,
    reset_timeout=30,
    half_open_trials=3,
    targets=("api",),
)


def queue() -> StepPolicy:
    return StepPolicy("queue", QUEUE)


def backlog() -> StepPolicy:
    return StepPolicy("backlog", BACKLOG)


def latency() -> StepPolicy:
    return StepPolicy("latency", LATENCY)


def restart() -> RestartPolicy:
    return RestartPolicy("restart", RESTART)


def rollback() -> RollbackPolicy:
    return RollbackPolicy("rollback", ROLLBACK)


def vector_store() -> CircuitPolicy:
    return CircuitPolicy("vector_store_breaker", VECTOR_STORE)
