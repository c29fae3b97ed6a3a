"""The breaker board: publishes the circuit breakers that policies trip.

A ``breakers`` executor receives ``TripBreaker`` actions (the action bus routes them to the
executor named in ``bus.breakers``). It keeps each named breaker's state and since when it
holds, computes the platform's degradation level from all states (through ``level_of``,
normally ``policies.degradation``), tells an optional callback about every transition, and
serves ``snapshot()`` — the JSON of ``GET /v1/breakers``. It also keeps, for whoever tells
humans of the transitions, what they were last told of each breaker (``told``), so that it
is persisted with the states it is compared with.

These are the *published* breakers around the platform's dependencies (a vector DB, a GPU
pool), not the ``CircuitBreaker`` the bus keeps in front of every executor.

Time comes from ``clock``: the engine passes its driver's clock (virtual in a replay), so a
replay publishes the recorded times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from policies.types import Action, TargetState, TripBreaker
from remediation.base import ExecutorError

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
_STATES: tuple[State, ...] = ("closed", "open", "half_open")
Told = Literal["closed", "open"]
"""What humans can be told of a breaker: half-open is open for them."""


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """Config of a ``breakers`` executor."""

    names: tuple[str, ...] = ()
    """Breakers published from the start (closed), before any policy trips them."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A published breaker changed state."""

    name: str
    old: State
    new: State
    at: float
    level: int
    """Degradation level after the transition."""


def open_count(states: Mapping[str, str]) -> int:
    """Default degradation level: how many breakers are open (half-open counts as open)."""
    return sum(1 for s in states.values() if s in ("open", "half_open"))


class BreakerBoard:
    """Holds the published breakers; an executor for ``TripBreaker`` actions."""

    cancellable = True

    def __init__(
        self,
        name: str = "breakers",
        spec: BoardSpec | None = None,
        *,
        level_of: Callable[[Mapping[str, str]], int] = open_count,
        on_transition: Callable[[Transition], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.spec = spec or BoardSpec()
        self.level_of = level_of
        self.on_transition = on_transition
        self.clock = clock
        self._states: dict[str, tuple[State, float]] = {n: ("closed", 0.0) for n in self.spec.names}
        self.told: dict[str, Told] = {}
        """Breaker → what humans were last told of it (closed when nothing was); set by the
        announcer of the transitions, saved and restored with the states."""

    def states_by_name(self) -> dict[str, str]:
        """Each breaker's state."""
        return {n: s for n, (s, _) in self._states.items()}

    def level(self) -> int:
        """The current degradation level."""
        return int(self.level_of(self.states_by_name()))

    def snapshot(self) -> dict[str, Any]:
        """``{"breakers": {name: {"state", "since"}}, "degradation_level": n}``."""
        return {
            "breakers": {
                n: {"state": s, "since": since} for n, (s, since) in sorted(self._states.items())
            },
            "degradation_level": self.level(),
        }

    async def execute(self, action: Action) -> str:
        if not isinstance(action, TripBreaker):
            raise ExecutorError(f"{self.name}: cannot carry out {action.kind} actions")
        if action.state not in _STATES:
            raise ExecutorError(f"{self.name}: unknown breaker state {action.state!r}")
        name, new = action.target, action.state
        old, _ = self._states.get(name, ("closed", 0.0))
        if name in self._states and old == new:
            return f"breaker {name} already {new}"
        now = self.clock()
        self._states[name] = (new, now)
        level = self.level()
        if old != new and self.on_transition is not None:
            try:
                await self.on_transition(Transition(name, old, new, now, level))
            except Exception:  # a failed notification must not undo the transition
                log.exception("breaker %s: transition callback failed", name)
        return f"breaker {name} {old} -> {new} (degradation level {level})"

    async def states(self, targets: Sequence[str]) -> Mapping[str, TargetState]:
        return {}

    async def aclose(self) -> None:
        return None

    def retire(self, keep: Collection[str]) -> None:
        """Forget the breakers not in ``keep`` (restored from an earlier config, that no
        rule will trip again): an open one would stay open for ever, in the degradation
        level too. What humans were told of them stays in ``told`` until they are told it
        is closed."""
        for n in [n for n in self._states if n not in keep]:
            log.info("breaker %s: no rule drives it any more, retired", n)
            del self._states[n]

    def to_dict(self) -> dict[str, Any]:
        """Persistable state: each breaker's state, since when, and what humans were told;
        a retired breaker while humans were last told it is open."""
        out: dict[str, Any] = {
            n: {"state": s, "since": since, "told": self.told.get(n, "closed")}
            for n, (s, since) in self._states.items()
        }
        for n, told in self.told.items():
            if n not in self._states and told == "open":
                out[n] = {"told": told}
        return out

    def restore(self, data: Mapping[str, Any]) -> None:
        """Restore what ``to_dict`` wrote (entries that do not parse are ignored). A breaker
        saved without ``told`` (by a version that did not keep it, which told humans of each
        transition) is taken as told what it was saved in."""
        for n, entry in data.items():
            if not isinstance(entry, Mapping):
                continue
            state = entry.get("state")
            if state not in _STATES:
                if entry.get("told") == "open":  # retired, its resolve still to tell
                    self.told[str(n)] = "open"
                continue
            try:
                since = float(entry.get("since", 0.0))
            except (TypeError, ValueError):
                continue
            told: Told = "closed" if state == "closed" else "open"
            if entry.get("told") in ("closed", "open"):
                told = entry["told"]
            self._states[str(n)] = (state, since)
            self.told[str(n)] = told


__all__ = ["BoardSpec", "BreakerBoard", "Told", "Transition", "open_count"]
