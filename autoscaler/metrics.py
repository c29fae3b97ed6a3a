"""The service's own Prometheus metrics, on a registry passed in (never the global one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge)

BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


@dataclass(frozen=True, slots=True)
class Metrics:
    """Every metric the service exports."""

    registry: CollectorRegistry
    ticks: Counter
    tick_duration: Histogram
    last_tick: Gauge
    decisions: Counter
    actions: Counter
    source_errors: Counter
    source_up: Gauge
    executor_breaker: Gauge
    dropped_samples: Counter
    paused: Gauge
    errors: Counter
    _children: dict[tuple[Any, tuple[str, ...]], Any] = field(
        default_factory=dict, repr=False, compare=False
    )

    def child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, looked up once: ``labels()`` checks its arguments and
        takes a lock on every call, and a pass asks for the same few children each time."""
        key = (metric, labels)
        found: M | None = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


def make_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    """Create the service metrics on ``registry`` (a fresh one by default)."""
    reg = registry if registry is not None else CollectorRegistry()
    return Metrics(
        registry=reg,
        ticks=Counter("autoscaler_ticks", "Passes of the loop", ["result"], registry=reg),
        tick_duration=Histogram(
            "autoscaler_tick_duration_seconds",
            "Wall time of one pass",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=reg,
        ),
        last_tick=Gauge(
            "autoscaler_last_tick_timestamp_seconds", "Time of the last pass", registry=reg
        ),
        decisions=Counter(
            "autoscaler_decisions",
            "Decisions by policy and kind (hold included)",
            ["policy", "kind"],
            registry=reg,
        ),
        actions=Counter(
            "autoscaler_actions",
            "Actions by kind and outcome status",
            ["kind", "status"],
            registry=reg,
        ),
        source_errors=Counter(
            "autoscaler_source_errors", "Failed source collections", ["source"], registry=reg
        ),
        source_up=Gauge(
            "autoscaler_source_up",
            "1 when the source answered the last pass",
            ["source"],
            registry=reg,
        ),
        executor_breaker=Gauge(
            "autoscaler_executor_breaker_state",
            "Executor circuit breaker: 0 closed, 1 half-open, 2 open",
            ["executor"],
            registry=reg,
        ),
        dropped_samples=Counter(
            "autoscaler_dropped_samples",
            "Samples the store could not use: reason non_finite (a NaN or Inf value: the"
            " observation is unusable until the next sample) or out_of_order",
            ["reason"],
            registry=reg,
        ),
        paused=Gauge("autoscaler_paused", "1 while action execution is paused", registry=reg),
        errors=Counter(
            "autoscaler_component_errors",
            "Errors of forecasters, policies and state targets, by component",
            ["component"],
            registry=reg,
        ),
    )
