"""``autoscaler replay``: what the service would have done over recorded metrics."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from autoscaler.cli import EXIT_USAGE, load_settings, output_dir
from autoscaler.config import policy_signals
from autoscaler.replay import (
    InputError,
    Progress,
    SpanError,
    read_metrics,
    render_report,
    replay,
    summarise,
    write_actions,
    write_journal,
    write_timeline,
)
from autoscaler.report import text_table


def parse_speed(text: str) -> float | None:
    """``max`` (as fast as possible) or a positive factor of real time."""
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'max' or a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("speed must be greater than zero")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay recorded metrics through the engine (open loop)",
        description=(
            "Replay recorded metrics through the live engine on a virtual clock, with every "
            "executor replaced by a recorder: what the service would have done, cooldowns "
            "and all. Writes actions.jsonl, journal.jsonl, timeline.csv, summary.json and "
            "report.html to --out. Exit 2 on a bad config or input file (the message names "
            "file and line)."
        ),
    )
    p.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    p.add_argument(
        "--metrics",
        required=True,
        nargs="+",
        metavar="FILE",
        help="CSV timestamp,target,signal,value or a Prometheus query_range JSON dump",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--speed",
        type=parse_speed,
        default=None,
        metavar="max|FACTOR",
        help="max (default): as fast as possible; FACTOR: virtual seconds per real second",
    )
    p.add_argument(
        "--initial-replicas",
        type=_replicas,
        default=None,
        metavar="N",
        help=(
            "replicas every target starts with (default: its min_replicas; behind a "
            "recording executor, that executor's replicas within the target's bounds)"
        ),
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )


def _replicas(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return n


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if settings is None:
        return EXIT_USAGE
    try:
        series = read_metrics(args.metrics)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    unknown = sorted({s.target for s in series} - set(settings.targets))
    if unknown:
        names = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        print(
            f"warning: {len(unknown)} recorded target(s) not in {args.config}, "
            f"not replayed: {names}",
            file=sys.stderr,
        )
    recorded = {s.signal for s in series}
    for path, signal in policy_signals(settings):  # the rule would hold on every tick
        if signal not in recorded:
            print(
                f"warning: {path}: {signal!r} is not in the recording "
                f"(recorded: {', '.join(sorted(recorded))})",
                file=sys.stderr,
            )
    out = Path(args.out)
    problem = output_dir(out)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_USAGE
    show = sys.stderr.isatty() if args.progress is None else args.progress
    progress = Progress(0, enabled=show)
    try:
        result = asyncio.run(
            replay(
                settings,
                series,
                initial_replicas=args.initial_replicas,
                speed=args.speed,
                progress=progress,
            )
        )
    except SpanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if len(result.ticks) == 0:
        interval = settings.service.interval
        print(f"error: the recording covers no tick of the {interval:g} s grid", file=sys.stderr)
        return EXIT_USAGE
    summary = summarise(result, settings)
    try:
        write_actions(out / "actions.jsonl", result.records)
        write_journal(out / "journal.jsonl", result.records)
        write_timeline(out / "timeline.csv", result)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        report = render_report(result, settings, summary)
        (out / "report.html").write_text(report, encoding="utf-8")
    except OSError as exc:  # a full disk, a directory in the way
        print(f"error: cannot write to {out}: {exc}", file=sys.stderr)
        return 1
    rows = [
        [t, v["replica_hours"], v["min_replicas"], v["max_replicas"], v["actions"], v["executed"]]
        for t, v in summary["targets"].items()
    ]
    print(text_table(["target", "replica-hours", "min", "max", "actions", "executed"], rows))
    print(
        f"\n{summary['ticks']} ticks in {summary['wall_seconds']:.2f}s "
        f"({summary['target_ticks_per_second']} target-ticks/s); "
        f"actions by status: {json.dumps(summary['actions']['by_status'])}"
    )
    print(f"report: {out / 'report.html'}")
    return 0
