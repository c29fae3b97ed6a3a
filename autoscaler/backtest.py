"""Backtest (closed loop): a recorded demand series against a capacity model.

Three policies face the same demand, side by side in one run:

- **predictive**: the ``predictive`` rule (HPA formula on the forecast upper bound of demand
  at the start-up delay, the current demand as a floor), through the real ``Engine``;
- **reactive**: an HPA-style baseline, ``target_tracking`` on utilisation at the same
  target, with the 300 s scale-down stabilisation, through the real ``Engine``;
- **oracle**: perfect foresight, the lower bound: it needs
  ``n(t) = ceil(demand(t) / (capacity × target_utilisation))`` ready replicas and requests
  each one exactly ``startup_delay`` ahead, so at each tick it holds
  ``max n(s) for s in [t, t + startup_delay]``.

The capacity model, evaluated on the tick grid (``interval``):

- demand (requests per second) is held constant between its samples;
- a requested replica is ready ``startup_delay`` after the request (rounded up to the next
  tick); a removal is immediate and cancels replicas still starting first;
- ready capacity = ready replicas × ``capacity_per_replica``;
- signals fed back to the policies every tick (target ``service``):
  ``demand`` (req/s, forecast), ``utilization`` as the HPA measures it (served load over the
  *requested* replicas, so a replica still starting counts as idle and a saturated service
  reads 1.0), ``queue_length`` (a fluid backlog: it grows by
  ``(demand - capacity) × interval`` and never goes below zero) and ``p95_latency_ms`` (each
  ready replica an M/M/1 queue: ``ln(20) / (capacity × (1 - ρ))``, ρ capped at 0.99, plus
  the time to drain the backlog).

Scores over the span from the first to the last tick, each tick standing for the
``interval`` after it: **violation minutes** (demand above ready capacity),
**replica-hours** (requested replicas: a starting replica is paid for), **actions**
(executed scale actions) and, with a price, **cost**.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from autoscaler.ahead import ForecastsAhead
from autoscaler.ahead import worth_it as ahead_worth_it
from autoscaler.config import Settings, from_mapping, policy_signals
from autoscaler.errors import ConfigError
from autoscaler.journal import MemoryStore
from autoscaler.replay import (
    ForecastTap,
    ForecastTrace,
    Progress,
    Series,
    csv_number,
    tick_grid,
)
from autoscaler.service import build_engine
from autoscaler.sources.base import MemorySource
from policies.registry import POLICY_TYPES
from policies.types import Action, Scale, TargetState

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

TARGET = "service"
EXECUTOR = "cluster"
POLICIES = ("predictive", "reactive", "oracle")
SIGNALS = ("demand", "utilization", "queue_length", "p95_latency_ms")
"""What the capacity model feeds the policies (``capacity_signals``)."""


@dataclass(frozen=True, slots=True)
class CapacitySpec:
    """The capacity model and the bounds every policy works within."""

    capacity_per_replica: float
    """Requests per second one ready replica serves."""
    startup_delay: float = 60.0
    """Seconds from a replica's request to its readiness."""
    target_utilization: float = 0.7
    """Utilisation every policy aims at (the oracle included)."""
    min_replicas: int = 1
    max_replicas: int = 200
    interval: float = 15.0
    """Seconds between ticks."""
    price_per_replica_hour: float | None = None
    """Money per replica-hour, for the cost column."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity_per_replica) and self.capacity_per_replica > 0):
            raise ValueError("capacity per replica must be a positive number")
        if not 0 < self.target_utilization <= 1:
            raise ValueError("target utilisation must be in (0, 1]")
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ValueError("need 1 <= min replicas <= max replicas")
        if not self.interval > 0 or self.startup_delay < 0:
            raise ValueError("interval must be > 0 and startup delay >= 0")
        price = self.price_per_replica_hour
        if price is not None and not (math.isfinite(price) and price >= 0):
            raise ValueError("price per replica-hour must be a finite number >= 0")

    @property
    def per_replica(self) -> float:
        """Demand one replica should carry at the target utilisation."""
        return self.capacity_per_replica * self.target_utilization

    def needed(self, demand: FloatArray) -> IntArray:
        """Ready replicas needed for ``demand`` at the target utilisation, within bounds."""
        n = np.ceil(demand / self.per_replica - 1e-9).astype(np.int64)
        return np.clip(n, self.min_replicas, self.max_replicas)


def demand_on_grid(times: FloatArray, values: FloatArray, ticks: FloatArray) -> FloatArray:
    """Demand at each tick: the latest sample at or before it (held constant)."""
    idx = np.searchsorted(times, ticks, side="right") - 1
    return values[np.clip(idx, 0, len(values) - 1)]


# --- the simulated cluster: an executor over the capacity model ------------------------


class Cluster:
    """An executor whose replicas become ready ``startup_delay`` after they are requested.

    The driver sets ``now`` before each tick (executors take no time argument)."""

    in_memory = True  # states() never waits: the engine awaits it in place

    def __init__(self, *, target: str, startup_delay: float, replicas: int, now: float) -> None:
        self.name = EXECUTOR
        self.target = target
        self.startup_delay = startup_delay
        self.now = now
        self.desired = replicas
        self.ready = replicas
        self.pending: list[float] = []
        """Ready times of requested replicas still starting, oldest request first."""
        self.moves: list[tuple[float, int, int]] = []

    def advance(self, now: float) -> None:
        """Replicas whose start-up delay has passed by ``now`` become ready."""
        self.now = now
        k = 0
        # the slack absorbs float error in epoch seconds (an ulp is 2.4e-7 s at 1.7e9)
        while k < len(self.pending) and self.pending[k] <= now + 1e-6:
            k += 1
        if k:
            self.ready += k
            del self.pending[:k]

    def set_replicas(self, replicas: int) -> None:
        before = self.desired
        if replicas > before:
            self.pending.extend([self.now + self.startup_delay] * (replicas - before))
        elif replicas < before:
            drop = before - replicas
            cancel = min(drop, len(self.pending))
            if cancel:
                del self.pending[len(self.pending) - cancel :]
            self.ready -= drop - cancel
        self.desired = replicas
        if replicas != before:
            self.moves.append((self.now, before, replicas))

    async def execute(self, action: Action) -> str:
        if not isinstance(action, Scale):
            return "ignored: the backtest models scaling only"
        before = self.desired
        self.set_replicas(action.replicas)
        return f"replicas {before} -> {action.replicas}"

    async def states(self, targets: Sequence[str]) -> Mapping[str, TargetState]:
        return {
            t: TargetState(target=t, desired_replicas=self.desired, running_replicas=self.ready)
            for t in targets
            if t == self.target
        }

    async def aclose(self) -> None:
        return None


def capacity_signals(
    *, demand: float, desired: int, ready: int, backlog: float, spec: CapacitySpec
) -> dict[str, float]:
    """What the policies observe for one tick (see the module docstring)."""
    cap = spec.capacity_per_replica
    served = min(demand, ready * cap)
    utilization = served / (max(desired, 1) * cap)
    if ready > 0:
        rho = min(demand / (ready * cap), 0.99)
        latency = math.log(20.0) / (cap * (1.0 - rho)) + backlog / (ready * cap)
    else:
        latency = math.log(20.0) / (cap * 0.01) + backlog / cap
    return {
        "demand": demand,
        "utilization": utilization,
        "queue_length": backlog,
        "p95_latency_ms": latency * 1000.0,
    }


# --- runs and scores ----------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """One policy's trajectory on the tick grid (values after each tick's actions)."""

    name: str
    desired: IntArray
    ready: IntArray
    queue: FloatArray
    latency_ms: FloatArray
    moves: list[tuple[float, int, int]]
    forecast: ForecastTrace | None = None
    """The demand forecast at the start-up delay (engine-driven policies)."""
    wall_seconds: float = 0.0


def score(
    *, desired: IntArray, ready: IntArray, demand: FloatArray, spec: CapacitySpec, actions: int
) -> dict[str, float | int]:
    """Scores of one trajectory; tick ``k`` stands for ``[t_k, t_k + interval)`` and the
    last tick only closes the span."""
    span = slice(0, max(0, len(demand) - 1))
    dt = spec.interval
    short = demand[span] > ready[span] * spec.capacity_per_replica + 1e-9
    replica_hours = float(desired[span].sum()) * dt / 3600.0
    out: dict[str, float | int] = {
        "violation_minutes": float(short.sum()) * dt / 60.0,
        "replica_hours": replica_hours,
        "actions": actions,
        "max_replicas": int(desired.max()) if len(desired) else 0,
    }
    if spec.price_per_replica_hour is not None:
        out["cost"] = replica_hours * spec.price_per_replica_hour
    return out


def oracle_desired(demand: FloatArray, spec: CapacitySpec) -> IntArray:
    """Requested replicas of the perfect-foresight policy at each tick."""
    need = spec.needed(demand)
    ahead = math.ceil(spec.startup_delay / spec.interval - 1e-9)
    out = need.copy()
    for k in range(1, ahead + 1):
        out[:-k] = np.maximum(out[:-k], need[k:])
    return out


def run_oracle(ticks: FloatArray, demand: FloatArray, spec: CapacitySpec) -> Run:
    started = time.perf_counter()
    want = oracle_desired(demand, spec)
    cluster = Cluster(
        target=TARGET, startup_delay=spec.startup_delay, replicas=int(want[0]), now=ticks[0]
    )
    return _simulate(
        "oracle", ticks, demand, spec, cluster, decide=lambda k: int(want[k]), started=started
    )


def _simulate(
    name: str,
    ticks: FloatArray,
    demand: FloatArray,
    spec: CapacitySpec,
    cluster: Cluster,
    *,
    decide: Any,
    started: float,
) -> Run:
    n = len(ticks)
    desired = np.zeros(n, dtype=np.int64)
    ready = np.zeros(n, dtype=np.int64)
    queue = np.zeros(n)
    latency = np.zeros(n)
    backlog = 0.0
    for k, now in enumerate(ticks.tolist()):
        cluster.advance(now)
        d = float(demand[k])
        sig = capacity_signals(
            demand=d, desired=cluster.desired, ready=cluster.ready, backlog=backlog, spec=spec
        )
        queue[k], latency[k] = backlog, sig["p95_latency_ms"]
        cluster.set_replicas(decide(k))
        cluster.advance(now)  # with no start-up delay a requested replica is ready at once
        desired[k], ready[k] = cluster.desired, cluster.ready
        backlog = max(
            0.0, backlog + (d - cluster.ready * spec.capacity_per_replica) * spec.interval
        )
    return Run(
        name, desired, ready, queue, latency, cluster.moves, None, time.perf_counter() - started
    )


async def run_engine(
    name: str,
    settings: Settings,
    ticks: FloatArray,
    demand: FloatArray,
    spec: CapacitySpec,
    *,
    progress: Progress | None = None,
    done_before: int = 0,
) -> Run:
    """Drive the real engine over the demand, the cluster closing the loop."""
    started = time.perf_counter()
    initial = int(spec.needed(demand[:1])[0])
    cluster = Cluster(
        target=TARGET, startup_delay=spec.startup_delay, replicas=initial, now=ticks[0]
    )
    source = MemorySource("capacity-model")
    engine = build_engine(
        settings,
        dry_run=False,
        state_store=MemoryStore(),
        executors={EXECUTOR: cluster},
        sources=[source],
        event_sources=[],
        in_place=True,
        sleep=_no_sleep,
    )
    # Demand is recorded, not modelled: when it is the only forecast signal, its forecasts
    # do not depend on the loop and are made ahead in a second process (as in a replay).
    forecast = {sig for sig, st in settings.signals.items() if st.forecast}
    ahead = None
    if forecast == {"demand"} and ahead_worth_it(len(ticks)):
        ahead = ForecastsAhead(settings, [Series(TARGET, "demand", ticks, demand)], ticks)
    tap = ForecastTap(ahead or engine.forecaster, {TARGET: spec.startup_delay})
    engine.forecaster = tap
    n = len(ticks)
    desired = np.zeros(n, dtype=np.int64)
    ready = np.zeros(n, dtype=np.int64)
    queue = np.zeros(n)
    latency = np.zeros(n)
    backlog = 0.0
    cap = spec.capacity_per_replica
    if ahead is not None:
        ahead.start()
    try:
        for k, now in enumerate(ticks.tolist()):
            cluster.advance(now)
            d = float(demand[k])
            sig = capacity_signals(
                demand=d, desired=cluster.desired, ready=cluster.ready, backlog=backlog, spec=spec
            )
            for signal, value in sig.items():
                source.set(TARGET, signal, value)
            queue[k], latency[k] = backlog, sig["p95_latency_ms"]
            await engine.tick(now)
            if ahead is not None:
                ahead.check()
            cluster.advance(now)  # with no start-up delay a requested replica is ready at once
            desired[k], ready[k] = cluster.desired, cluster.ready
            backlog = max(0.0, backlog + (d - cluster.ready * cap) * spec.interval)
            if progress is not None:
                progress.update(done_before + k + 1)
    finally:
        if ahead is not None:
            ahead.close()
    return Run(
        name,
        desired,
        ready,
        queue,
        latency,
        cluster.moves,
        tap.traces().get((TARGET, "demand")),
        time.perf_counter() - started,
    )


async def _no_sleep(_: float) -> None:
    return None


# --- settings -----------------------------------------------------------------------------


def policy_sets(spec: CapacitySpec) -> dict[str, dict[str, Any]]:
    """The ``[policies]`` tables of the engine-driven policies: the one place to change
    what "predictive" and "reactive" mean."""
    hpa = {
        "type": "target_tracking",
        "metrics": [{"signal": "utilization", "target": spec.target_utilization}],
        "tolerance": 0.1,
    }
    predictive = {
        "type": "predictive",
        "signal": "demand",
        "mode": "track",
        "target": spec.per_replica,
        "kind": "total",
        "tolerance": 0.1,
    }
    if "target_tracking" in POLICY_TYPES and "predictive" in POLICY_TYPES:
        return {"predictive": {"predictive": predictive}, "reactive": {"hpa": hpa}}
    # Until the scaling rules exist: a step rule on utilisation for both.
    step = {
        "type": "step",
        "signal": "utilization",
        "above": spec.target_utilization * 1.1,
        "below": spec.target_utilization * 0.9 * 0.7,
        "scale_up_step": 2,
        "scale_down_step": 1,
        "scale_down_for": "5m",
    }
    return {"predictive": {"step": step}, "reactive": {"step": step}}


def base_document(spec: CapacitySpec, *, history: float) -> dict[str, Any]:
    """The settings every engine-driven policy shares, as a TOML-shaped mapping."""
    max_age = max(60.0, 3 * spec.interval)
    return {
        "service": {"interval": spec.interval, "journal_holds": "none"},
        "http": {"enabled": False},
        # No bus cooldowns: pacing is the policies' own (stabilisation, rate limits), as an
        # HPA's behaviour section does it; both engine-driven policies get the same bus.
        "bus": {"cooldown": 0.0, "dedupe_window": 0.0, "rate_limit": 1000},
        "forecasting": {"horizon": max(spec.startup_delay, spec.interval)},
        "signals": {
            "demand": {"forecast": True, "window": history, "max_age": max_age},
            "utilization": {"window": 3600.0, "max_age": max_age},
            "queue_length": {"window": 3600.0, "max_age": max_age},
            "p95_latency_ms": {"window": 3600.0, "max_age": max_age},
        },
        "targets": {
            TARGET: {
                "executor": EXECUTOR,
                "min_replicas": spec.min_replicas,
                "max_replicas": spec.max_replicas,
                "startup_delay": spec.startup_delay,
                # The HPA's default behaviour: no step limits, 300 s scale-down
                # stabilisation, immediate scale-up.
                "behavior": {
                    "scale_down_window": 300.0,
                    "scale_up_window": 0.0,
                    "max_scale_up": 0,
                    "max_scale_down": 0,
                },
            }
        },
        "executors": {EXECUTOR: {"type": "recording"}},
    }


def engine_settings(
    spec: CapacitySpec,
    policies: Mapping[str, Any],
    *,
    history: float,
    user: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings for one engine-driven policy. ``user`` (a parsed config) may override
    ``service``/``bus``/``forecasting``/``signals`` tables and replace the policies;
    ``ConfigError`` with key paths when it does not fit."""
    doc = base_document(spec, history=history)
    if user:
        _check_tables(user)
        for table in ("bus", "forecasting"):
            if table in user:
                doc[table] = {**doc[table], **user[table]}
        if "service" in user:
            doc["service"] = {**doc["service"], **user["service"], "interval": spec.interval}
        for sig, table in (user.get("signals") or {}).items():
            doc["signals"][sig] = {**doc["signals"].get(sig, {}), **table}
        if user.get("policies"):
            policies = user["policies"]
    doc["policies"] = {
        name: {**table, "targets": [TARGET]} for name, table in dict(policies).items()
    }
    return from_mapping(doc)


