"""``autoscaler backtest``: predictive vs reactive vs oracle on recorded demand."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.backtest import (
    CapacitySpec,
    backtest,
    engine_settings,
    policy_sets,
    ratio_text,
    render_report,
    score_rows,
    signal_warnings,
    summary,
    write_timeline,
)
from autoscaler.cli import EXIT_USAGE, duration_arg, output_dir
from autoscaler.config import read_toml
from autoscaler.dataset import parse_timestamp
from autoscaler.errors import ConfigError
from autoscaler.replay import InputError, Progress, SpanError, read_value_csv
from autoscaler.report import text_table


def _time(text: str) -> float:
    try:
        return parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected unix seconds or ISO-8601, got {text!r}"
        ) from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backtest",
        help="closed-loop backtest: predictive vs reactive vs oracle on recorded demand",
        description=(
            "Drive a capacity model with a recorded demand series (CSV timestamp,value in "
            "requests per second, held constant between samples). The predictive policy and "
            "an HPA-style reactive baseline run through the real engine; the oracle knows "
            "the future. Scores: SLO-violation minutes (demand above ready capacity), "
            "replica-hours, scaling actions. Writes summary.json, timeline.csv and "
            "report.html to --out. Exit 2 on bad input."
        ),
    )
    p.add_argument("--demand", required=True, metavar="FILE", help="CSV timestamp,value (req/s)")
    p.add_argument(
        "--capacity-per-replica",
        required=True,
        type=float,
        metavar="R",
        help="requests per second one ready replica serves",
    )
    p.add_argument(
        "--startup-delay", type=duration_arg, default=60.0, metavar="D", help="default 60s"
    )
    p.add_argument(
        "--target-utilization",
        type=float,
        default=0.7,
        metavar="U",
        help="utilisation every policy aims at, the oracle too (default 0.7)",
    )
    p.add_argument("--min", dest="min_replicas", type=int, default=1, metavar="N", help="default 1")
    p.add_argument(
        "--max", dest="max_replicas", type=int, default=200, metavar="N", help="default 200"
    )
    p.add_argument("--interval", type=duration_arg, default=15.0, metavar="D", help="default 15s")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--config",
        metavar="FILE",
        help=(
            "optional TOML: its [policies] replace the predictive policy; its [bus], "
            "[forecasting], [service] and [signals.*] tables adjust that engine"
        ),
    )
    p.add_argument(
        "--price-per-replica-hour",
        type=float,
        default=None,
        metavar="P",
        help="adds a cost column: replica-hours x P (default: none)",
    )
    p.add_argument(
        "--history",
        type=duration_arg,
        default=2 * 86400.0,
        metavar="D",
        help="history kept for forecasting demand, more than 0 (default 2d: seasonal models need"
        " two days)",
    )
    p.add_argument(
        "--from", dest="start", type=_time, default=None, metavar="TIME", help="cut the trace"
    )
    p.add_argument(
        "--to", dest="end", type=_time, default=None, metavar="TIME", help="cut the trace"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )


def _user_config(path: str | None) -> dict[str, Any] | None:
    return None if path is None else read_toml(path)


def run(args: argparse.Namespace) -> int:
    if args.history <= 0:
        print("error: --history must be greater than zero", file=sys.stderr)
        return EXIT_USAGE
    try:
        spec = CapacitySpec(
            capacity_per_replica=args.capacity_per_replica,
            startup_delay=args.startup_delay,
            target_utilization=args.target_utilization,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            interval=args.interval,
            price_per_replica_hour=args.price_per_replica_hour,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        times, values = read_value_csv(args.demand)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    keep = np.ones(len(times), dtype=bool)
    if args.start is not None:
        keep &= times >= args.start
    if args.end is not None:
        keep &= times <= args.end
    times, values = times[keep], values[keep]
    if len(times) < 2 or times[-1] - times[0] < 2 * spec.interval:
        print(
            f"error: {args.demand}: the demand (within --from/--to) spans less than two ticks",
            file=sys.stderr,
        )
        return EXIT_USAGE
    out = Path(args.out)
    try:
        user = _user_config(args.config)
        if user is not None:
            predictive = policy_sets(spec)["predictive"]  # replaced by the user's policies
            merged = engine_settings(spec, predictive, history=args.history, user=user)
            for warning in signal_warnings(merged):
                print(f"warning: {warning}", file=sys.stderr)
        problem = output_dir(out)
        if problem is not None:
            print(problem, file=sys.stderr)
            return EXIT_USAGE
        show = sys.stderr.isatty() if args.progress is None else args.progress
        result = asyncio.run(
            backtest(
                times,
                values,
                spec,
                user=user,
                history=args.history,
                progress=Progress(0, enabled=show),
            )
        )
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except SpanError as exc:
        print(f"error: {args.demand}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    info = summary(result, demand_file=str(args.demand))
    try:
        (out / "summary.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        write_timeline(out / "timeline.csv", result)
        (out / "report.html").write_text(render_report(result, info), encoding="utf-8")
    except OSError as exc:  # a full disk, a directory in the way
        print(f"error: cannot write to {out}: {exc}", file=sys.stderr)
        return 1
    head, rows = score_rows(result.scores)
    print(text_table(head, rows))
    vio, cost, oracle = (
        ratio_text(info["comparison"][k])
        for k in (
            "violation_ratio_vs_reactive",
            "replica_hours_ratio_vs_reactive",
            "replica_hours_ratio_vs_oracle",
        )
    )
    print(
        f"\npredictive vs reactive: violation minutes {vio}, replica-hours {cost}; "
        f"vs oracle: replica-hours {oracle}"
    )
    print(f"report: {out / 'report.html'}")
    return 0
