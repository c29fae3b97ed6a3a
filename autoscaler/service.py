"""The composition root: settings in, a wired ``Engine`` out.

The only place that turns config components into objects (sources, executors, policies),
including third-party executors from the ``autoscaler.executors`` entry-point group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points

from autoscaler.bus import Sleep
from autoscaler.config import Settings
from autoscaler.engine import Engine, ForecastProvider
from autoscaler.errors import ConfigError
from autoscaler.journal import SQLiteStore, StateStore
from autoscaler.metrics import Metrics, make_metrics
from autoscaler.sources import SOURCE_TYPES
from autoscaler.sources.base import EventSource, Source
from policies.base import Policy
from policies.registry import POLICY_TYPES
from remediation.base import Executor
from remediation.registry import EXECUTOR_TYPES, ExecutorType

log = logging.getLogger(__name__)

EXECUTOR_ENTRY_POINTS = "autoscaler.executors"


def executor_type(name: str) -> ExecutorType:
    """A built-in executor type, or one from the entry-point group, loaded lazily."""
    if name in EXECUTOR_TYPES:
        return EXECUTOR_TYPES[name]
    for ep in entry_points(group=EXECUTOR_ENTRY_POINTS):
        if ep.name == name:
            found = ep.load()
            if not isinstance(found, ExecutorType):
                raise ConfigError([f"entry point {ep.value!r} is not an ExecutorType"])
            return found
    raise ConfigError([f"unknown executor type {name!r}"])


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
    """An engine for ``settings``; any part can be replaced (tests, replay)."""
    return Engine(
        settings=settings,
        sources=build_sources(settings) if sources is None else sources,
        policies=build_policies(settings),
        executors=build_executors(settings) if executors is None else executors,
        state_store=SQLiteStore(settings.service.state_path)
        if state_store is None
        else state_store,
        metrics=metrics or make_metrics(),
        event_sources=event_sources or [],
        forecaster=build_forecaster(settings),
        dry_run=settings.service.dry_run if dry_run is None else dry_run,
        inline_commit=inline_commit,
        sleep=asyncio.sleep if sleep is None else sleep,
    )