def overlay_settings(user: Mapping[str, Any], *, interval: float = 15.0) -> Settings:
    """The predictive engine's settings with ``user`` (a parsed ``backtest --config``)
    merged as a backtest at ``interval`` merges it; ``ConfigError`` with key paths when it
    does not fit. Capacity figures do not change what is valid, so any will do."""
    spec = CapacitySpec(capacity_per_replica=1.0, interval=interval)
    return engine_settings(spec, policy_sets(spec)["predictive"], history=2 * 86400.0, user=user)


def signal_warnings(settings: Settings) -> list[str]:
    """The signals a ``--config``'s policies read that the capacity model does not feed
    them, with their key paths: a rule reading one holds on every tick (a whole config's
    rules read what its sources produce, a misspelt name reads nothing)."""
    return [
        f"{path}: {signal!r} is not a signal of the backtest ({', '.join(SIGNALS)}): "
        "that rule holds on every tick"
        for path, signal in policy_signals(settings)
        if signal not in SIGNALS
    ]


def _check_tables(user: Mapping[str, Any]) -> None:
    """The tables of a ``--config`` that a backtest merges must be tables (of tables): a
    clear error, not a TypeError, for ``[policies] x = 5`` or ``policies = [1]``. A table a
    config does not have is an error too, as in a config: a misspelt ``[forcasting]`` or
    ``[policy.up]`` would otherwise be ignored, and the built-in policy measured in its
    place. (A whole config is fine: its other tables are ignored.)"""
    tables = {f.name for f in dataclasses.fields(Settings)}
    problems = [f"{key}: unknown key" for key in user if key not in tables]
    for key in ("service", "bus", "forecasting", "signals", "policies"):
        value = user.get(key, {})
        if not isinstance(value, Mapping):
            problems.append(f"{key}: expected a table")
        elif key in ("signals", "policies"):
            problems += [
                f"{key}.{n}: expected a table"
                for n, t in value.items()
                if not isinstance(t, Mapping)
            ]
    if problems:
        raise ConfigError(problems)


