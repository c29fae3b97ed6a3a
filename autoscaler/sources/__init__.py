"""Metric sources. ``SOURCE_TYPES`` maps a config ``type`` to (spec, factory)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from autoscaler.sources import alertmanager, nvml, probe, prometheus
from autoscaler.sources.base import (
    EventSource,
    MemorySource,
    Sample,
    Source,
    StaticSource,
    StaticSpec,
)


@dataclass(frozen=True, slots=True)
class SourceType:
    """How to build one kind of source from its config table."""

    spec: type[Any]
    build: Callable[[str, Any], Source]
    signals: Callable[[Any], Collection[str]]
    """The signals a source with this spec produces (what config check compares policies'
    signals with)."""


def _fixed(*names: str) -> Callable[[Any], Collection[str]]:
    return lambda _spec: names


SOURCE_TYPES: dict[str, SourceType] = {
    "static": SourceType(
        StaticSpec,
        lambda name, spec: StaticSource(name, spec),
        lambda spec: {sig for values in spec.values.values() for sig in values},
    ),
    "prometheus": SourceType(
        prometheus.PrometheusSpec, prometheus.build, lambda spec: list(spec.queries)
    ),
    "probe": SourceType(
        probe.ProbeSpec, probe.build, _fixed("probe_up", "probe_failures", "probe_latency_ms")
    ),
    "alertmanager": SourceType(
        alertmanager.AlertmanagerSpec, alertmanager.build, _fixed("alerts_firing")
    ),
    "nvml": SourceType(
        nvml.NvmlSpec, nvml.build, _fixed("gpu_utilization", "gpu_memory_used_ratio")
    ),
}

__all__ = ["SOURCE_TYPES", "EventSource", "MemorySource", "Sample", "Source", "SourceType"]
