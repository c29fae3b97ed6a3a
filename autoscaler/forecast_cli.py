"""``autoscaler forecast``: rolling-origin forecasts over a recorded series.

    autoscaler forecast --series FILE --horizon 5m [--model auto] [--target T --signal S]
                        [--kind gauge|counter] [--coverage C] --out FILE

Input: CSV ``timestamp,value`` or the long format ``timestamp,target,signal,value``
(``--target``/``--signal`` pick the series; they may be left out when the file holds only
one). A header row is optional. Timestamps are unix seconds (not milliseconds) or ISO-8601
(naive means UTC); they must increase strictly. An empty value or ``nan`` is a missing
sample. ``--kind counter`` turns a counter into a per-second rate first (resets handled).

The samples are put on a grid whose step is the median spacing; grid point ``g`` summarises
the samples in ``(g - step, g]``. The forecast of a row at time ``t`` is issued at the last
grid point at or before ``t - H``, so it uses samples up to ``t - H`` only: no look-ahead.

Output CSV ``timestamp,actual,forecast,lower,upper,model``, one row per input row (the
timestamp as written in the input; forecast columns empty while there is too little
history). A summary goes to stdout: MASE against seasonal naive and persistence (MAE
ratios on the same rows), interval coverage and time per update. Bad input exits with
code 2 and one clear message; so does a horizon longer than the series (first to last
row) or longer than 5000 grid steps.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from autoscaler.cli import EXIT_USAGE, output_file, replacing
from autoscaler.config import MAX_HORIZON_STEPS, parse_duration
from autoscaler.dataset import MAX_TIME, bad_byte_line, parse_timestamp
from forecasting.auto import Auto
from forecasting.base import OnlineForecaster
from forecasting.errors import ForecastError
from forecasting.grid import counter_to_rate, resample
from forecasting.registry import MODEL_TYPES, make_model

FloatArray = NDArray[np.float64]


class InputError(Exception):
    """The input file or arguments cannot be used (exit code 2)."""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``forecast`` subcommand."""
    p = sub.add_parser(
        "forecast",
        help="rolling-origin forecasts over a recorded series",
        description=(__doc__ or "").split("\n\n", 2)[2].strip().replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--series",
        required=True,
        metavar="FILE",
        help="CSV: timestamp,value or timestamp,target,signal,value",
    )
    p.add_argument(
        "--horizon", required=True, metavar="H", help='how far ahead, e.g. "300s" or "5m"'
    )
    p.add_argument("--model", default="auto", choices=sorted(MODEL_TYPES), help="default: auto")
    p.add_argument("--target", metavar="T", help="target to pick from a long-format file")
    p.add_argument("--signal", metavar="S", help="signal to pick from a long-format file")
    p.add_argument(
        "--kind", default="gauge", choices=("gauge", "counter"), help="counter: forecast its rate"
    )
    p.add_argument(
        "--coverage", type=float, default=0.9, metavar="C", help="interval coverage (default 0.9)"
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; 0 on success, 2 on bad input."""
    try:
        horizon = _horizon(args.horizon)
        if not 0.0 < args.coverage < 1.0:
            raise InputError(f"--coverage must lie between 0 and 1, got {args.coverage}")
        out = Path(args.out)
        if out.exists() and out.resolve() == Path(args.series).resolve():
            raise InputError(f"--out {args.out!r} is the --series file: it would be overwritten")
        problem = output_file(out)  # before the computation, which can take long
        if problem is not None:
            raise InputError(f"cannot write {args.out!r}: {problem}")
        series = read_series(Path(args.series), target=args.target, signal=args.signal)
        if args.kind == "counter":
            series.values = counter_to_rate(series.times, series.values)
        result = rolling_origin(
            series.times, series.values, horizon=horizon, model=args.model, coverage=args.coverage
        )
        write_result(out, series, result)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    print_summary(series, result, horizon=horizon, model=args.model)
    return 0


# --- input ------------------------------------------------------------------------------


@dataclass
class Series:
    """The picked series: raw timestamp text, epoch seconds and values (NaN: missing)."""

    labels: list[str]
    times: FloatArray
    values: FloatArray


def _horizon(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise InputError(
            f'--horizon: expected a duration like "300s" or "5m", got {text!r}'
        ) from None
    if seconds <= 0:
        raise InputError("--horizon must be greater than zero")
    return seconds


def _value(text: str) -> float:
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    value = float(text)  # ValueError for non-numeric text
    return value if math.isfinite(value) else math.nan


def read_series(path: Path, *, target: str | None, signal: str | None) -> Series:
    """Read and validate the CSV; raises ``InputError`` with the line at fault."""
    try:
        # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column
        with path.open(newline="", encoding="utf-8-sig") as f:
            # strict: a stray or unclosed quote is an error, not a value read some other way
            reader = csv.reader(f, strict=True)
            try:
                rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
            except UnicodeDecodeError as exc:
                line = bad_byte_line(path) or reader.line_num
                raise InputError(f"{path}:{line}: not a UTF-8 text file: {exc}") from exc
            except csv.Error as exc:
                raise InputError(f"{path}:{reader.line_num}: not a valid CSV file: {exc}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if rows and rows[0][1][0].strip().lower() in ("timestamp", "time", "t"):
        rows = rows[1:]
    if not rows:
        raise InputError(f"{path}: no data rows")
    width = len(rows[0][1])
    if width not in (2, 4):
        raise InputError(
            f"{path}:{rows[0][0]}: expected timestamp,value or timestamp,target,signal,value,"
            f" got {width} columns"
        )
    picked: list[tuple[int, str, str]] = []
    pairs: set[tuple[str, str]] = set()
    for line, r in rows:
        if len(r) != width:
            raise InputError(f"{path}:{line}: expected {width} columns, got {len(r)}")
        if width == 2:
            picked.append((line, r[0], r[1]))
            continue
        pair = (r[1].strip(), r[2].strip())
        pairs.add(pair)
        if (target is None or pair[0] == target) and (signal is None or pair[1] == signal):
            picked.append((line, r[0], r[3]))
    if width == 4:
        chosen = {(t, s) for t, s in pairs if (target in (None, t)) and (signal in (None, s))}
        if not chosen:
            raise InputError(f"{path}: no rows for target={target!r} signal={signal!r}")
        if len(chosen) > 1:
            names = ", ".join(f"{t}/{s}" for t, s in sorted(chosen)[:10])
            raise InputError(
                f"{path}: several series ({names}): pick one with --target and --signal"
            )
    labels, times, values = [], [], []
    for line, ts, val in picked:
        try:
            times.append(parse_timestamp(ts))
        except ValueError:
            raise InputError(f"{path}:{line}: not a timestamp: {ts!r}") from None
        if not 0 <= times[-1] <= MAX_TIME:  # milliseconds: a grid step 1000 times too long
            raise InputError(
                f"{path}:{line}: timestamp {ts.strip()!r} is not a time in unix seconds"
                " (milliseconds? a year before 1970?)"
            )
        try:
            values.append(_value(val))
        except ValueError:
            raise InputError(f"{path}:{line}: not a number: {val!r}") from None
        labels.append(ts.strip())
        if len(times) > 1 and times[-1] <= times[-2]:
            what = "duplicate timestamp" if times[-1] == times[-2] else "timestamps out of order"
            raise InputError(f"{path}:{line}: {what} ({ts.strip()!r}); sort and de-duplicate first")
    return Series(labels, np.array(times), np.array(values))


# --- the rolling-origin run -------------------------------------------------------------


@dataclass
class Result:
    """Per input row: forecast, bounds and model label; plus the baselines and timing."""

    mean: FloatArray
    lower: FloatArray
    upper: FloatArray
    model: list[str]
    persistence: FloatArray
    seasonal_naive: FloatArray
    seconds_per_update: float
    step: float
    coverage: float


def rolling_origin(
    times: FloatArray, values: FloatArray, *, horizon: float, model: str, coverage: float = 0.9
) -> Result:
    """Forecast of every row from the grid point at or before ``t - horizon``."""
    n = times.size
    step = float(np.median(np.diff(times))) if n > 1 else max(horizon, 1.0)
    t0 = float(times[0])
    span = float(times[-1]) - t0
    if n > 1 and horizon > span:
        raise InputError(
            f"--horizon {horizon:.15g}s is longer than the series ({span:.15g}s from first to last"
            " row): no row could be forecast"
        )
    if horizon / step > MAX_HORIZON_STEPS:
        raise InputError(
            f"--horizon {horizon:.15g}s is {horizon / step:.0f} grid steps of {step:.15g}s; at most"
            f" {MAX_HORIZON_STEPS} (memory grows with their square): shorten it or resample"
            " the series coarser"
        )
    _, grid_v = resample(times, values, step=step, start=t0, end=float(times[-1]) + step)
    eps = 1e-9
    cell = np.ceil((times - t0) / step - eps).astype(np.int64)  # grid point holding the row
    origin = np.floor((times - horizon - t0) / step + eps).astype(np.int64)
    ahead = cell - origin
    forecastable = origin >= 0
    # only rows with an origin count: an early row's distance to the grid point before the
    # series started would size the model (its memory grows with the square of this)
    kmax = int(ahead[forecastable].max()) if forecastable.any() else 1
    try:
        ours = make_model(model, horizon=kmax, coverage=coverage)
    except ForecastError as exc:
        raise InputError(str(exc)) from exc
    baselines = [make_model(b, horizon=kmax, clip=None) for b in ("persistence", "seasonal-naive")]
    mean, lower, upper = (np.full(n, np.nan) for _ in range(3))
    base = [np.full(n, np.nan), np.full(n, np.nan)]
    labels = [""] * n
    needs: dict[int, list[int]] = {}
    for row in np.flatnonzero(origin >= 0).tolist():
        needs.setdefault(int(origin[row]), []).append(row)
    for m in (ours, *baselines):
        m.fit(np.empty((1, 0)), step=step, end=t0 - step)
    spent = 0.0
    last = int(origin.max()) if needs else -1
    for j in range(min(last + 1, grid_v.size)):
        column = grid_v[j : j + 1]
        started = time.perf_counter()
        ours.update(column)
        spent += time.perf_counter() - started
        for b in baselines:
            b.update(column)
        rows = needs.get(j)
        if not rows:
            continue
        mu, lo, hi = ours.predict(kmax)
        label = _label(ours)
        for i in rows:
            k = int(ahead[i] - 1)
            mean[i], lower[i], upper[i] = mu[0, k], lo[0, k], hi[0, k]
            labels[i] = label if math.isfinite(mean[i]) else ""
            for b, out in zip(baselines, base, strict=True):
                out[i] = b.mean_[0, k]
    updates = max(1, min(last + 1, grid_v.size))
    return Result(mean, lower, upper, labels, base[0], base[1], spent / updates, step, coverage)


def _label(model: OnlineForecaster) -> str:
    if isinstance(model, Auto):
        return f"auto:{model.chosen()[0]}"
    return model.name


def write_result(path: Path, series: Series, result: Result) -> None:
    """Write ``timestamp,actual,forecast,lower,upper,model``."""
    try:
        with replacing(path) as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "actual", "forecast", "lower", "upper", "model"])
            for i, label in enumerate(series.labels):
                w.writerow(
                    [
                        label,
                        _num(series.values[i]),
                        _num(result.mean[i]),
                        _num(result.lower[i]),
                        _num(result.upper[i]),
                        result.model[i],
                    ]
                )
    except OSError as exc:
        raise InputError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc


def _num(x: float) -> str:
    return format(float(x), ".10g") if math.isfinite(x) else ""


def summary(series: Series, result: Result) -> dict[str, Any]:
    """Accuracy figures over the rows where the model and both baselines forecast."""
    a = series.values
    ok = np.isfinite(a) & np.isfinite(result.mean)
    ok &= np.isfinite(result.persistence) & np.isfinite(result.seasonal_naive)
    if not ok.any():
        return {"rows": int(np.sum(np.isfinite(result.mean)))}

    def mae(f: FloatArray) -> float:
        return float(np.mean(np.abs(a[ok] - f[ok])))

    err = mae(result.mean)
    p, s = mae(result.persistence), mae(result.seasonal_naive)
    inside = (a[ok] >= result.lower[ok]) & (a[ok] <= result.upper[ok])
    return {
        "rows": int(np.sum(np.isfinite(result.mean))),
        "scored": int(ok.sum()),
        "mae": err,
        "mase_seasonal_naive": err / s if s > 0 else math.nan,
        "mase_persistence": err / p if p > 0 else math.nan,
        "coverage": float(np.mean(inside)),
    }


def print_summary(series: Series, result: Result, *, horizon: float, model: str) -> None:
    """The human summary on stdout."""
    s = summary(series, result)
    lines = [
        (
            f"{len(series.labels)} rows, grid step {result.step:g}s, horizon {horizon:g}s, "
            f"model {model}"
        )
    ]
    if "scored" not in s:
        lines.append(f"forecasts: {s['rows']} rows; too little history to score them")
    else:
        lines += [
            f"forecasts: {s['rows']} rows, {s['scored']} scored",
            f"MAE {s['mae']:.6g}",
            (
                f"MASE vs seasonal naive {s['mase_seasonal_naive']:.3f}, "
                f"vs persistence {s['mase_persistence']:.3f}"
            ),
            f"interval coverage {s['coverage']:.3f} (nominal {result.coverage:g})",
        ]
    lines.append(f"time per update {result.seconds_per_update * 1e6:.0f} us")
    sys.stdout.write("\n".join(lines) + "\n")
