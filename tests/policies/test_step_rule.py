"""Step / threshold rules with `for` durations, on the runbook's numbers."""

from __future__ import annotations

import dataclasses
import math

import policy_runbook as runbook
import pytest
from policy_kit import SeriesHistory, ctx, filled, journalable, one_sentence

from autoscaler.sources.base import Sample
from autoscaler.store import WindowStore
from policies.base import Bounds
from policies.step import StepPolicy, StepSpec
from policies.types import Scale, TargetState

NOW = 1_000_000.0


def _replicas(decisions):  # the scale target, or None for a hold
    (d,) = decisions
    assert one_sentence(d.reason), d.reason
    assert journalable(d)
    return d.action.replicas if isinstance(d.action, Scale) else None


@pytest.mark.parametrize(
    ("policy", "signal", "value", "held_seconds", "replicas", "expected"),
    [
        # queue length > 5: +2 at once
        (runbook.queue, "queue_length", 6.0, 0, 4, 6),
        (runbook.queue, "queue_length", 5.0, 900, 4, None),  # not above 5
        (runbook.queue, "queue_length", 40.0, 0, 9, 10),  # clamped to max
        (runbook.queue, "queue_length", 40.0, 0, 10, None),  # already at max
        # queue < 1 for 10 minutes: -1
        (runbook.queue, "queue_length", 0.5, 600, 4, 3),
        (runbook.queue, "queue_length", 0.5, 540, 4, None),  # only 9 minutes
        (runbook.queue, "queue_length", 0.5, 600, 2, None),  # already at min
        (runbook.queue, "queue_length", 3.0, 3600, 4, None),  # inside the band
        # backlog > 100: +2 at once
        (runbook.backlog, "backlog", 101.0, 0, 3, 5),
        (runbook.backlog, "backlog", 100.0, 600, 3, None),
        # P95 > 150 ms for 2 minutes: +2
        (runbook.latency, "p95_latency_ms", 160.0, 120, 4, 6),
        (runbook.latency, "p95_latency_ms", 160.0, 90, 4, None),
        (runbook.latency, "p95_latency_ms", 150.0, 600, 4, None),
        (runbook.latency, "p95_latency_ms", 80.0, 600, 4, 3),
    ],
)
def test_runbook_step_rules(policy, signal, value, held_seconds, replicas, expected):
    history = filled(signal, value, now=NOW, seconds=held_seconds)
    decisions = policy().evaluate(
        ctx(NOW, values={signal: value}, history=history, replicas=replicas)
    )
    assert _replicas(decisions) == expected


@pytest.mark.parametrize(
    ("value", "held", "replicas", "said"),
    [
        (40.0, 0, 10, "40 > 5 but 10 is already the maximum"),
        (40.0, 0, 12, "40 > 5 but 12 is above the maximum 10"),  # scaled by hand past it
        (0.5, 600, 2, "0.5 < 1 but 2 is already the minimum"),
        (0.5, 600, 1, "0.5 < 1 but 1 is below the minimum 2"),
    ],
)
def test_a_step_the_bounds_hold_back_says_where_the_target_stands(value, held, replicas, said):
    history = filled("queue_length", value, now=NOW, seconds=held)
    ctx_ = ctx(NOW, values={"queue_length": value}, history=history, replicas=replicas)
    (d,) = runbook.queue().evaluate(ctx_)
    assert d.action is None and said in d.reason


def test_a_gap_in_the_window_resets_the_for_duration():
    history = filled("queue_length", 0.5, now=NOW, seconds=600)
    history.data[("api", "queue_length")][1][10] = math.nan
    decisions = runbook.queue().evaluate(ctx(NOW, values={"queue_length": 0.5}, history=history))
    assert decisions[0].is_hold
    assert decisions[0].recommendation == 4


def test_one_sample_above_the_threshold_in_the_window_resets_the_for_duration():
    history = filled("p95_latency_ms", 200.0, now=NOW, seconds=120)
    history.data[("api", "p95_latency_ms")][1][3] = 149.0
    decisions = runbook.latency().evaluate(
        ctx(NOW, values={"p95_latency_ms": 200.0}, history=history)
    )
    assert decisions[0].is_hold
    assert "not yet for 120 s" in decisions[0].reason


