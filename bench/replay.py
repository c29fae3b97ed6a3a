"""Benchmark: a replay of 30 days of 15 s ticks for 10 targets, forecasting on.

Real demand: the eight NAB Twitter-volume series (5-minute counts, ~55 days) plus two
AWS CloudWatch CPU series, one per target, as the forecast signal ``requests`` (kept for
10 minutes, so the 5-minute samples never go stale). Every target has a target-tracking
rule and a predictive rule on ``requests``.
The whole replay driver runs: reading from memory, the engine pass, the recorder, the
timeline. Prints ticks, target-ticks per second, wall time and the CPU time of each
process (engine, forecast worker); ``--profile`` adds the top functions by own time
(cProfile) so a slow part can be named.

    .venv/bin/python bench/replay.py [--days 30] [--targets 10] [--model auto|none]
                                     [--rules both|tracking|none] [--forecasts-only]
                                     [--holds changes|all] [--digest] [--profile]

``--model none --rules none`` measures the floor: a pass that forecasts and decides nothing.
``--digest`` prints a hash of every decision, replica count and kept forecast: a change
made for speed must leave it as it was (``--holds all`` journals every hold, so a changed
hold reason shows too). ``--forecasts-only`` runs only the forecast worker's half
(``autoscaler.ahead``), in this process, and prints its CPU time per tick:
``--model persistence`` is the floor of that half.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import pstats
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.ahead import forecast_all
from autoscaler.config import from_mapping
from autoscaler.replay import (
    ReplayResult,
    ReplaySource,
    Series,
    finite,
    read_value_csv,
    replay,
    tick_grid,
)

DATA = Path("/work/shared/data/nab/data")
FILES = [
    *sorted((DATA / "realTweets").glob("*.csv")),
    DATA / "realAWSCloudwatch" / "ec2_cpu_utilization_5f5533.csv",
    DATA / "realAWSCloudwatch" / "ec2_cpu_utilization_825cc2.csv",
]


def load_series(targets: int, days: float) -> list[Series]:
    """One real series per target, cut to ``days`` and laid on a common start; a series
    shorter than that is repeated (its own recording, played again)."""
    out = []
    start = 1_700_000_100.0
    span = days * 86400.0
    for i in range(targets):
        times, values = read_value_csv(FILES[i % len(FILES)])
        times = times - times[0]
        period = times[-1] + (times[1] - times[0])
        reps = int(np.ceil(span / period))
        t = np.concatenate([times + k * period for k in range(reps)])
        v = np.tile(values, reps)
        keep = t <= span
        out.append(Series(f"t{i}", "requests", start + t[keep], v[keep]))
    return out


RULES = {
    "track": {
        "type": "target_tracking",
        "metrics": [{"signal": "requests", "target": 20.0, "kind": "total"}],
    },
    "ahead": {
        "type": "predictive",
        "signal": "requests",
        "mode": "track",
        "target": 20.0,
        "kind": "total",
    },
}


def settings(targets: int, model: str = "auto", rules: str = "both", holds: str = "changes") -> Any:
    """The benchmark's settings; ``rules`` "tracking" drops the predictive rule and
    "none" both, and ``model`` "none" turns forecasting off: the floor of a pass."""
    policies: dict[str, Any] = {
        "both": RULES,
        "tracking": {"track": RULES["track"]},
        "none": {},
    }[rules]
    forecast = model != "none"
    return from_mapping(
        {
            "service": {"interval": "15s", "journal_holds": holds},
            "forecasting": {"model": model if forecast else "auto"},
            "bus": {"cooldown": "1m"},
            "signals": {"requests": {"max_age": "10m", "forecast": forecast, "window": "6h"}},
            "targets": {
                f"t{i}": {"executor": "rec", "min_replicas": 1, "max_replicas": 100}
                for i in range(targets)
            },
            "executors": {"rec": {"type": "recording"}},
            "policies": policies,
        }
    )


def digest(result: ReplayResult) -> str:
    """A hash of what the replay decided: the journal (reasons and inputs included), the
    replicas after each tick and the forecasts kept for the report."""
    h = hashlib.sha256()
    for r in result.records:
        h.update(json.dumps(finite(r.to_dict()), sort_keys=True, default=str).encode())
    h.update(result.replicas.tobytes())
    h.update(np.nan_to_num(result.observations, nan=-1.0).tobytes())
    for key in sorted(result.forecasts):
        trace = result.forecasts[key]
        h.update(repr(key).encode())
        for a in (trace.issued, trace.mean, trace.lower, trace.upper):
            h.update(np.nan_to_num(a, nan=-1.0).tobytes())
    return h.hexdigest()[:16]


async def run(
    targets: int,
    days: float,
    model: str = "auto",
    rules: str = "both",
    holds: str = "changes",
    show_digest: bool = False,
) -> None:
    series = load_series(targets, days)
    s = settings(targets, model, rules, holds)
    started, cpu = time.perf_counter(), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = await replay(s, series)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    done = resource.getrusage(resource.RUSAGE_CHILDREN)  # the forecast worker, once joined
    worker = (done.ru_utime + done.ru_stime) - (children.ru_utime + children.ru_stime)
    ticks = len(result.ticks)
    actions = sum(1 for r in result.records if r.kind != "hold")
    print(f"policies: {', '.join(sorted(c.type for c in s.policies.values())) or 'none'}")
    print(f"forecasting model: {model}")
    print(f"ticks: {ticks}  targets: {targets}  target-ticks: {ticks * targets}")
    print(f"actions journalled: {actions}")
    print(f"wall: {wall:.2f} s  ->  {ticks * targets / wall:,.0f} target-ticks/s")
    # On two cores the wall time is the larger of the two halves (the worker runs only for
    # long replays with forecasting on; otherwise the engine's CPU includes forecasting).
    print(f"CPU: engine process {cpu:.2f} s, forecast worker {worker:.2f} s")
    print("target: 30 days x 10 targets in <= 20 s (>= 100,000 target-ticks/s)")
    if show_digest:
        print(f"digest: {digest(result)}")


class _Digest:
    """The worker's pipe, for ``--forecasts-only``: what is sent is hashed, then dropped
    (every forecast of every tick, its whole horizon and interval)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def send(self, message: tuple[str, Any]) -> None:
        kind, body = message
        if kind == "ticks":
            ticks, data = body
            self.hash.update(repr(ticks).encode())
            self.hash.update(np.nan_to_num(data, nan=-1.0).tobytes())


