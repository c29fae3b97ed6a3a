"""Forecast accuracy and cost on the real series in ../shared/data.

    .venv/bin/python bench/forecast.py [--quick] [--data DIR]

For every series: the first ``TRAIN`` fraction is the training part, the rest is scored.
Our models run online from the first sample (no look-ahead: the forecast of t is issued
with data up to t - k steps) and are scored on the test part; statsmodels'
``ExponentialSmoothing`` (additive damped trend, daily additive season when the training part
holds two days) is fitted once on the training part and then filtered through the test part
with those parameters (its states give the k-step forecasts at every origin).

Figures per series and horizon: MAE relative to seasonal naive and to persistence (below 1
is better), the classic MASE (MAE / in-sample one-step naive MAE of the training part), the
90 % interval coverage, and CPU time per update. Subsampling, to stay within a few minutes on
two cores: every series is cut to its last ``MAX_POINTS`` samples.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecasting import make_model, resample
from forecasting.evaluation import backtest, coverage, mae

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
TRAIN = 0.5
MAX_POINTS = 3024
DAY = 86400.0
OURS = ("auto", "holt-winters", "robust-trend")


@dataclass
class Series:
    name: str
    step: float
    times: np.ndarray
    values: np.ndarray


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def _grid(name: str, times: np.ndarray, values: np.ndarray, step: float) -> Series:
    # NAB's DST duplicates and gaps: mean per bin, NaN where empty
    grid_t, grid_v = resample(times, values, step=step, start=times.min(), end=times.max())
    return Series(name, step, grid_t[-MAX_POINTS:], grid_v[-MAX_POINTS:])


def load_nab(path: Path) -> Series:
    with path.open() as f:
        rows = list(csv.reader(f))[1:]
    t = np.array([_parse_time(r[0]) for r in rows])
    v = np.array([float(r[1]) for r in rows])
    step = float(np.median(np.diff(np.sort(t))))
    return _grid(f"{path.parent.name[4:]}/{path.stem}", t, v, step)


def load_servegen(path: Path) -> list[Series]:
    by: dict[str, list[tuple[float, float]]] = {}
    with path.open() as f:
        for r in list(csv.reader(f))[1:]:
            by.setdefault(r[0], []).append((float(r[1]), float(r[2])))
    out = []
    for model, rows in by.items():
        t = np.array([r[0] for r in rows])
        v = np.array([r[1] for r in rows])
        v[v == 0] = np.nan  # isolated zero windows are collection gaps (data README)
        out.append(_grid(f"servegen/{model}", t, v, 600.0))
    return out


def load_azure(path: Path) -> Series:
    with path.open() as f:
        rows = list(csv.reader(f))[1:]
    t = np.array([_parse_time(r[0][:26]) for r in rows])
    start = np.floor(t.min() / 60) * 60
    edges = np.arange(start, t.max() + 60, 60.0)
    counts, _ = np.histogram(t, bins=edges)
    return Series("azure/requests_per_min", 60.0, edges[1:], counts.astype(np.float64))


def load_all(data: Path, quick: bool) -> list[Series]:
    nab = data / "nab" / "data"
    files = sorted((nab / "realAWSCloudwatch").glob("*.csv")) + sorted(
        (nab / "realTweets").glob("*.csv")
    )
    if quick:
        files = files[::4]
    series = [load_nab(p) for p in files]
    series.append(load_nab(nab / "realKnownCause" / "nyc_taxi.csv"))
    series += load_servegen(data / "servegen" / "aggregate_rate_10min.csv")
    series.append(load_azure(data / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"))
    return series


def horizons(s: Series) -> dict[int, str]:
    """Steps ahead → label: one step; five minutes when that is more than one step; and,
    beyond the brief, 30 minutes when that is more than one step (multi-step accuracy)."""
    out = {1: "1 step"}
    five, thirty = round(300.0 / s.step), round(1800.0 / s.step)
    if five > 1:
        out[five] = "5 min"
    if thirty > 1 and thirty not in out:
        out[thirty] = "30 min"
    return out


# --- statsmodels --------------------------------------------------------------------------


def _filled(v: np.ndarray) -> np.ndarray:
    """statsmodels cannot take NaN: carry the last value forward (first value backward)."""
    out = v.copy()
    idx = np.where(np.isfinite(out), np.arange(out.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = out[idx]
    first = np.flatnonzero(np.isfinite(out))
    if first.size:
        out[: first[0]] = out[first[0]]
    return out


def statsmodels_forecasts(
    s: Series, n_train: int, ks: list[int]
) -> tuple[dict[int, np.ndarray], float, float]:
    """k-step forecasts for every column from ExponentialSmoothing fitted on the training
    part; returns them, the fit time and the time of one re-filter (a new sample)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    y = _filled(s.values)
    m = round(DAY / s.step)
    seasonal = "add" if n_train >= 2 * m and m >= 2 else None
    kw = {"trend": "add", "damped_trend": True, "seasonal": seasonal}
    if seasonal:
        kw["seasonal_periods"] = m
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.process_time()
        fit = ExponentialSmoothing(y[:n_train], **kw, initialization_method="estimated").fit()
        fit_time = time.process_time() - t0
        p = fit.params
        known = {
            "initial_level": p["initial_level"],
            "initial_trend": p["initial_trend"],
        }
        if seasonal:
            known["initial_seasonal"] = p["initial_seasons"]
        t0 = time.process_time()
        full = ExponentialSmoothing(y, **kw, initialization_method="known", **known).fit(
            smoothing_level=p["smoothing_level"],
            smoothing_trend=p["smoothing_trend"],
            smoothing_seasonal=p["smoothing_seasonal"] if seasonal else None,
            damping_trend=p["damping_trend"],
            optimized=False,
        )
        refilter = time.process_time() - t0
    level, trend = np.asarray(full.level), np.asarray(full.trend)
    phi = p["damping_trend"]
    season = np.asarray(full.season) if seasonal else np.zeros_like(level)
    out = {}
    T = y.size
    for k in ks:
        fc = np.full(T, np.nan)
        damp = sum(phi**i for i in range(1, k + 1))
        o = np.arange(0, T - k)
        pred = level[o] + damp * trend[o]
        if seasonal:
            back = o + k - m * int(np.ceil(k / m))
            pred = pred + np.where(back >= 0, season[np.maximum(back, 0)], 0.0)
        fc[o + k] = pred
        out[k] = fc
    # consistency: the one-step path must equal statsmodels' own fitted values (after the
    # first season, where the initial seasonal states would be needed; it is training data)
    fv = np.asarray(full.fittedvalues)
    first = m + 1 if seasonal else 1
    tol = 1e-6 * np.abs(y).max()
    if 1 in out and not np.allclose(out[1][first:], fv[first:], rtol=1e-6, atol=tol):
        print(f"warning: {s.name}: one-step reconstruction differs from fittedvalues")
    return out, fit_time, refilter


