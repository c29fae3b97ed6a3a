"""Invariants of the policies over random inputs (Hypothesis)."""

from __future__ import annotations

import itertools
import math

import policy_runbook as runbook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_kit import Loop, ctx, filled, flat_forecast, journalable, one_sentence

from policies.base import Bounds
from policies.predictive import PredictivePolicy, PredictiveSpec
from policies.scaling import ScaleBehavior, vote
from policies.schedule import SchedulePolicy, ScheduleSpec, ScheduleWindow
from policies.tracking import MetricTarget, TrackingPolicy, TrackingSpec
from policies.types import Notify, Restart, Rollback, Scale, TargetState

T0 = 1_000_000.0
SIGNALS = ("queue_length", "backlog", "p95_latency_ms")
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Calm, busy and bad ranges of each signal under the runbook thresholds.
CALM = {"queue_length": (0.0, 0.99), "backlog": (0.0, 9.9), "p95_latency_ms": (20.0, 99.0)}
BUSY = {"queue_length": (5.1, 80.0), "backlog": (101.0, 900.0), "p95_latency_ms": (151.0, 900.0)}
BAD = [(math.nan, False), (math.inf, False), (None, False), (0.1, True), (500.0, True)]


def _segment(kind: str, length: int, u: float, bad_signal: str, bad: tuple) -> list[dict]:
    """``length`` ticks in which every signal is calm or busy at level ``u`` (a little
    noise per tick), or calm except ``bad_signal`` which is unusable."""
    out = []
    for i in range(length):
        w = (u + 0.37 * i) % 1.0
        ranges = CALM if kind != "busy" else BUSY
        readings = {s: (lo + w * (hi - lo), False) for s, (lo, hi) in ranges.items()}
        if kind == "bad":
            readings[bad_signal] = bad
        out.append(readings)
    return out


segment = st.builds(
    _segment,
    st.sampled_from(["calm", "calm", "busy", "bad"]),
    st.integers(1, 15),
    st.floats(0, 1),
    st.sampled_from(SIGNALS),
    st.sampled_from(BAD),
)
ticks_strategy = st.lists(segment, min_size=1, max_size=8).map(
    lambda segs: [t for seg in segs for t in seg]
)


def _scaling_rules(*, schedule_too: bool = True):
    schedule = SchedulePolicy(
        "hours",
        ScheduleSpec(windows=(ScheduleWindow(cron="*/20 * * * *", duration=600, min_replicas=5),)),
    )
    predictive = PredictivePolicy("ahead", PredictiveSpec(signal="queue_length", above=5))
    tracking = TrackingPolicy(
        "hpa",
        TrackingSpec(
            metrics=(MetricTarget(signal="p95_latency_ms", target=120.0, kind="average"),)
        ),
    )
    rules = [runbook.queue(), runbook.backlog(), runbook.latency(), predictive, tracking]
    return [*rules, schedule] if schedule_too else rules


def _drive(loop: Loop, ticks, *, step: float = 60.0):
    for i, readings in enumerate(ticks):
        now = T0 + step * i
        values = {
            s: (math.nan if v is None else v) for s, (v, _) in readings.items() if v is not None
        }
        stale = [s for s, (v, is_stale) in readings.items() if is_stale and v is not None]
        q = values.get("queue_length", 0.0)
        fc = {"queue_length": flat_forecast(now, mean=q, upper=q * 1.5 if math.isfinite(q) else q)}
        loop.tick(now, values, stale=stale, forecasts=fc)
    for d in loop.decisions:
        assert one_sentence(d.reason), d.reason
        assert journalable(d)


def _usable(readings, signal):
    v, is_stale = readings[signal]
    return v is not None and not is_stale and math.isfinite(v)


@PROPS
@given(
    ticks=ticks_strategy,
    lo=st.integers(0, 5),
    span=st.integers(0, 8),
    start=st.integers(0, 20),
)
def test_replicas_always_stay_within_bounds(ticks, lo, span, start):
    bounds = Bounds(lo, lo + span, 60.0)
    loop = Loop(_scaling_rules(), bounds=bounds, replicas=start)
    _drive(loop, ticks)
    for _, d in loop.actions:
        if isinstance(d.action, Scale):
            assert lo <= d.action.replicas <= lo + span
    assert all(lo <= r <= lo + span for r in loop.path)  # from the first tick on


@PROPS
@given(
    v=st.sampled_from([math.nan, math.inf, -math.inf, None, 3.0, 700.0]),
    stale=st.booleans(),
    replicas=st.integers(0, 12),
    held=st.sampled_from([0, 300, 900]),
)
def test_no_scale_action_on_stale_nan_or_missing_input(v, stale, replicas, held):
    if v is not None and math.isfinite(v) and not stale:
        stale = True  # a finite value is only interesting here when stale
    for policy, signal in [
        (runbook.queue(), "queue_length"),
        (runbook.latency(), "p95_latency_ms"),
        (PredictivePolicy("ahead", PredictiveSpec(signal="queue_length", above=5)), "queue_length"),
        (
            TrackingPolicy("hpa", TrackingSpec(metrics=(MetricTarget(signal="queue_length"),))),
            "queue_length",
        ),
    ]:
        values = {} if v is None else {signal: v}
        c = ctx(
            T0,
            values=values,
            stale=[signal] if stale else [],
            replicas=replicas,
            history=filled(signal, 700.0 if v is None else v, now=T0, seconds=held),
            forecasts={signal: flat_forecast(T0, mean=900.0, upper=990.0)},
        )
        for d in policy.evaluate(c):
            assert d.action is None
            assert d.reason.startswith("stale:")
            assert d.recommendation == replicas


