"""Source protocols and the built-in in-memory sources.

Two shapes (KEDA's ``Scaler`` vs ``PushScaler``): a ``Source`` is pulled once per tick and
returns samples; an ``EventSource`` is pushed into (webhooks, probes) and drained by the
next tick.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit

from policies.types import Event


def http_url(url: str) -> SplitResult | None:
    """``url`` split, when it is an http(s) URL with a host and a valid port (else None):
    a config check, so a URL that could never be fetched is refused at start-up."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port out of range
    except ValueError:  # also a bracketed host that is not an IPv6 address
        return None
    return parts if parts.scheme in ("http", "https") and parts.hostname else None


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one signal of one target, sampled at ``at`` (epoch seconds)."""

    target: str
    signal: str
    value: float
    at: float


class Source(Protocol):
    """A pull source: asked for the latest samples at each tick."""

    name: str

    async def collect(self, now: float) -> Sequence[Sample]:
        """Latest samples as of ``now``. Raise ``SourceError`` if the source failed."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class EventSource(Protocol):
    """A push source: events accumulate between ticks and are drained by the engine."""

    def drain(self, now: float) -> Sequence[Event]:
        """Events received since the last drain."""
        ...


class MemorySource:
    """A pull source whose values a test or driver sets directly."""

    in_memory = True

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.values: dict[tuple[str, str], tuple[float, float | None]] = {}
        self.fail: Exception | None = None

    def set(self, target: str, signal: str, value: float, at: float | None = None) -> None:
        """Set the value returned from now on; ``at=None`` means "sampled at the tick"."""
        self.values[(target, signal)] = (value, at)

    def clear(self, target: str, signal: str) -> None:
        self.values.pop((target, signal), None)

    async def collect(self, now: float) -> Sequence[Sample]:
        if self.fail is not None:
            raise self.fail
        return [
            Sample(t, s, v, now if at is None else at) for (t, s), (v, at) in self.values.items()
        ]

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class StaticSpec:
    """Config of a ``static`` source: fixed values, for demos and smoke tests."""

    values: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{target: {signal: value}}``, reported as sampled at each tick."""


class StaticSource:
    """Reports the same values at every tick."""

    in_memory = True

    def __init__(self, name: str, spec: StaticSpec) -> None:
        self.name = name
        self._values: Mapping[str, Mapping[str, float]] = spec.values

    async def collect(self, now: float) -> Sequence[Sample]:
        return [
            Sample(t, s, float(v), now)
            for t, signals in self._values.items()
            for s, v in signals.items()
            if not math.isnan(v)
        ]

    async def aclose(self) -> None:
        return None