# --- the run ------------------------------------------------------------------------------


def evaluate(s: Series) -> list[dict[str, object]]:
    labels = horizons(s)
    ks = list(labels)
    T = s.values.size
    n_train = int(T * TRAIN)
    test = np.zeros(T, dtype=bool)
    test[n_train:] = True
    actual = s.values
    results: dict[str, dict[int, tuple[np.ndarray, ...]]] = {}
    cost: dict[str, float] = {}
    for name in ("persistence", "seasonal-naive", *OURS):
        params: dict[str, object] = {"horizon": max(ks)}
        if name in ("persistence", "seasonal-naive"):
            params["clip"] = None  # the textbook baselines
        model = make_model(name, **params)
        t0 = time.process_time()
        results[name] = backtest(model, actual[None, :], step=s.step, end=s.times[-1], ahead=ks)
        cost[name] = (time.process_time() - t0) / T
    sm, sm_fit, sm_refilter = statsmodels_forecasts(s, n_train, ks)
    train = actual[:n_train]
    naive_scale = np.nanmean(np.abs(np.diff(train)))
    rows = []
    for k in ks:
        a = actual[None, :]
        base_p = mae(a, results["persistence"][k][0], mask=test[None, :])
        base_s = mae(a, results["seasonal-naive"][k][0], mask=test[None, :])
        entries = {name: results[name][k] for name in (*OURS, "persistence", "seasonal-naive")}
        for name, (mean, lower, upper) in entries.items():
            err = mae(a, mean, mask=test[None, :])
            rows.append(
                dict(
                    series=s.name,
                    k=k,
                    h=labels[k],
                    model=name,
                    mae=err,
                    rel_snaive=err / base_s,
                    rel_persist=err / base_p,
                    mase=err / naive_scale,
                    cover=coverage(a[:, test], lower[:, test], upper[:, test]),
                    cpu_ms=cost[name] * 1e3,
                )
            )
        err = mae(actual, sm[k], mask=test)
        rows.append(
            dict(
                series=s.name,
                k=k,
                h=labels[k],
                model="statsmodels",
                mae=err,
                rel_snaive=err / base_s,
                rel_persist=err / base_p,
                mase=err / naive_scale,
                cover=float("nan"),
                cpu_ms=sm_refilter * 1e3,
                fit_s=sm_fit,
            )
        )
    return rows


def batch_cost(series: list[Series], n: int = 1000, steps: int = 200) -> dict[str, float]:
    """CPU milliseconds per online update of ``n`` series together (five-minute series,
    tiled and offset so that every row differs)."""
    five = [s for s in series if s.step == 300.0]
    rng = np.random.default_rng(0)
    length = min(s.values.size for s in five)
    base = np.stack([s.values[-length:] for s in five])
    rows = base[np.arange(n) % len(five)] * rng.uniform(0.5, 1.5, size=(n, 1))
    warm = length - steps
    out = {}
    for name in ("persistence", "seasonal-naive", "holt-winters", "robust-trend", "auto"):
        model = make_model(name, horizon=20).fit(rows[:, :warm], step=15.0)
        t0 = time.process_time()
        for j in range(warm, length):
            model.update(rows[:, j])
            model.predict()
        out[name] = (time.process_time() - t0) / steps * 1e3
    return out