# --- the whole backtest -------------------------------------------------------------------


@dataclass(slots=True)
class BacktestResult:
    ticks: FloatArray
    demand: FloatArray
    spec: CapacitySpec
    runs: dict[str, Run]
    scores: dict[str, dict[str, float | int]]
    policies: dict[str, dict[str, Any]]


async def backtest(
    times: FloatArray,
    values: FloatArray,
    spec: CapacitySpec,
    *,
    user: Mapping[str, Any] | None = None,
    history: float = 2 * 86400.0,
    progress: Progress | None = None,
) -> BacktestResult:
    """Run the three policies over the demand series and score them."""
    if user:
        _check_tables(user)
    ticks = tick_grid(float(times[0]), float(times[-1]), spec.interval)
    if len(ticks) < 2:
        raise ValueError("the demand series spans less than two ticks")
    demand = demand_on_grid(times, values, ticks)
    sets = policy_sets(spec)
    if user and user.get("policies"):
        sets["predictive"] = dict(user["policies"])
    runs: dict[str, Run] = {}
    if progress is not None:
        progress.total = 2 * len(ticks)
    # The reactive baseline reads no forecast: its engine makes none.
    no_forecast = {"signals": {"demand": {"forecast": False}}}
    for i, name in enumerate(("predictive", "reactive")):
        settings = engine_settings(
            spec, sets[name], history=history, user=user if name == "predictive" else no_forecast
        )
        runs[name] = await run_engine(
            name, settings, ticks, demand, spec, progress=progress, done_before=i * len(ticks)
        )
    runs["oracle"] = run_oracle(ticks, demand, spec)
    scores = {
        name: score(
            desired=r.desired, ready=r.ready, demand=demand, spec=spec, actions=len(r.moves)
        )
        for name, r in runs.items()
    }
    return BacktestResult(ticks, demand, spec, runs, scores, sets)


