"""Metric sources. ``SOURCE_TYPES`` maps a config ``type`` to (spec, factory)."""

from __future__ import annotations

from collections.abc import Callable
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


SOURCE_TYPES: dict[str, SourceType] = {
    "static": SourceType(StaticSpec, lambda name, spec: StaticSource(name, spec)),
    "prometheus": SourceType(prometheus.PrometheusSpec, prometheus.build),
    "probe": SourceType(probe.ProbeSpec, probe.build),
    "alertmanager": SourceType(alertmanager.AlertmanagerSpec, alertmanager.build),
    "nvml": SourceType(nvml.NvmlSpec, nvml.build),
}

__all__ = ["SOURCE_TYPES", "EventSource", "MemorySource", "Sample", "Source", "SourceType"]