@pytest.mark.parametrize(
    ("values", "stale", "why"),
    [
        ({}, (), "queue_length is missing"),
        ({"queue_length": 0.1}, ("queue_length",), "queue_length is stale"),
        ({"queue_length": math.nan}, (), "queue_length is not finite"),
        ({"queue_length": math.inf}, (), "queue_length is not finite"),
    ],
)
def test_no_scaling_on_stale_or_missing_data(values, stale, why):
    history = filled("queue_length", 0.1, now=NOW, seconds=3600)
    (d,) = runbook.queue().evaluate(ctx(NOW, values=values, stale=stale, history=history))
    assert d.is_hold
    assert d.reason.startswith(f"stale: {why}")
    assert d.recommendation == 4  # votes to keep the current count
    assert journalable(d)


def test_fallback_replicas_apply_after_n_failed_evaluations_and_only_upwards():
    spec = StepSpec(signal="queue_length", above=5, below=1, fallback_replicas=6, fallback_after=3)
    policy = StepPolicy("queue", spec)
    memory: dict[str, object] = {}
    outcomes = [_replicas(policy.evaluate(ctx(NOW + i, memory=memory))) for i in range(4)]
    assert outcomes == [None, None, 6, 6]
    # a fresh value resets the count
    policy.evaluate(ctx(NOW + 5, values={"queue_length": 3.0}, memory=memory))
    assert _replicas(policy.evaluate(ctx(NOW + 6, memory=memory))) is None
    # above the fallback already: hold, never scale in on missing data
    memory = {}
    outcomes = [
        _replicas(policy.evaluate(ctx(NOW + i, memory=memory, replicas=8))) for i in range(5)
    ]
    assert outcomes == [None] * 5


def test_no_scaling_while_a_deploy_is_in_progress():
    state = TargetState("api", 4, 3, update_state="updating")
    (d,) = runbook.queue().evaluate(ctx(NOW, values={"queue_length": 50.0}, state=state))
    assert d.is_hold
    assert "deploy is in progress" in d.reason
    assert d.recommendation == 4


def test_no_replica_count_means_no_opinion():
    (d,) = runbook.queue().evaluate(ctx(NOW, values={"queue_length": 50.0}, replicas=None))
    assert d.is_hold
    assert d.recommendation is None


def test_step_respects_custom_bounds():
    (d,) = runbook.queue().evaluate(
        ctx(NOW, values={"queue_length": 50.0}, replicas=3, bounds=Bounds(1, 4, 60))
    )
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 4


def test_reasons_name_the_value_threshold_and_duration():
    history = filled("p95_latency_ms", 180.0, now=NOW, seconds=120)
    (d,) = runbook.latency().evaluate(ctx(NOW, values={"p95_latency_ms": 180.0}, history=history))
    assert d.reason == "p95_latency_ms 180 > 150 for 120 s: scale up 4 -> 6"
    assert d.inputs["value"] == 180.0
    assert d.inputs["above"] == 150
    assert d.policy == "latency"


def test_a_short_history_does_not_satisfy_a_for_duration():
    history = SeriesHistory(now=NOW)
    history.record("queue_length", NOW, 0.2)
    (d,) = runbook.queue().evaluate(ctx(NOW, values={"queue_length": 0.2}, history=history))
    assert d.is_hold


@pytest.mark.parametrize(
    "kwargs", [{"above": 1.0, "below": 2.0}, {"scale_up_step": 0}, {"fallback_after": 0}]
)
def test_inconsistent_step_specs_are_rejected(kwargs):
    with pytest.raises(ValueError):
        StepSpec(**kwargs)


def test_a_for_shorter_than_the_tick_interval_holds_on_the_real_window_store():
    # for = 10 s, passes every 15 s: the window holds one sample, the current one; it used
    # to be taken for a short history, so the rule never scaled up
    store = WindowStore(interval=15)
    policy = StepPolicy("queue", StepSpec(signal="queue_length", above=5, for_=10))
    decisions = []
    for now in (NOW, NOW + 15):
        store.ingest([Sample("api", "queue_length", 9.0, now)])
        store.advance(now)
        c = dataclasses.replace(ctx(now, replicas=4), observations=store.latest(now).of("api"))
        c.history = store
        decisions.extend(policy.evaluate(c))
    assert [_replicas([d]) for d in decisions] == [6, 6]
    assert decisions[0].reason == "queue_length 9 > 5 for 10 s: scale up 4 -> 6"
