"""End to end, on real parts: the autoscaler sidecar (image from the Dockerfile, deployed with
deploy/stack.yml) scales and rolls back a real swarm service from metrics that a real
Prometheus scrapes off the workload emulator, which in turn reads the service's real running
replicas and images from Docker.

Time is compressed (tests/e2e/config.toml: 1 s ticks and scrapes, cooldowns and `for`
durations of seconds). The tests share one deployment and run in file order; each sets the
demand it needs first and waits (bounded polls) for the state it starts from.

Demand levels come from the recorded ServeGen deepseek-r1 day (trace_deepseek_r1.csv):
the quietest 10 minutes (4.3 req/s) and the peak (42.5 req/s).
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.deployment import (
    MAX_REPLICAS,
    MIN_REPLICAS,
    OBJECTIVE_MS,
    Deployment,
    build_image,
    wait_for,
)
from tests.e2e.workload import TRACE, load_trace
from tests.harness.dockerd import IMAGE_V1, IMAGE_V2, HarnessError
from tests.harness.prometheus import ServerUnavailable, unavailable

# The first test also pays for the module's deployment, which on a fresh machine builds the
# debootstrap base and the service image (several minutes): above the suite's 300 s default.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

_TRACE = [v for _, v in load_trace(TRACE, seconds_per_hour=1.0)]
LOW, PEAK = min(_TRACE), max(_TRACE)
RAMP_S = 60.0
"""Seconds of the ramp from LOW to PEAK: with the 20 s scale-up cooldown, each scale-up step
is due before the next breach (see tests/e2e/config.toml)."""
SCRAPE_S = 1.0
SCALE_UP_COOLDOWN_S = 20.0
SCALE_DOWN_FOR_S = 3.0


@pytest.fixture(scope="module")
def loop() -> Iterator[Deployment]:
    from tests.deploy.helpers import need_docker

    need_docker()
    image = build_image()
    dep = Deployment(image=image)
    try:
        try:
            dep.up()
        except (HarnessError, ServerUnavailable) as exc:
            unavailable(f"closed loop could not start: {exc}")
        yield dep
    finally:
        dep.down()


def settle(loop: Deployment, demand: float, replicas: int, *, limit: float = 120) -> None:
    """Hold ``demand`` and wait until exactly ``replicas`` tasks run and the spec agrees."""
    loop.set_demand([[0, demand]])
    try:
        wait_for(
            f"{replicas} running replicas",
            lambda: loop.desired() == replicas and loop.running() == replicas,
            limit=limit,
            every=0.5,
        )
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{loop.logs()}")


def first(rows: list[dict[str, Any]], pred: Any) -> dict[str, Any] | None:
    return next((r for r in rows if pred(r)), None)


def test_rising_load_scales_up_before_the_p95_objective_is_breached(loop: Deployment) -> None:
    settle(loop, LOW, MIN_REPLICAS)
    t0 = time.time()
    loop.set_demand([[0, LOW], [RAMP_S, PEAK]])

    wait_for(
        f"{MAX_REPLICAS} running replicas at the peak",
        lambda: loop.running() == MAX_REPLICAS,
        limit=RAMP_S + 60,
        every=0.5,
    )
    ups = loop.actions("scale_up", since=t0)
    assert ups, loop.logs()
    history = loop.history(since=t0)
    breach = first(history, lambda s: s["p95_latency_ms"] > OBJECTIVE_MS)
    # The rule scales at 100 ms, under the 150 ms objective: the first scale-up is journaled
    # before the workload's P95 crosses the objective (or within one scrape of it).
    if breach is not None:
        assert ups[0]["at"] <= breach["at"] + SCRAPE_S, (ups[0], breach)
    # Every step went up, within the label bounds.
    for r in ups:
        assert int(r["params"]["replicas"]) > int(r["params"]["from"])
        assert int(r["params"]["replicas"]) <= MAX_REPLICAS

    # Latency recovers: once the demand is at its peak and every replica runs, the P95 is
    # under the objective again.
    wait_for("the ramp to end", lambda: loop.state()["demand"] >= PEAK - 1e-6, limit=RAMP_S + 5)
    state = wait_for(
        "P95 under the objective at the peak",
        lambda: (
            (s := loop.state())["replicas"] == MAX_REPLICAS
            and s["p95_latency_ms"] < OBJECTIVE_MS
            and s
        ),
        limit=30,
    )
    assert state["p95_latency_ms"] < OBJECTIVE_MS


def test_falling_load_scales_down_one_replica_at_a_time_after_stabilisation(
    loop: Deployment,
) -> None:
    settle(loop, PEAK, MAX_REPLICAS)
    t0 = time.time()
    loop.set_demand([[0, PEAK], [15, LOW]])
    wait_for(
        f"scale-down to {MIN_REPLICAS}",
        lambda: loop.desired() == MIN_REPLICAS and loop.running() == MIN_REPLICAS,
        limit=150,
        every=0.5,
    )
    downs = loop.actions("scale_down", since=t0)
    steps = [(int(r["params"]["from"]), int(r["params"]["replicas"])) for r in downs]
    # Gradual: one replica per action, every step from the peak down to the minimum.
    assert steps == [(n, n - 1) for n in range(MAX_REPLICAS, MIN_REPLICAS, -1)], steps
    # Stabilisation: the first scale-down only after the P95 stayed under `below` (70 ms)
    # for scale_down_for; the steps are spaced by the scale-down period/cooldown.
    calm = first(loop.history(since=t0), lambda s: s["p95_latency_ms"] < 70)
    assert calm is not None
    assert downs[0]["at"] >= calm["at"] + SCALE_DOWN_FOR_S - SCRAPE_S, (calm, downs[0])
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(downs)]
    assert min(gaps) >= 2.5, gaps


def sidecar_error_ticks(loop: Deployment) -> float:
    with urllib.request.urlopen(f"{loop.sidecar}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith('autoscaler_ticks_total{result="error"}'):
            return float(line.split()[-1])
    return 0.0


def test_prometheus_outage_holds_reports_not_ready_and_resumes(loop: Deployment) -> None:
    assert loop.prometheus is not None
    settle(loop, LOW, MIN_REPLICAS)
    loop.kill_prometheus()
    try:
        wait_for("/readyz 503", lambda: loop.readyz_status() == 503, limit=30)
        version = loop.inspect()["Version"]["Index"]
        t_out = time.time()
        # Demand that would scale the service up at once, if the autoscaler could see it.
        loop.set_demand([[0, PEAK]])
        before = sidecar_error_ticks(loop)
        wait_for(
            "5 more failed passes of the loop",
            lambda: sidecar_error_ticks(loop) >= before + 5,
            limit=30,
        )
        assert loop.readyz_status() == 503
        assert loop.inspect()["Version"]["Index"] == version  # no write to the service at all
        assert loop.desired() == MIN_REPLICAS
        assert loop.actions("scale_up", since=t_out) == []
    finally:
        loop.prometheus.start()
    wait_for("/readyz 200 again", loop.ready, limit=60)
    t_back = time.time()
    wait_for(
        "a scale-up once the metrics are back",
        lambda: loop.actions("scale_up", since=t_back - 1),
        limit=60,
    )
    wait_for("more replicas running", lambda: loop.running() > MIN_REPLICAS, limit=60)


def test_bad_image_is_rolled_back_automatically(loop: Deployment) -> None:
    settle(loop, LOW, MIN_REPLICAS)
    t0 = time.time()
    loop.update_image(IMAGE_V2)
    wait_for("the error rate to rise", lambda: loop.state()["error_rate"] > 0.05, limit=60)
    rollbacks = wait_for(
        "a rollback in the journal", lambda: loop.actions("rollback", since=t0), limit=60
    )
    assert len(rollbacks) == 1

    def rolled_back() -> dict[str, Any] | None:
        svc = loop.inspect()
        image = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        status = svc.get("UpdateStatus") or {}
        return (
            svc
            if image.startswith(IMAGE_V1) and status.get("State") == "rollback_completed"
            else None
        )

    svc = wait_for("the service back on v1, rollback completed", rolled_back, limit=90)
    assert svc["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"].startswith(IMAGE_V2)
    wait_for("the error rate to fall", lambda: loop.state()["error_rate"] < 0.01, limit=60)


def test_killed_sidecar_is_restarted_and_skips_an_action_still_in_cooldown(
    loop: Deployment,
) -> None:
    settle(loop, LOW, MIN_REPLICAS)
    t0 = time.time()
    # At 30 req/s the service wants more replicas even after the first step (2 -> 5): the
    # rule keeps asking, and only the cooldown holds the second step back.
    loop.set_demand([[0, 30.0]])
    done = wait_for("a scale-up", lambda: loop.actions("scale_up", since=t0), limit=60)[0]
    old = loop.sidecar_container()
    assert old
    from tests.deploy.helpers import sh

    sh("docker", "kill", old)
    t_kill = time.time()
    new = wait_for(
        "swarm to restart the sidecar",
        lambda: (c := loop.sidecar_container()) and c != old and c,
        limit=60,
        every=0.5,
    )
    assert new != old
    wait_for("the restarted sidecar to be ready", loop.ready, limit=60)
    # The restarted task read the cooldown from its journal: it skips the second step.
    skipped = wait_for(
        "a skipped-cooldown scale-up from the restarted task",
        lambda: [r for r in loop.actions("scale_up", "skipped-cooldown", since=t_kill)],
        limit=30,
    )
    assert skipped[0]["at"] < done["at"] + SCALE_UP_COOLDOWN_S
    # ... and scales again only once the cooldown has run out.
    again = wait_for(
        "the next scale-up after the cooldown",
        lambda: loop.actions("scale_up", since=done["at"] + 0.001),
        limit=SCALE_UP_COOLDOWN_S + 30,
    )
    assert again[0]["at"] >= done["at"] + SCALE_UP_COOLDOWN_S - 0.5, (done, again[0])
    print(json.dumps({"done": done["at"], "killed": t_kill, "skipped": skipped[0]["at"]}))
