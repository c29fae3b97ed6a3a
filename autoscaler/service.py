"""The composition root: settings in, a wired ``Engine`` out.

The only place that turns config components into objects (sources, executors, policies),
including third-party executors from the ``autoscaler.executors`` entry-point group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

from aiohttp import web

from autoscaler.breakers_http import breaker_gauges, breakers_routes
from autoscaler.bus import Sleep
from autoscaler.config import Settings
from autoscaler.engine import Engine, carried_out, driven_breakers
from autoscaler.journal import SQLiteStore, StateStore
from autoscaler.metrics import Metrics, make_metrics
from autoscaler.plugins import executor_type
from autoscaler.sources import SOURCE_TYPES
from autoscaler.sources.base import EventSource, Source
from autoscaler.sources.stats import SourceStats
from policies.base import Policy
from policies.degradation import DegradationSpec, degradation_level
from policies.registry import POLICY_TYPES
from policies.types import Decision, Notify
from remediation.base import Executor, Outcome
from remediation.board import BreakerBoard, Transition
from remediation.fly import FlyExecutor
from remediation.swarm import SwarmExecutor

log = logging.getLogger(__name__)


def build_executors(settings: Settings) -> dict[str, Executor]:
    return {
        name: executor_type(c.type).build(name, c.spec) for name, c in settings.executors.items()
    }


def build_sources(settings: Settings) -> list[Source]:
    return [SOURCE_TYPES[c.type].build(name, c.spec) for name, c in settings.sources.items()]


def build_policies(settings: Settings) -> list[Policy]:
    return [POLICY_TYPES[c.type].build(name, c.spec) for name, c in settings.policies.items()]


def build_engine(
    settings: Settings,
    *,
    dry_run: bool | None = None,
    state_store: StateStore | None = None,
    metrics: Metrics | None = None,
    executors: Mapping[str, Executor] | None = None,
    sources: list[Source] | None = None,
    event_sources: list[EventSource] | None = None,
    in_place: bool = False,
    sleep: Sleep | None = None,
) -> Engine:
    """An engine for ``settings``; any part can be replaced (tests, replay).

    Sources that are also push sources (they have ``drain``) become event sources too.
    """
    sources = build_sources(settings) if sources is None else sources
    if event_sources is None:
        event_sources = [s for s in sources if isinstance(s, EventSource)]
    engine = Engine(
        settings=settings,
        sources=sources,
        policies=build_policies(settings),
        executors=build_executors(settings) if executors is None else executors,
        state_store=SQLiteStore(
            settings.service.state_path, retention=settings.service.journal_retention
        )
        if state_store is None
        else state_store,
        metrics=metrics or make_metrics(),
        event_sources=event_sources,
        dry_run=settings.service.dry_run if dry_run is None else dry_run,
        in_place=in_place,
        sleep=asyncio.sleep if sleep is None else sleep,
    )
    bind_executors(engine)
    engine.metrics.registry.register(SourceStats(engine.sources))
    return engine


def bind_executors(engine: Engine) -> None:
    """Give executors what only the assembled service knows: each target's bounds and
    orchestrator name, and the breaker board its clock (the pass time, virtual in a
    replay), its degradation levels and a way to announce transitions."""
    settings = engine.settings
    for name, ex in engine.executors.items():
        mine = {t: ts for t, ts in settings.targets.items() if ts.executor == name}
        if isinstance(ex, SwarmExecutor | FlyExecutor):
            ex.bounds.update({t: (ts.min_replicas, ts.max_replicas) for t, ts in mine.items()})
        names = {t: ts.service for t, ts in mine.items() if ts.service}
        if isinstance(ex, SwarmExecutor) and names:
            ex.spec = dataclasses.replace(ex.spec, services={**names, **ex.spec.services})
        if isinstance(ex, FlyExecutor) and names:
            ex.spec = dataclasses.replace(ex.spec, apps={**names, **ex.spec.apps})
        if isinstance(ex, BreakerBoard):
            _bind_board(engine, ex)


def _bind_board(engine: Engine, board: BreakerBoard) -> None:
    spec = next(
        (c.spec for c in engine.settings.policies.values() if isinstance(c.spec, DegradationSpec)),
        DegradationSpec(),
    )
    board.clock = lambda: engine.now
    board.retire(keep=driven_breakers(engine.settings) | set(board.spec.names))
    # What is published is the board's. A dry run on this state file published in its
    # journal only, and a rule sends its state again only while the published one differs.
    engine.breakers.clear()
    engine.breakers.update(board.states_by_name())
    board.level_of = functools.partial(
        degradation_level, mapping=spec.levels, emergency_at=spec.emergency_at
    )

    announcer = _Announcer(engine, board)
    board.on_transition = announcer.announce
    engine.on_followups = announcer.settle
    breaker_gauges(board, engine.metrics.registry)


class _Announcer:
    """Tells humans of the board's transitions: a trigger while a breaker is not closed, a
    resolve when it closes (dedup key ``breaker:NAME``). A notice the bus did not send (a
    failed notifier, a pause, the rate limit) is told again on the next pass while the
    board still differs from what humans were last told (open or closed; half-open counts
    as open), with the state of then: a lost resolve would leave the incident open. What
    they were last told is the board's ``told``, persisted with it: after a restart, a
    notice lost before it is told on the second pass, and one that went out is not told
    again. A breaker the board retired (no rule drives it any more) is closed for humans:
    one they were told is open is resolved."""

    def __init__(self, engine: Engine, board: BreakerBoard) -> None:
        self.engine = engine
        self.board = board

    async def announce(self, t: Transition) -> None:
        self._notice(t.name, t.old, t.new, t.level, t.at, "")

    def _notice(self, name: str, old: str, new: str, level: int, at: float, why: str) -> None:
        severity: Literal["P2", "P3"] = "P3" if new == "closed" else "P2"
        summary = f"breaker {name}: {old} -> {new} (degradation level {level}){why}"
        action = Notify(
            target=name,
            severity=severity,
            summary=summary,
            dedup_key=f"breaker:{name}",
            resolve=new == "closed",
        )
        self.engine.followups.append(Decision("breakers", name, at, action, summary))

    def settle(self, decisions: Sequence[Decision], outcomes: Sequence[Outcome]) -> None:
        told = self.board.told
        carried = carried_out(outcomes)
        for d in decisions:
            if d.policy != "breakers" or not isinstance(d.action, Notify):
                continue
            if id(d.action) in carried:
                told[d.target] = "closed" if d.action.resolve else "open"
        states = self.board.states_by_name()
        for name in sorted(states.keys() | told.keys()):
            now = states.get(name, "closed")
            known = told.get(name, "closed")
            if (now == "closed") != (known == "closed"):
                why = " (told again: the first notice was not sent)"
                if name not in states:
                    why = " (no rule drives it any more)"
                self._notice(name, known, now, self.board.level(), self.engine.now, why)
            elif name not in states:
                del told[name]  # retired, and humans know it is closed


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
        if isinstance(comp, BreakerBoard):
            out.extend(breakers_routes(comp))
    return out