def ratio_text(value: float | None) -> str:
    """A ratio of ``comparison`` for people: ``x0.5``, or ``n/a`` where the baseline is 0."""
    return "n/a" if value is None else f"x{value:g}"


def comparison(scores: Mapping[str, Mapping[str, float | int]]) -> dict[str, Any]:
    """Predictive against the reactive baseline and the oracle (the project's targets:
    at most half the violation minutes at no more than 110 % of the replica-hours, and
    replica-hours within 25 % of the oracle)."""
    p, r, o = scores["predictive"], scores["reactive"], scores["oracle"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None

    vio = ratio(float(p["violation_minutes"]), float(r["violation_minutes"]))
    cost_r = ratio(float(p["replica_hours"]), float(r["replica_hours"]))
    cost_o = ratio(float(p["replica_hours"]), float(o["replica_hours"]))
    vio_ok = float(p["violation_minutes"]) <= 0.5 * float(r["violation_minutes"])
    return {
        "violation_ratio_vs_reactive": vio,
        "replica_hours_ratio_vs_reactive": cost_r,
        "replica_hours_ratio_vs_oracle": cost_o,
        "meets_violation_target": vio_ok,
        "meets_cost_target_vs_reactive": cost_r is not None and cost_r <= 1.10,
        "meets_cost_target_vs_oracle": cost_o is not None and cost_o <= 1.25,
    }


def summary(result: BacktestResult, *, demand_file: str = "") -> dict[str, Any]:
    """``summary.json``: scores per policy, the comparison, and what produced them."""
    s = result.spec
    return {
        "policies": result.scores,
        "comparison": comparison(result.scores),
        "trace": {
            "file": demand_file,
            "start": float(result.ticks[0]),
            "end": float(result.ticks[-1]),
            "ticks": len(result.ticks),
            "demand_max": float(result.demand.max()),
            "demand_mean": round(float(result.demand.mean()), 4),
        },
        "model": {
            "capacity_per_replica": s.capacity_per_replica,
            "startup_delay": s.startup_delay,
            "target_utilization": s.target_utilization,
            "min_replicas": s.min_replicas,
            "max_replicas": s.max_replicas,
            "interval": s.interval,
            "price_per_replica_hour": s.price_per_replica_hour,
        },
        "policy_config": result.policies,
        "wall_seconds": {name: round(r.wall_seconds, 3) for name, r in result.runs.items()},
    }


def score_rows(
    scores: Mapping[str, Mapping[str, float | int]],
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the score table (terminal and HTML)."""
    priced = any("cost" in v for v in scores.values())
    head = ["policy", "violation min", "replica-hours", "actions", "max replicas"]
    if priced:
        head.append("cost")
    rows = []
    for name in POLICIES:
        v = scores[name]
        row: list[Any] = [
            name,
            float(v["violation_minutes"]),
            float(v["replica_hours"]),
            int(v["actions"]),
            int(v["max_replicas"]),
        ]
        if priced:
            row.append(float(v.get("cost", 0.0)))
        rows.append(row)
    return head, rows


def write_timeline(path: Any, result: BacktestResult) -> None:
    """``timestamp,policy,demand,desired_replicas,ready_replicas``, one row per tick and
    policy."""
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "policy", "demand", "desired_replicas", "ready_replicas"])
        t = result.ticks.tolist()
        d = result.demand.tolist()
        for name in POLICIES:
            r = result.runs[name]
            for k in range(len(t)):
                ts = int(t[k]) if float(t[k]).is_integer() else t[k]
                w.writerow([ts, name, csv_number(d[k]), int(r.desired[k]), int(r.ready[k])])


def render_report(result: BacktestResult, info: Mapping[str, Any]) -> str:
    """The backtest's HTML page."""
    from autoscaler import report as rp

    s = result.spec
    x = result.ticks
    colors = {"predictive": rp.PALETTE[0], "reactive": rp.PALETTE[1], "oracle": rp.PALETTE[2]}
    head, rows = score_rows(result.scores)
    cmp = info["comparison"]
    blocks = [
        (
            '<p class="note">Closed-loop backtest of recorded demand against a capacity model: '
            f"{s.capacity_per_replica:g} req/s per ready replica, start-up delay "
            f"{s.startup_delay:g} s, target utilisation {s.target_utilization:g}, replicas in "
            f"[{s.min_replicas}, {s.max_replicas}], a tick every {s.interval:g} s. Violation "
            "minutes: demand above ready capacity. Replica-hours count requested replicas. "
            "Predictive and reactive ran through the real engine; the oracle knows the future.</p>"
        ),
        rp.table(head, rows),
        (
            '<p class="note">Predictive vs reactive: violation minutes '
            f"{ratio_text(cmp['violation_ratio_vs_reactive'])}, replica-hours "
            f"{ratio_text(cmp['replica_hours_ratio_vs_reactive'])}; replica-hours vs oracle "
            f"{ratio_text(cmp['replica_hours_ratio_vs_oracle'])}.</p>"
        ),
    ]
    demand = result.demand
    lines = [rp.Line("demand", x, demand, "#000", width=1.2)]
    for name in POLICIES:
        r = result.runs[name]
        cap = r.ready.astype(np.float64) * s.capacity_per_replica
        lines.append(rp.Line(f"{name} ready capacity", x, cap, colors[name], step=True, width=1))
    blocks.append(rp.chart(title="Demand and ready capacity", lines=lines, ylabel="req/s"))
    for name in POLICIES:
        r = result.runs[name]
        marks = []
        if r.moves:
            mx = np.array([m[0] for m in r.moves])
            my = np.array([float(m[2]) for m in r.moves])
            up = np.array([m[2] > m[1] for m in r.moves])
            marks.append(rp.Marks("scale action", mx, my, up, "#444"))
        needed = s.needed(demand).astype(np.float64)
        blocks.append(
            rp.chart(
                title=f"{name}: replicas and scale actions",
                lines=[
                    rp.Line("needed now", x, needed, "#bbb", step=True, width=1),
                    rp.Line("requested", x, r.desired.astype(np.float64), colors[name], step=True),
                    rp.Line(
                        "ready",
                        x,
                        r.ready.astype(np.float64),
                        "#000",
                        step=True,
                        dash="3 2",
                        width=1,
                    ),
                ],
                marks=marks,
                ylabel="replicas",
            )
        )
    fc = result.runs["predictive"].forecast
    if fc is not None and len(fc.issued):
        fx = fc.issued + s.startup_delay
        blocks.append(
            rp.chart(
                title=f"Predictive: demand forecast {s.startup_delay:g} s ahead, with interval",
                lines=[
                    rp.Line("demand", x, demand, "#000", width=1.2),
                    rp.Line("forecast mean", fx, fc.mean, rp.PALETTE[4], dash="4 3"),
                ],
                bands=[rp.Band("interval", fx, fc.lower, fc.upper, rp.PALETTE[4])],
                ylabel="req/s",
            )
        )
    lat = [
        rp.Line(name, x, result.runs[name].latency_ms, colors[name], width=1) for name in POLICIES
    ]
    allat = np.concatenate([result.runs[n].latency_ms for n in POLICIES])
    clip = float(np.percentile(allat, 99)) * 2.0 if len(allat) else None
    title = "Modelled P95 latency"
    if clip is not None and float(allat.max()) > clip:
        title += f" (axis clipped at {clip:,.0f} ms; peak {float(allat.max()):,.0f} ms)"
    blocks.append(rp.chart(title=title, lines=lat, ylabel="ms", ymax=clip))
    blocks.append("<h2>Policies</h2><pre>" + _html_json(info.get("policy_config", {})) + "</pre>")
    return rp.page("Backtest report", blocks)


def _html_json(value: Any) -> str:
    import html
    import json

    return html.escape(json.dumps(value, indent=2, default=str))