def statsmodels_batch_cost(s: Series, n: int = 1000, reps: int = 5) -> tuple[float, float]:
    """statsmodels per update of ``n`` series: one re-filter with fixed parameters per
    series, and one refit per series (both extrapolated from ``reps`` series)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    y = _filled(s.values[-1440:])
    kw = {"trend": "add", "damped_trend": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(y, **kw).fit()
        t0 = time.process_time()
        for _ in range(reps):
            ExponentialSmoothing(y, **kw).fit()
        refit = (time.process_time() - t0) / reps
        p = fit.params
        t0 = time.process_time()
        for _ in range(reps):
            ExponentialSmoothing(
                y,
                **kw,
                initialization_method="known",
                initial_level=p["initial_level"],
                initial_trend=p["initial_trend"],
            ).fit(
                smoothing_level=p["smoothing_level"],
                smoothing_trend=p["smoothing_trend"],
                damping_trend=p["damping_trend"],
                optimized=False,
            )
        refilter = (time.process_time() - t0) / reps
    return refilter * n * 1e3, refit * n * 1e3


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return "   -  " if not np.isfinite(x) else f"{x:6.3f}"
    return str(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the NAB series")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    series = load_all(args.data, args.quick)
    all_rows: list[dict[str, object]] = []
    for s in series:
        rows = evaluate(s)
        all_rows += rows
        for r in rows:
            if r["model"] in ("auto", "statsmodels"):
                print(
                    f"{s.name:45s} k={r['k']} {r['model']:12s} rel_snaive={_fmt(r['rel_snaive'])}"
                    f" rel_persist={_fmt(r['rel_persist'])} cover={_fmt(r['cover'])}",
                    flush=True,
                )
    summarise(all_rows)
    costs = batch_cost(series)
    sm_refilter, sm_refit = statsmodels_batch_cost(next(s for s in series if s.step == 300.0))
    print("\nCPU ms per online update of 1,000 series together (horizon 20 steps):")
    for name, ms in costs.items():
        print(f"  {name:15s} {ms:8.2f} ms")
    print(f"  statsmodels ExponentialSmoothing, re-filter, fixed parameters: {sm_refilter:8.0f} ms")
    print(f"  statsmodels ExponentialSmoothing, refit:                        {sm_refit:8.0f} ms")
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s")
    return 0


def summarise(rows: list[dict[str, object]]) -> None:
    models = (
        "auto",
        "holt-winters",
        "robust-trend",
        "statsmodels",
        "persistence",
        "seasonal-naive",
    )
    print("\nmean over series (rel_* = MAE / MAE of the baseline on the same test points)")
    print(
        f"{'horizon':>7s} {'model':15s} {'rel_snaive':>10s} {'rel_persist':>11s} "
        f"{'(median)':>8s} {'MASE':>7s} {'cover90':>7s} {'ms/upd':>7s}"
    )
    for k_name in ("1 step", "5 min", "30 min"):
        sel = [r for r in rows if r["h"] == k_name]
        if not sel:
            continue
        for m in models:
            rs = [r for r in sel if r["model"] == m]

            def avg(key: str, rs: list[dict[str, object]] = rs, how: str = "mean") -> float:
                vals = np.array([float(r[key]) for r in rs])  # type: ignore[arg-type]
                vals = vals[np.isfinite(vals)]
                if not vals.size:
                    return float("nan")
                return float(np.mean(vals) if how == "mean" else np.median(vals))

            print(
                f"{k_name:>7s} {m:15s} {avg('rel_snaive'):10.3f} {avg('rel_persist'):11.3f} "
                f"{avg('rel_persist', how='median'):8.3f} "
                f"{avg('mase'):7.3f} {avg('cover'):7.3f} {avg('cpu_ms'):7.3f}"
            )
        n = len({r["series"] for r in sel})
        print(
            f"        auto beats statsmodels on {_wins(sel, 'statsmodels')}/{n} series, "
            f"persistence on {_wins(sel, 'persistence')}/{n}, "
            f"seasonal naive on {_wins(sel, 'seasonal-naive')}/{n}"
        )


def _wins(rows: list[dict[str, object]], other: str) -> int:
    by: dict[object, dict[object, float]] = {}
    for r in rows:
        by.setdefault(r["series"], {})[r["model"]] = float(r["mae"])  # type: ignore[arg-type]
    return sum(1 for d in by.values() if d["auto"] < d[other])


if __name__ == "__main__":
    sys.exit(main())
