"""Backtest: the capacity model, the oracle and the scores, checked by hand."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import autoscaler.ahead as ahead_module
from autoscaler.backtest import (
    CapacitySpec,
    Cluster,
    backtest,
    oracle_desired,
    score,
)
from autoscaler.cli import main
from autoscaler.replay import read_value_csv

EXAMPLES = Path(__file__).parents[2] / "examples"
T0 = 1_700_001_000.0  # a multiple of 15 s, so ticks fall on the samples
SPEC = CapacitySpec(
    capacity_per_replica=100.0,
    startup_delay=60.0,
    target_utilization=0.5,
    min_replicas=1,
    max_replicas=10,
    interval=15.0,
    price_per_replica_hour=2.0,
)
# Demand steps from 100 to 300 req/s at T0 + 600 s and the trace ends at T0 + 1200 s.
TIMES = np.array([T0, T0 + 600.0, T0 + 1200.0])
VALUES = np.array([100.0, 300.0, 300.0])


def write_demand(path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        for t, v in zip(TIMES, VALUES, strict=True):
            w.writerow([f"{t:.0f}", f"{v:g}"])
    return path


async def test_oracle_requests_a_start_up_delay_ahead_and_never_violates() -> None:
    result = await backtest(TIMES, VALUES, SPEC)
    oracle = result.scores["oracle"]
    # Needed: ceil(100 / (100 * 0.5)) = 2 before the step, ceil(300 / 50) = 6 after.
    # The oracle asks for 6 at T0 + 540 (60 s ahead), so they are ready at T0 + 600.
    # Replica-seconds over the 1200 s span: 2 * 540 + 6 * 660 = 5040 -> 1.4 h.
    assert oracle["violation_minutes"] == 0
    assert oracle["replica_hours"] == pytest.approx(5040 / 3600)
    assert oracle["actions"] == 1
    assert oracle["cost"] == pytest.approx(5040 / 3600 * 2.0)
    run = result.runs["oracle"]
    k = list(result.ticks).index(T0 + 540)
    assert run.desired[k - 1] == 2 and run.desired[k] == 6
    assert run.ready[k] == 2 and run.ready[k + 4] == 6


@pytest.mark.parametrize(
    ("interval", "delay", "step_at"),
    [(15.0, 0.0, 300.0), (0.3, 0.9, 20.0)],  # 10 req/s, then 900 from T0 + step_at
)
async def test_the_oracle_is_a_lower_bound_with_no_or_a_fractional_start_up_delay(
    interval: float, delay: float, step_at: float
) -> None:
    # with no delay a requested replica serves the tick it was asked for; with 0.3 s ticks
    # it is ready exactly three ticks later, whatever the float error in epoch seconds
    spec = dataclasses.replace(SPEC, interval=interval, startup_delay=delay)
    times = np.array([T0 + 0.1, T0 + step_at, T0 + 2 * step_at])
    result = await backtest(times, np.array([10.0, 900.0, 900.0]), spec, history=60.0)
    assert result.scores["oracle"]["violation_minutes"] == 0


async def test_reactive_baseline_scores_match_a_hand_computation() -> None:
    result = await backtest(TIMES, VALUES, SPEC)
    reactive = result.scores["reactive"]
    # At T0 + 600 the two ready replicas saturate: utilisation reads 1.0 against 0.5, so the
    # HPA formula asks for ceil(2 * 1.0 / 0.5) = 4. While they start, the requested four
    # read 200 / 400 = 0.5 (on target). At T0 + 660 four are ready and read 300 / 400 =
    # 0.75: ceil(4 * 1.5) = 6, ready at T0 + 720, which covers 300 req/s.
    # Violation: [600, 660) only (capacity 200 < 300), 1 minute; [660, 720) has 400.
    # Replica-seconds: 2 * 600 + 4 * 60 + 6 * 540 = 4680.
    assert reactive["violation_minutes"] == pytest.approx(1.0)
    assert reactive["replica_hours"] == pytest.approx(4680 / 3600)
    assert reactive["actions"] == 2


def test_score_counts_violations_against_ready_capacity_and_cost_on_requested() -> None:
    demand = np.array([100.0, 300.0, 300.0, 300.0, 300.0])
    desired = np.array([2, 6, 6, 6, 6])
    ready = np.array([2, 2, 2, 6, 6])
    s = score(desired=desired, ready=ready, demand=demand, spec=SPEC, actions=1)
    # The last tick only closes the span: 4 intervals of 15 s, two of them short.
    assert s["violation_minutes"] == pytest.approx(0.5)
    assert s["replica_hours"] == pytest.approx((2 + 6 + 6 + 6) * 15 / 3600)
    assert s["actions"] == 1


def test_oracle_holds_the_largest_need_within_the_start_up_delay() -> None:
    demand = np.array([50.0, 50.0, 50.0, 50.0, 500.0, 50.0, 50.0])
    want = oracle_desired(demand, SPEC)
    # need: [1, 1, 1, 1, 10, 1, 1]; 60 s = 4 ticks ahead
    assert want.tolist() == [10, 10, 10, 10, 10, 1, 1]


def test_removal_is_immediate_and_cancels_starting_replicas_first() -> None:
    c = Cluster(target="service", startup_delay=60.0, replicas=2, now=0.0)
    c.set_replicas(5)
    assert (c.desired, c.ready) == (5, 2)
    c.advance(30.0)
    c.set_replicas(3)  # two of the three starting ones are cancelled
    assert (c.desired, c.ready, len(c.pending)) == (3, 2, 1)
    c.advance(60.0)
    assert c.ready == 3
    c.set_replicas(1)
    assert (c.desired, c.ready) == (1, 1)


def test_backtest_command_writes_scores_timeline_and_report(tmp_path: Path) -> None:
    demand = write_demand(tmp_path / "demand.csv")
    out = tmp_path / "out"
    code = main(
        [
            "backtest",
            "--demand",
            str(demand),
            "--capacity-per-replica",
            "100",
            "--startup-delay",
            "60s",
            "--target-utilization",
            "0.5",
            "--min",
            "1",
            "--max",
            "10",
            "--interval",
            "15s",
            "--out",
            str(out),
            "--price-per-replica-hour",
            "2",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["policies"]) == {"predictive", "reactive", "oracle"}
    for scores in summary["policies"].values():
        assert {"violation_minutes", "replica_hours", "actions", "cost"} <= scores.keys()
    rows = (out / "timeline.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "timestamp,policy,demand,desired_replicas,ready_replicas"
    assert len(rows) == 1 + 3 * 81
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") >= 5 and "<script" not in page
    assert "demand forecast 60 s ahead, with interval" in page


async def test_forecasts_made_ahead_give_the_same_backtest(monkeypatch: pytest.MonkeyPatch) -> None:
    # two days of the taxi trace: demand is recorded, so the predictive engine's forecasts
    # can be made in a second process; the result must not change
    times, values = read_value_csv(EXAMPLES / "data" / "nyc_taxi_2w.csv")
    keep = times < times[0] + 2 * 86400
    spec = CapacitySpec(capacity_per_replica=500.0, interval=60.0, max_replicas=200)
    results = {}
    for ahead, threshold in (("ahead", 0), ("inline", 10**9)):
        monkeypatch.setattr(ahead_module, "MIN_TICKS", threshold)
        results[ahead] = await backtest(times[keep], values[keep], spec, history=86400.0)
    a, b = results["ahead"], results["inline"]
    assert a.scores == b.scores
    for name in ("predictive", "reactive"):
        np.testing.assert_array_equal(a.runs[name].desired, b.runs[name].desired)
        np.testing.assert_array_equal(a.runs[name].ready, b.runs[name].ready)
    fa, fb = a.runs["predictive"].forecast, b.runs["predictive"].forecast
    assert fa is not None and fb is not None and len(fb.mean) > 0.9 * len(b.ticks)
    for field in ("issued", "mean", "lower", "upper"):
        np.testing.assert_array_equal(getattr(fa, field), getattr(fb, field))
    assert b.runs["reactive"].forecast is None  # the baseline reads none, so makes none


def test_the_timeline_carries_demand_as_recorded(tmp_path: Path) -> None:
    # demand was written to 6 digits: 1000.0004 req/s read "1000", and 11 replicas of 100
    # req/s looked like one too many where the summary counted them as needed
    demand = tmp_path / "demand.csv"
    values = [1000.0004, 1000.0004, 299.5, 12345678.9, 3.0]
    rows = "".join(f"{T0 + 60 * k:.0f},{v!r}\n" for k, v in enumerate(values))
    demand.write_text("timestamp,value\n" + rows, encoding="utf-8")
    out = tmp_path / "out"
    args = ["--capacity-per-replica", "100", "--target-utilization", "1", "--max", "1000000"]
    args += ["--interval", "60s", "--startup-delay", "0s", "--no-progress"]
    assert main(["backtest", "--demand", str(demand), *args, "--out", str(out)]) == 0
    with (out / "timeline.csv").open(encoding="utf-8") as f:
        oracle = [r for r in csv.DictReader(f) if r["policy"] == "oracle"]
    assert [float(r["demand"]) for r in oracle] == values
    assert oracle[0]["ready_replicas"] == "11" and oracle[-1]["demand"] == "3"
