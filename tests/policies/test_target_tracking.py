"""HPA-style target tracking: desired = ceil(current * value / target), with tolerance."""

from __future__ import annotations

import pytest
from policy_kit import ctx, journalable, one_sentence

from policies.base import Bounds
from policies.tracking import MetricTarget, TrackingPolicy, TrackingSpec, desired_replicas
from policies.types import Scale

CPU = MetricTarget(signal="cpu", target=0.5, kind="average")
RPS = MetricTarget(signal="rps", target=100.0, kind="total")


def _decide(spec, values, replicas=4, stale=(), bounds=None, memory=None):
    (d,) = TrackingPolicy("hpa", spec).evaluate(
        ctx(values=values, replicas=replicas, stale=stale, bounds=bounds, memory=memory)
    )
    assert one_sentence(d.reason), d.reason
    assert journalable(d)
    return d


@pytest.mark.parametrize(
    ("current", "value", "target", "kind", "expected"),
    [
        (4, 0.75, 0.5, "average", 6),  # HPA docs: ceil(4 * 0.75 / 0.5)
        (4, 0.54, 0.5, "average", 4),  # ratio 1.08 within tolerance 0.1
        (4, 0.56, 0.5, "average", 5),  # ratio 1.12: ceil(4.48)
        (4, 0.46, 0.5, "average", 4),  # ratio 0.92 within tolerance
        (4, 0.2, 0.5, "average", 2),  # ceil(1.6)
        (3, 0.7, 0.7, "average", 3),  # exact: no float round-up
        (5, 7, 0.7, "average", 50),
        (2, 950.0, 100.0, "total", 10),  # ceil(950 / 100)
        (10, 120.0, 100.0, "total", 2),  # ceil(1.2)
        (0, 250.0, 100.0, "total", 3),  # from zero replicas on a total
        (0, 100.0, 100.0, "total", 1),  # one replica's worth, within tolerance of 1
        (0, 95.0, 100.0, "total", 1),
    ],
)
def test_hpa_formula(current, value, target, kind, expected):
    want, _ = desired_replicas(
        current=current, value=value, target=target, kind=kind, tolerance=0.1
    )
    assert want == expected


def test_several_metrics_the_largest_recommendation_wins():
    d = _decide(TrackingSpec(metrics=(CPU, RPS)), {"cpu": 0.75, "rps": 900.0})
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 9
    assert d.inputs["metrics"]["cpu"]["recommendation"] == 6
    assert d.reason.startswith("rps 900 against target 100 asks for 9 replicas")


def test_within_tolerance_holds_and_votes_for_the_current_count():
    d = _decide(TrackingSpec(metrics=(CPU,)), {"cpu": 0.52})
    assert d.is_hold
    assert d.recommendation == 4
    assert "tolerance" in d.reason


def test_scale_down_is_clamped_to_min_replicas():
    d = _decide(TrackingSpec(metrics=(CPU,)), {"cpu": 0.01}, bounds=Bounds(3, 10, 60))
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 3


def test_per_target_utilisation_targets_override_the_default():
    metric = MetricTarget(signal="cpu", target=0.5, per_target={"api": 0.25})
    d = _decide(TrackingSpec(metrics=(metric,)), {"cpu": 0.5})
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 8
    other = MetricTarget(signal="cpu", target=0.5, per_target={"worker": 0.25})
    assert _decide(TrackingSpec(metrics=(other,)), {"cpu": 0.5}).is_hold


def test_partial_data_scales_up_on_the_known_metrics():
    d = _decide(TrackingSpec(metrics=(CPU, RPS)), {"cpu": 1.0})
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 8
    assert "ignoring rps is missing" in d.reason


def test_partial_data_never_scales_down():
    d = _decide(TrackingSpec(metrics=(CPU, RPS)), {"cpu": 0.1, "rps": 50.0}, stale=("rps",))
    assert d.is_hold
    assert d.reason.startswith("stale: rps is stale")
    assert d.recommendation == 4


def test_no_data_holds():
    d = _decide(TrackingSpec(metrics=(CPU,)), {})
    assert d.is_hold
    assert d.reason.startswith("stale: cpu is missing")


@pytest.mark.parametrize(
    "make",
    [
        lambda: MetricTarget(target=0.0),
        lambda: MetricTarget(per_target={"api": -1.0}),
        lambda: TrackingSpec(metrics=()),
        lambda: TrackingSpec(tolerance=1.5),
    ],
)
def test_invalid_tracking_specs_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_a_target_scaled_to_zero_gets_a_replica_for_one_replicas_worth_of_load():
    # ratio 1.0 is within the tolerance, of one replica (the formula's base), not of zero:
    # this used to hold 0 replicas while 50 rps (ratio 0.5) got one
    d = _decide(TrackingSpec(metrics=(RPS,)), {"rps": 100.0}, replicas=0, bounds=Bounds(0, 10))
    assert isinstance(d.action, Scale)
    assert d.action.replicas == 1
