"""The workload emulator's model: demand schedule, latency, queue and error rate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.workload import TRACE, Model, Schedule, load_trace


def test_schedule_interpolates_linearly_and_holds_its_ends() -> None:
    s = Schedule([[0, 10.0], [10, 30.0]], now=100.0)
    assert s.at(90.0) == 10.0
    assert s.at(105.0) == pytest.approx(20.0)
    assert s.at(500.0) == 30.0


def test_trace_is_compressed_one_recorded_hour_into_the_given_seconds() -> None:
    points = load_trace(TRACE, seconds_per_hour=3.0)
    assert points[0][0] == 0.0
    assert points[1][0] == pytest.approx(0.5)  # 10 recorded minutes
    assert len(points) == 144  # one day of 10-minute samples
    assert min(v for _, v in points) > 0


def test_p95_doubles_at_half_utilisation_and_saturates_without_replicas() -> None:
    m = Model(capacity_rps=10.0, base_latency_ms=50.0)
    assert m.p95(10.0, 2) == pytest.approx(100.0)
    assert m.p95(10.0, 0) == pytest.approx(5000.0)


def test_queue_grows_with_the_demand_above_capacity() -> None:
    m = Model(capacity_rps=10.0)
    assert m.queue(0.0, 2) == 0.0
    assert m.queue(30.0, 2) > m.queue(20.0, 2) + 9.0


def test_error_rate_is_the_share_of_tasks_on_the_bad_tag() -> None:
    m = Model(bad_tag="v2")
    assert m.error_rate(["img:v1", "img:v1"], "img:v1") == pytest.approx(0.001)
    assert m.error_rate(["img:v2@sha256:ab", "img:v1"], "img:v2") == pytest.approx(0.1005)
    assert m.error_rate([], "img:v2") == pytest.approx(0.2)
    assert not m.is_bad("registry:5000/img")


@given(
    demand=st.floats(min_value=0, max_value=1000),
    replicas=st.integers(min_value=0, max_value=50),
)
def test_more_replicas_never_raise_latency_or_queue(demand: float, replicas: int) -> None:
    m = Model()
    assert m.p95(demand, replicas + 1) <= m.p95(demand, replicas)
    assert m.queue(demand, replicas + 1) <= m.queue(demand, replicas) + 1e-9
