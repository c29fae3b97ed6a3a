"""Reaction time of the deployed closed loop (figures printed, nothing asserted).

Deploys what the end-to-end test deploys (tests/e2e/deployment.py: the sidecar from the
Dockerfile through deploy/stack.yml, a real Prometheus scraping the workload emulator every
second, a busybox swarm service), but with the latency rule's threshold *at* the 150 ms P95
objective, then repeats: hold the quietest demand of the recorded trace at 2 replicas, step
the demand up so that the P95 crosses the objective, and measure

- breach -> action: from the first workload sample (every 0.25 s) whose P95 is over the
  objective to the journal's ``done`` entry of the scale-up (its time is the pass that
  decided and executed it; the service's ``UpdatedAt`` shows when the swarm took the
  new spec, printed as an offset from that entry);
- action -> running: from that entry to the first workload sample that counts the new
  replica count of running tasks (Docker API).

Run (root, a swarm-capable dockerd; builds the image when needed):

    .venv/bin/python -m bench.reaction --trials 5

The time scale is the e2e config's (1 s ticks and scrapes), not production's 15 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from remediation.swarm import parse_time
from tests.e2e.deployment import (
    MIN_REPLICAS,
    OBJECTIVE_MS,
    Deployment,
    build_image,
    wait_for,
)
from tests.e2e.workload import TRACE, load_trace

STEP_RPS = 20.0
"""Demand after the step: twice what 2 replicas serve at the objective (13.3 req/s)."""


def trial(dep: Deployment, low: float) -> dict[str, float]:
    dep.set_demand([[0, low]])
    wait_for(
        f"{MIN_REPLICAS} replicas",
        lambda: dep.desired() == MIN_REPLICAS and dep.running() == MIN_REPLICAS,
        limit=180,
        every=0.5,
    )
    # The scale-up cooldown of the previous trial must be over, or the measurement is the
    # cooldown's: wait until it has run out.
    ups = dep.actions("scale_up")
    if ups:
        wait_for("the scale-up cooldown", lambda: time.time() > ups[-1]["at"] + 21, limit=30)
    t0 = time.time()
    dep.set_demand([[0, STEP_RPS]])
    done: dict[str, Any] = wait_for(
        "the scale-up", lambda: dep.actions("scale_up", since=t0), limit=60
    )[0]
    want = int(done["params"]["replicas"])
    # When the swarm accepted the new spec (the scale-up cooldown keeps later writes away).
    updated = parse_time(dep.inspect()["UpdatedAt"])

    def running_sample() -> dict[str, Any] | None:
        return next((s for s in dep.history(since=t0) if s["replicas"] >= want), None)

    running = wait_for(f"{want} running replicas", running_sample, limit=60)
    history = dep.history(since=t0)
    breach = next(s for s in history if s["p95_latency_ms"] > OBJECTIVE_MS)
    return {
        "breach_to_action_s": float(done["at"]) - float(breach["at"]),
        "action_to_running_s": float(running["at"]) - float(done["at"]),
        "journal_to_spec_updated_s": updated - float(done["at"]),
        "breach_to_running_s": float(running["at"]) - float(breach["at"]),
        "from": float(done["params"]["from"]),
        "to": float(want),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--trials", type=int, default=5)
    args = p.parse_args()
    low = min(v for _, v in load_trace(TRACE, seconds_per_hour=1.0))
    dep = Deployment(scale_up_above=OBJECTIVE_MS, image=build_image())
    try:
        dep.up()
        assert dep.prometheus is not None
        prom = dep.prometheus
        # Warm-up: the first scrapes must be in Prometheus, or the first trial measures
        # Prometheus starting rather than the loop reacting.
        wait_for(
            "the first P95 samples in Prometheus",
            lambda: prom.value("p95_latency_ms", "service", dep.service) is not None,
            limit=60,
        )
        rows = []
        for i in range(args.trials):
            r = trial(dep, low)
            rows.append(r)
            print(
                f"trial {i + 1}: {r['from']:.0f} -> {r['to']:.0f} replicas; "
                f"breach->action {r['breach_to_action_s']:.2f} s "
                f"(spec written {r['journal_to_spec_updated_s']:.2f} s after the entry), "
                f"action->running {r['action_to_running_s']:.2f} s, "
                f"breach->running {r['breach_to_running_s']:.2f} s",
                flush=True,
            )
        keys = (
            "breach_to_action_s",
            "journal_to_spec_updated_s",
            "action_to_running_s",
            "breach_to_running_s",
        )
        for key in keys:
            xs = [r[key] for r in rows]
            print(
                f"{key}: median {statistics.median(xs):.2f} s, min {min(xs):.2f} s, "
                f"max {max(xs):.2f} s (n={len(xs)}, 1 s ticks and scrapes)"
            )
    finally:
        dep.down()


if __name__ == "__main__":
    main()