@PROPS
@given(ticks=ticks_strategy, start=st.integers(2, 10))
def test_no_scale_down_on_missing_data(ticks, start):
    loop = Loop(_scaling_rules(), replicas=start)
    _drive(loop, ticks)
    for (now, _, out), readings in zip(loop.ticks, ticks, strict=True):
        if not all(_usable(readings, s) for s in SIGNALS):
            if out is not None and isinstance(out.action, Scale):
                assert out.action.replicas >= out.action.current, (now, out.reason)


@PROPS
@given(
    ticks=ticks_strategy,
    start=st.integers(2, 10),
    window=st.sampled_from([0.0, 60.0, 300.0]),
)
def test_scale_down_never_faster_than_the_stabilisation_window(ticks, start, window):
    behavior = ScaleBehavior(scale_down_window=window, max_scale_down=0)
    loop = Loop(_scaling_rules(), replicas=start, behavior=behavior)
    _drive(loop, ticks)
    combined = []
    for now, decisions, out in loop.ticks:
        votes = [v for d in decisions if (v := vote(d)) is not None]
        if votes:
            combined.append((now, min(max(max(votes), 2), 10)))
        if (
            out is not None
            and isinstance(out.action, Scale)
            and out.action.replicas < out.action.current
        ):
            recent = [v for t, v in combined if t > now - window - 1e-9]
            assert max(recent) <= out.action.replicas


@PROPS
@given(
    values=st.fixed_dictionaries({s: st.floats(0, 1000, allow_nan=False) for s in SIGNALS}),
    start=st.integers(2, 10),
    n=st.integers(10, 150),
)
def test_a_constant_input_produces_no_oscillation(values, start, n):
    loop = Loop(_scaling_rules(schedule_too=False), replicas=start)
    path = [start]
    for i in range(n):
        now = T0 + 60 * i
        q = values["queue_length"]
        loop.tick(now, values, forecasts={"queue_length": flat_forecast(now, mean=q, upper=q)})
        path.append(loop.replicas)
    moves = [b - a for a, b in itertools.pairwise(path) if b != a]
    assert all(m > 0 for m in moves) or all(m < 0 for m in moves)


@PROPS
@given(
    failing=st.lists(st.booleans(), min_size=1, max_size=200),
    gaps=st.lists(st.sampled_from([1.0, 2.0, 3.0, 5.0, 15.0, 120.0]), min_size=200, max_size=200),
)
def test_restart_backoff_and_attempt_limit_hold_over_any_sequence(failing, gaps):
    policy = runbook.restart()
    memory: dict[str, object] = {}
    now, restarts, notes = T0, [], []
    for bad, gap in zip(failing, gaps, strict=False):
        (d,) = policy.evaluate(
            ctx(now, values={"probe_failures": 3.0 if bad else 0.0}, memory=memory)
        )
        assert bad or d.action is None
        if isinstance(d.action, Restart):
            restarts.append((now, d.action.attempt))
        if isinstance(d.action, Notify):
            notes.append(now)
        now += gap
    for i, (t, attempt) in enumerate(restarts):
        in_window = [u for u, _ in restarts[: i + 1] if t - u < 600]
        assert len(in_window) <= 3
        if i:
            prev_t, prev_attempt = restarts[i - 1]
            assert t - prev_t >= (2, 4, 8, 16)[min(prev_attempt, 4) - 1] or attempt == 1
            assert t - prev_t >= 2
    for t in notes:  # escalation only after three attempts in the window
        assert len([u for u, _ in restarts if u <= t and t - u < 600]) == 3


@PROPS
@given(
    events=st.lists(
        st.tuples(st.booleans(), st.floats(0, 1, allow_nan=False), st.sampled_from([15.0, 60.0])),
        min_size=1,
        max_size=150,
    )
)
def test_a_deploy_is_rolled_back_at_most_once_over_any_sequence(events):
    policy = runbook.rollback()
    memory: dict[str, object] = {}
    now, deploy, n, rolled = T0, "d0", 0, []
    history = filled("error_rate", 0.0, now=now, seconds=0)
    updated = now
    for redeploy, err, gap in events:
        if redeploy and now - updated > 60:
            n += 1
            deploy, updated = f"d{n}", now
        history.now = now
        history.record("error_rate", now, err)
        state = TargetState(
            "api", 4, 4, updated_at=updated, update_state="completed", deploy_id=deploy
        )
        for d in policy.evaluate(
            ctx(now, values={"error_rate": err}, history=history, state=state, memory=memory)
        ):
            if isinstance(d.action, Rollback):
                rolled.append(d.action.deploy_id)
        now += gap
    assert len(rolled) == len(set(rolled))


def test_calm_data_does_scale_in_so_the_properties_above_are_not_vacuous():
    loop = Loop(_scaling_rules(), replicas=8)
    calm = {s: (CALM[s][1] / 2, False) for s in SIGNALS}
    _drive(loop, [calm] * 40)
    downs = [
        d
        for _, d in loop.actions
        if isinstance(d.action, Scale) and d.action.replicas < d.action.current
    ]
    assert len(downs) >= 3
