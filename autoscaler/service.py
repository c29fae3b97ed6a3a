"""The composition root: settings in, a wired ``Engine`` out.

The only place that turns config components into objects (sources, executors, policies),
including third-party executors from the ``autoscaler.executors`` entry-point group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from aiohttp import web

from autoscaler.bus import Sleep
from autoscaler.config import Settings
from autoscaler.engine import Engine, ForecastProvider
from autoscaler.journal import SQLiteStore, StateStore
from autoscaler.metrics import Metrics, make_metrics
from autoscaler.plugins import executor_type
from autoscaler.sources import SOURCE_TYPES
from autoscaler.sources.base import EventSource, Source
from policies.base import Policy
from policies.registry import POLICY_TYPES
from remediation.base import Executor

log = logging.getLogger(__name__)


def build_executors(settings: Settings) -> dict[str, Executor]:
    return {
        name: executor_type(c.type).build(name, c.spec) for name, c in settings.executors.items()
    }


def build_sources(settings: Settings) -> list[Source]:
    return [SOURCE_TYPES[c.type].build(name, c.spec) for name, c in settings.sources.items()]


def build_policies(settings: Settings) -> list[Policy]:
    return [POLICY_TYPES[c.type].build(name, c.spec) for name, c in settings.policies.items()]


def build_forecaster(settings: Settings) -> ForecastProvider:
    from autoscaler.engine import PersistenceProvider

    return PersistenceProvider()


def build_engine(
    settings: Settings,
    *,
    dry_run: bool | None = None,
    state_store: StateStore | None = None,
    metrics: Metrics | None = None,
    executors: Mapping[str, Executor] | None = None,
    sources: list[Source] | None = None,
    event_sources: list[EventSource] | None = None,
    inline_commit: bool = False,
    sleep: Sleep | None = None,
) -> Engine:
    """An engine for ``settings``; any part can be replaced (tests, replay).

    Sources that are also push sources (they have ``drain``) become event sources too.
    """
    sources = build_sources(settings) if sources is None else sources
    if event_sources is None:
        event_sources = [s for s in sources if isinstance(s, EventSource)]
    return Engine(
        settings=settings,
        sources=sources,
        policies=build_policies(settings),
        executors=build_executors(settings) if executors is None else executors,
        state_store=SQLiteStore(settings.service.state_path)
        if state_store is None
        else state_store,
        metrics=metrics or make_metrics(),
        event_sources=event_sources,
        forecaster=build_forecaster(settings),
        dry_run=settings.service.dry_run if dry_run is None else dry_run,
        inline_commit=inline_commit,
        sleep=asyncio.sleep if sleep is None else sleep,
    )


@runtime_checkable
class HasRoutes(Protocol):
    """A component serving HTTP endpoints of its own (webhook intake, breaker board)."""

    def routes(self) -> list[web.RouteDef]: ...


def component_routes(engine: Engine) -> list[web.RouteDef]:
    """HTTP routes contributed by the engine's sources and executors."""
    out: list[web.RouteDef] = []
    for comp in [*engine.sources, *engine.executors.values()]:
        if isinstance(comp, HasRoutes):
            out.extend(comp.routes())
    return out
