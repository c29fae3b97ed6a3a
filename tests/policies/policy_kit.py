"""Test kit for policies: an in-memory History, context building, and a tiny loop that
drives policies plus ``combine_scale`` over a series (no autoscaler package needed)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from forecasting.types import Forecast
from policies.base import Bounds, Context, Policy
from policies.scaling import ScaleBehavior, combine_scale
from policies.types import Decision, Event, Observation, Scale, TargetState

TARGET = "api"


@dataclass
class SeriesHistory:
    """A dict of arrays on the tick grid; ``now`` is the end of every window."""

    now: float = 0.0
    interval: float = 15.0
    data: dict[tuple[str, str], tuple[list[float], list[float]]] = field(default_factory=dict)

    def record(self, signal: str, t: float, value: float, *, target: str = TARGET) -> None:
        times, values = self.data.setdefault((target, signal), ([], []))
        times.append(t)
        values.append(value)

    def window(
        self, target: str, signal: str, seconds: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        times, values = self.data.get((target, signal), ([], []))
        t = np.asarray(times, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        mask = (t >= self.now - seconds - 1e-9) & (t <= self.now)
        return t[mask], v[mask]


def filled(
    signal: str, value: float, *, now: float, seconds: float, step: float = 15.0
) -> SeriesHistory:
    """A history in which ``signal`` was ``value`` for the last ``seconds``."""
    h = SeriesHistory(now=now)
    for t in np.arange(now - seconds, now + 1e-9, step):
        h.record(signal, float(t), value)
    return h


def ctx(
    now: float = 1_000_000.0,
    *,
    values: Mapping[str, float] | None = None,
    stale: Sequence[str] = (),
    history: SeriesHistory | None = None,
    replicas: int | None = 4,
    bounds: Bounds | None = None,
    state: TargetState | None = None,
    forecasts: Mapping[str, Forecast] | None = None,
    events: Sequence[Event] = (),
    memory: dict[str, Any] | None = None,
    breakers: Mapping[str, str] | None = None,
) -> Context:
    """A context for target ``api``; ``values`` become fresh observations at ``now``."""
    obs = {k: Observation(v, now, stale=k in stale) for k, v in (values or {}).items()}
    if state is None and replicas is not None:
        state = TargetState(TARGET, replicas, replicas)
    return Context(
        now=now,
        target=TARGET,
        bounds=bounds or Bounds(min_replicas=2, max_replicas=10, lead_time=60.0),
        state=state,
        observations=obs,
        forecasts=forecasts or {},
        history=history or SeriesHistory(now=now),
        events=events,
        memory=memory if memory is not None else {},
        breakers=breakers or {},
    )


def flat_forecast(now: float, *, mean: float, upper: float, horizon: float = 300.0) -> Forecast:
    times = np.arange(now + 15.0, now + horizon + 1e-9, 15.0)
    return Forecast(
        issued_at=now,
        times=times,
        mean=np.full(len(times), mean),
        lower=np.full(len(times), mean - (upper - mean)),
        upper=np.full(len(times), upper),
        model="test",
    )


def one_sentence(reason: str) -> bool:
    """A reason is one sentence: non-empty, one line, no full stop inside."""
    return bool(reason) and "\n" not in reason and not re.search(r"\.\s", reason)


def journalable(d: Decision) -> bool:
    """Inputs survive a strict JSON round trip (no NaN/Infinity)."""
    json.dumps(d.inputs, allow_nan=False)
    return True


@dataclass
class Loop:
    """Drives policies and ``combine_scale`` tick by tick, like the engine does, and
    applies every scale action at once (memories round-trip through JSON)."""

    policies: Sequence[Policy]
    bounds: Bounds = field(default_factory=lambda: Bounds(2, 10, 60.0))
    replicas: int = 2
    behavior: ScaleBehavior = field(default_factory=ScaleBehavior)
    history: SeriesHistory = field(default_factory=SeriesHistory)
    memories: dict[str, str] = field(default_factory=dict)
    combine_memory: str = "{}"
    actions: list[tuple[float, Decision]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    ticks: list[tuple[float, list[Decision], Decision | None]] = field(default_factory=list)
    path: list[int] = field(default_factory=list)
    """Replicas after each tick."""

    def tick(
        self,
        now: float,
        values: Mapping[str, float],
        *,
        forecasts: Mapping[str, Forecast] | None = None,
        stale: Sequence[str] = (),
        state: TargetState | None = None,
        events: Sequence[Event] = (),
    ) -> Decision | None:
        self.history.now = now
        for k, v in values.items():
            self.history.record(k, now, v if k not in stale else math.nan)
        st = state or TargetState(TARGET, self.replicas, self.replicas)
        decisions: list[Decision] = []
        for p in self.policies:
            mem = json.loads(self.memories.get(p.name, "{}"))
            c = ctx(
                now,
                values=values,
                stale=stale,
                history=self.history,
                bounds=self.bounds,
                state=st,
                forecasts=forecasts,
                events=events,
                memory=mem,
            )
            decisions.extend(p.evaluate(c))
            self.memories[p.name] = json.dumps(mem)
        self.decisions.extend(decisions)
        cmem = json.loads(self.combine_memory)
        out = combine_scale(
            TARGET,
            decisions,
            bounds=self.bounds,
            current=st.desired_replicas,
            now=now,
            memory=cmem,
            behavior=self.behavior,
        )
        self.combine_memory = json.dumps(cmem)
        self.ticks.append((now, decisions, out))
        self.path.append(
            self.replicas
            if out is None or not isinstance(out.action, Scale)
            else out.action.replicas
        )
        if out is not None and isinstance(out.action, Scale):
            self.actions.append((now, out))
            self.replicas = out.action.replicas
        for d in decisions:
            if d.action is not None and not isinstance(d.action, Scale):
                self.actions.append((now, d))
        return out
