"""``autoscaler record``: dump the configured Prometheus signals over a past window.

For every signal of every ``prometheus`` source in the config, range queries
(``query_range``, through prometheus-api-client in a worker thread) fetch
``--since`` of history at ``--step``, in chunks that stay under Prometheus' limit of
11,000 points per series. The result is the dataset replay reads
(``autoscaler.dataset``): long CSV ``timestamp,target,signal,value`` or, with
``--format json``, the raw ``query_range`` results per signal. A query that gives a target
two values at one instant is refused, as the live source refuses it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autoscaler.cli import EXIT_USAGE, load_settings, output_file, replacing
from autoscaler.config import parse_duration
from autoscaler.dataset import JSON_FORMAT, format_value, parse_timestamp
from autoscaler.sources.prometheus import PrometheusSpec
from autoscaler.sources.promql import auth_header, target_of

MAX_POINTS = 11000
CHUNK_POINTS = 10000  # below the server limit, with room for an inclusive end point


@dataclass(frozen=True, slots=True)
class Job:
    """One signal to record."""

    source: str
    signal: str
    query: str
    spec: PrometheusSpec


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``record`` subcommand."""
    p = sub.add_parser(
        "record",
        help="record the configured Prometheus signals into a dataset file",
        description=(
            "Record every signal of every prometheus source in the config over the last "
            "--since, one point per --step, into a file that `autoscaler replay` reads: "
            "long CSV (timestamp,target,signal,value; unix seconds) or, with --format json, "
            "the raw query_range results per signal. Range queries are split into chunks "
            "of at most 10,000 points per series (Prometheus refuses more than 11,000). An "
            "--out that cannot be written exits 2 before the first query."
        ),
        epilog="example: autoscaler record --config config.toml --since 7d --step 15s "
        "--out week.csv",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    p.add_argument(
        "--since", default="1h", metavar="DURATION", help="how far back, e.g. 7d, 6h (default 1h)"
    )
    p.add_argument(
        "--step", default="15s", metavar="DURATION", help="resolution, e.g. 15s (default 15s)"
    )
    p.add_argument(
        "--end",
        metavar="TIME",
        help="end of the window: unix seconds or ISO-8601 (default: now)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output file")
    p.add_argument(
        "--format", choices=["csv", "json"], default="csv", help="output format (default csv)"
    )
    p.add_argument(
        "--source",
        action="append",
        metavar="NAME",
        help="record only this source (repeatable; default: every prometheus source)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def _fail(message: str) -> int:
    print(f"autoscaler record: {message}", file=sys.stderr)
    return EXIT_USAGE


def chunks(start: float, end: float, step: float) -> Iterator[tuple[float, float]]:
    """Consecutive ``[a, b]`` windows covering ``[start, end]`` on the step grid, each with
    at most ``CHUNK_POINTS`` points."""
    span = step * (CHUNK_POINTS - 1)
    a = start
    while a <= end:
        b = min(end, a + span)
        yield a, b
        a = b + step


def run(args: argparse.Namespace) -> int:
    """Run ``autoscaler record``."""
    settings = load_settings(args.config)
    if settings is None:
        return EXIT_USAGE
    try:
        since = parse_duration(args.since)
        step = parse_duration(args.step)
        end = time.time() if args.end is None else parse_timestamp(args.end)
    except ValueError as exc:
        return _fail(f"bad --since/--step/--end: {exc}")
    if step <= 0 or since <= 0:
        return _fail("--since and --step must be greater than zero")
    wanted = set(args.source or [])
    jobs: list[Job] = []
    owner: dict[str, str] = {}
    for name, comp in settings.sources.items():
        if comp.type != "prometheus" or (wanted and name not in wanted):
            continue
        for signal, query in comp.spec.queries.items():
            if signal in owner:
                return _fail(
                    f"signal {signal!r} is defined by sources {owner[signal]!r} and {name!r}; "
                    "choose one with --source"
                )
            owner[signal] = name
            jobs.append(Job(name, signal, query, comp.spec))
    missing = wanted - {n for n, c in settings.sources.items() if c.type == "prometheus"}
    if missing:
        return _fail(f"no prometheus source named {', '.join(sorted(missing))}")
    if not jobs:
        return _fail("the config has no prometheus source with queries to record")
    out = Path(args.out)
    problem = output_file(out)  # before the queries: they can take long
    if problem is not None:
        return _fail(f"cannot write {str(out)!r}: {problem}")
    start = math.floor((end - since) / step) * step
    windows = list(chunks(start, end, step))
    progress = _Progress(len(jobs) * len(windows), enabled=not args.quiet)
    try:
        results = asyncio.run(_record_all(jobs, windows, step, progress.advance))
    except RecordError as exc:
        progress.done()
        print(f"autoscaler record: {exc}", file=sys.stderr)
        return 1
    progress.done()
    try:
        if args.format == "json":
            n = _write_json(out, jobs, results, start=start, end=end, step=step)
        else:
            n = _write_csv(out, jobs, results)
    except OSError as exc:
        return _fail(f"cannot write {str(out)!r}: {exc.strerror or exc}")
    print(f"wrote {n} points of {len(jobs)} signals to {out}", file=sys.stderr)
    return 0


class RecordError(Exception):
    """A range query failed."""


async def _record_all(
    jobs: list[Job],
    windows: list[tuple[float, float]],
    step: float,
    tick: Callable[[], None],
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        out[job.signal] = await asyncio.to_thread(_record_one, job, windows, step, tick)
    return out


def _record_one(
    job: Job, windows: list[tuple[float, float]], step: float, tick: Callable[[], None]
) -> list[dict[str, Any]]:
    from prometheus_api_client import PrometheusConnect

    headers = {}
    if job.spec.token:
        headers["Authorization"] = auth_header(job.spec.token.get())
    prom = PrometheusConnect(
        url=job.spec.url.rstrip("/"),
        headers=headers,
        timeout=max(30, math.ceil(job.spec.timeout)),
    )
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for a, b in windows:
        try:
            result = prom.custom_query_range(
                job.query,
                start_time=datetime.fromtimestamp(a, UTC),
                end_time=datetime.fromtimestamp(b, UTC),
                step=f"{step:g}s",
            )
        except Exception as exc:
            raise RecordError(
                f"source {job.source!r}, signal {job.signal!r}: range query failed: "
                f"{str(exc)[:300]}"
            ) from None
        for item in result if isinstance(result, list) else [result]:
            metric = item.get("metric") if isinstance(item, dict) else None
            values = item.get("values") if isinstance(item, dict) else None
            if not isinstance(metric, dict) or not isinstance(values, list):
                raise RecordError(
                    f"source {job.source!r}, signal {job.signal!r}: malformed answer (a series"
                    f' without "metric" labels or "values"): {str(item)[:200]}'
                )
            key = tuple(sorted((str(k), str(v)) for k, v in metric.items()))
            entry = series.setdefault(key, {"metric": metric, "values": []})
            entry["values"].extend(values)
        tick()
    _refuse_overlaps(job, series.values())
    return list(series.values())


def _refuse_overlaps(job: Job, series: Iterable[dict[str, Any]]) -> None:
    """Raise ``RecordError`` when two series of one signal give one target a value at the
    same time: the query does not aggregate by the target label, and the live source
    refuses that too (``vector_samples``). Series that take turns (one instance replaced
    by another) are kept: at every instant each target has one value."""
    seen: dict[str, set[float]] = {}
    label = job.spec.target_label
    for item in series:
        target = target_of(item["metric"], label, job.spec.targets)
        if target is None:
            continue
        times = {float(ts) for ts, _ in item["values"]}
        taken = seen.setdefault(target, set())
        if not taken.isdisjoint(times):
            raise RecordError(
                f"source {job.source!r}, signal {job.signal!r}: several series for "
                f"{label}={target!r} at the same time; aggregate the query with `by ({label})`"
            )
        taken |= times


def _write_csv(path: Path, jobs: list[Job], results: dict[str, list[dict[str, Any]]]) -> int:
    n = 0
    with replacing(path) as f:
        w = csv.writer(f)
        w.writerow(("timestamp", "target", "signal", "value"))
        for job in jobs:
            rows: list[tuple[float, str, float]] = []
            for item in results[job.signal]:
                target = target_of(item["metric"], job.spec.target_label, job.spec.targets)
                if target is None:
                    continue
                rows.extend((float(ts), target, float(v)) for ts, v in item["values"])
            rows.sort()
            for ts, target, v in rows:
                w.writerow((f"{ts:.3f}", target, job.signal, format_value(v)))
            n += len(rows)
    return n


def _write_json(
    path: Path,
    jobs: list[Job],
    results: dict[str, list[dict[str, Any]]],
    *,
    start: float,
    end: float,
    step: float,
) -> int:
    doc = {
        "format": JSON_FORMAT,
        "start": start,
        "end": end,
        "step": step,
        "signals": {
            job.signal: {
                "source": job.source,
                "query": job.query,
                "target_label": job.spec.target_label,
                "targets": job.spec.targets,
                "data": {"resultType": "matrix", "result": results[job.signal]},
            }
            for job in jobs
        },
    }
    with replacing(path) as f:
        json.dump(doc, f)
    return sum(len(item["values"]) for r in results.values() for item in r)


class _Progress:
    """A one-line text progress bar on stderr, shown only when stderr is a terminal."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = max(1, total)
        self.count = 0
        self.enabled = enabled and sys.stderr.isatty()
        self._shown = False

    def advance(self) -> None:
        self.count += 1
        if not self.enabled:
            return
        width = 30
        filled = round(width * self.count / self.total)
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(f"\rrecording [{bar}] {self.count}/{self.total} queries")
        sys.stderr.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