def forecasts_only(targets: int, days: float, model: str) -> None:
    series = load_series(targets, days)
    s = settings(targets, model)
    start = min(float(x.times[0]) for x in series)
    end = max(float(x.times[-1]) for x in series)
    ticks = tick_grid(start, end, s.service.interval)
    sink = _Digest()
    cpu = time.process_time()
    forecast_all(s, ReplaySource(series), ticks, sink)  # type: ignore[arg-type]
    cpu = time.process_time() - cpu
    print(f"forecasting model: {model}, targets: {targets}, ticks: {len(ticks)}")
    print(f"forecast half alone: CPU {cpu:.2f} s, {cpu / len(ticks) * 1e6:.0f} us per tick")
    print(f"digest: {sink.hash.hexdigest()[:16]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument(
        "--model", default="auto", help="[forecasting] model (default: auto; none: no forecasts)"
    )
    ap.add_argument(
        "--rules",
        choices=("both", "tracking", "none"),
        default="both",
        help="rules per target: target tracking + predictive (default), tracking only, none",
    )
    ap.add_argument(
        "--forecasts-only",
        action="store_true",
        help="only the forecast worker's half, in this process (CPU per tick)",
    )
    ap.add_argument(
        "--holds",
        choices=("changes", "all"),
        default="changes",
        help="service.journal_holds (default: changes)",
    )
    ap.add_argument(
        "--digest", action="store_true", help="print a hash of every decision (see above)"
    )
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.forecasts_only:
        forecasts_only(args.targets, args.days, args.model)
        return
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(run(args.targets, args.days, args.model, args.rules, args.holds, args.digest))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    else:
        asyncio.run(run(args.targets, args.days, args.model, args.rules, args.holds, args.digest))


if __name__ == "__main__":
    main()
