"""The sources' own counters as Prometheus metrics.

Sources count what went wrong by reason (failed queries, refused webhooks, dropped
events). ``SourceStats(sources)`` is a ``prometheus_client`` collector over every source
that has ``metric_families()``; the composition root registers it on the service registry:
``registry.register(SourceStats(engine.sources))``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from prometheus_client.core import CounterMetricFamily, Metric


@runtime_checkable
class HasStats(Protocol):
    """A source that reports its own counters."""

    def metric_families(self) -> Iterable[Metric]: ...


def by_reason(name: str, doc: str, source: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    """A counter family ``name{source, reason}`` from a reason → count mapping."""
    fam = CounterMetricFamily(name, doc, labels=["source", "reason"])
    for reason, n in sorted(counts.items()):
        fam.add_metric([source, reason], float(n))
    return fam


class SourceStats:
    """Collector yielding every source's ``metric_families()``."""

    def __init__(self, sources: Iterable[object]) -> None:
        self._sources = [s for s in sources if isinstance(s, HasStats)]

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for src in self._sources:
            for fam in src.metric_families():
                if fam.name in merged:
                    merged[fam.name].samples.extend(fam.samples)
                else:
                    merged[fam.name] = fam
        yield from merged.values()
