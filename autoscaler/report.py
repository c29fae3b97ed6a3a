"""Self-contained HTML reports: inline SVG charts and tables, no scripts, no network.

Charts are drawn from numpy arrays; long series are reduced to at most ``max_points``
per line by keeping each bucket's minimum and maximum, so spikes stay visible and a month
of 15-second ticks still makes a small page.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


@dataclass(frozen=True, slots=True)
class Line:
    """A line (or step line) on a chart."""

    label: str
    x: FloatArray
    y: FloatArray
    color: str
    step: bool = False
    dash: str = ""
    width: float = 1.5


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded interval between ``lo`` and ``hi``."""

    label: str
    x: FloatArray
    lo: FloatArray
    hi: FloatArray
    color: str


@dataclass(frozen=True, slots=True)
class Marks:
    """Point markers (actions): ``up`` triangles point up, others down."""

    label: str
    x: FloatArray
    y: FloatArray
    up: NDArray[np.bool_]
    color: str


def reduce_points(x: FloatArray, y: FloatArray, max_points: int) -> tuple[FloatArray, FloatArray]:
    """At most about ``max_points`` points: each bucket keeps its min and max, in order."""
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max(1, max_points // 2)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    xs: list[float] = []
    ys: list[float] = []
    for a, b in itertools.pairwise(edges.tolist()):
        if b <= a:
            continue
        seg = y[a:b]
        if np.all(np.isnan(seg)):
            xs.append(float(x[a]))
            ys.append(math.nan)
            continue
        i, j = int(np.nanargmin(seg)), int(np.nanargmax(seg))
        for k in sorted({i, j}):
            xs.append(float(x[a + k]))
            ys.append(float(seg[k]))
    return np.array(xs), np.array(ys)


def reduce_band(
    x: FloatArray, lo: FloatArray, hi: FloatArray, max_points: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """At most ``max_points`` points of a band: each bucket's lowest ``lo`` and highest
    ``hi``, at the bucket's first time."""
    n = len(x)
    if n <= max_points:
        return x, lo, hi
    edges = np.linspace(0, n, max_points + 1).astype(np.int64)
    starts = edges[:-1][edges[1:] > edges[:-1]]
    with np.errstate(all="ignore"):
        rlo = np.fmin.reduceat(lo, starts)
        rhi = np.fmax.reduceat(hi, starts)
    return x[starts], rlo, rhi


def _fmt_tick(t: float, span: float) -> str:
    d = datetime.fromtimestamp(t, UTC)
    if span > 3 * 86400:
        return d.strftime("%m-%d")
    if span > 86400:
        return d.strftime("%m-%d %H:%M")
    return d.strftime("%H:%M")


def _nice_step(span: float, count: int) -> float:
    raw = span / max(1, count)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _time_step(span: float) -> float:
    for s in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400):
        if span / s <= 8:
            return float(s)
    return 14 * 86400.0


def chart(
    *,
    title: str,
    lines: Sequence[Line] = (),
    bands: Sequence[Band] = (),
    marks: Sequence[Marks] = (),
    ylabel: str = "",
    ymax: float | None = None,
    width: int = 960,
    height: int = 260,
    max_points: int = 1600,
) -> str:
    """An SVG chart with a time x axis (epoch seconds, UTC); ``ymax`` clips the y axis
    (higher values are drawn at the top edge)."""
    left, right, top, bottom = 64, 200, 28, 30
    pw, ph = width - left - right, height - top - bottom
    lines = [
        replace(ln, x=ln.x[k], y=_tame(ln.y[k])) for ln in lines if (k := _timed(ln.x)) is not None
    ]
    bands = [
        replace(b, x=b.x[k], lo=_tame(b.lo[k]), hi=_tame(b.hi[k]))
        for b in bands
        if (k := _timed(b.x)) is not None
    ]
    marks = [
        replace(m, x=m.x[k], y=_tame(m.y[k]), up=m.up[k])
        for m in marks
        if (k := _timed(m.x)) is not None
    ]
    xs_all = [a for ln in lines for a in (ln.x,)] + [b.x for b in bands] + [m.x for m in marks]
    ys_all = (
        [ln.y for ln in lines]
        + [b.lo for b in bands]
        + [b.hi for b in bands]
        + [m.y for m in marks]
    )
    xcat = np.concatenate([a for a in xs_all if len(a)]) if any(len(a) for a in xs_all) else None
    ycat = np.concatenate([a for a in ys_all if len(a)]) if any(len(a) for a in ys_all) else None
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
        ),
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    if xcat is None or ycat is None or not np.isfinite(ycat).any():
        out.append(f'<text x="{left}" y="{top + ph / 2}">no data</text></svg>')
        return "".join(out)
    x0, x1 = float(np.nanmin(xcat)), float(np.nanmax(xcat))
    finite_y = ycat[np.isfinite(ycat)]
    y0, y1 = min(0.0, float(finite_y.min())), float(finite_y.max())
    if ymax is not None and math.isfinite(ymax) and ymax > y0:
        y1 = min(y1, ymax)
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y1 = y0 + max(1.0, abs(y0) * 1e-9)  # + 1.0 alone is lost on a value beyond 2**53
    y1 += (y1 - y0) * 0.05

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + ph - (min(v, y1) - y0) / (y1 - y0) * ph

    # grid and axes
    ystep = _nice_step(y1 - y0, 5)
    v = math.ceil(y0 / ystep) * ystep
    while v <= y1 + 1e-9:
        y = sy(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += ystep
    tstep = _time_step(x1 - x0)
    t = math.ceil(x0 / tstep) * tstep
    while t <= x1:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#eee"/>')
        label = _fmt_tick(t, x1 - x0)
        out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{label}</text>')
        t += tstep
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    if ylabel:
        out.append(
            f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" '
            f'text-anchor="middle">{html.escape(ylabel)}</text>'
        )
    legend: list[tuple[str, str, str]] = []
    for b in bands:
        bx, lo, hi = reduce_band(b.x, b.lo, b.hi, max_points // 2)
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            pts = [f"{sx(a):.1f},{sy(c):.1f}" for a, c in zip(bx[ok], hi[ok], strict=True)]
            pts += [
                f"{sx(a):.1f},{sy(c):.1f}" for a, c in zip(bx[ok][::-1], lo[ok][::-1], strict=True)
            ]
            out.append(
                f'<polygon points="{" ".join(pts)}" fill="{b.color}" fill-opacity="0.18" '
                'stroke="none"/>'
            )
        legend.append((b.label, b.color, "band"))
    for ln in lines:
        lx, ly = reduce_points(ln.x, ln.y, max_points)
        dash = f' stroke-dasharray="{ln.dash}"' if ln.dash else ""
        for seg in _segments(lx, ly, step=ln.step):
            line_pts = " ".join(f"{sx(a):.1f},{sy(c):.1f}" for a, c in seg)
            out.append(
                f'<polyline points="{line_pts}" fill="none" stroke="{ln.color}" '
                f'stroke-width="{ln.width}"{dash}/>'
            )
        legend.append((ln.label, ln.color, "line"))
    for m in marks:
        for a, c, up in zip(m.x.tolist(), m.y.tolist(), m.up.tolist(), strict=True):
            if not math.isfinite(c):
                continue
            x, y = sx(a), sy(c)
            tri = (
                f"{x - 4:.1f},{y + 4:.1f} {x + 4:.1f},{y + 4:.1f} {x:.1f},{y - 4:.1f}"
                if up
                else f"{x - 4:.1f},{y - 4:.1f} {x + 4:.1f},{y - 4:.1f} {x:.1f},{y + 4:.1f}"
            )
            out.append(f'<polygon points="{tri}" fill="{m.color}" fill-opacity="0.8"/>')
        legend.append((m.label, m.color, "mark"))
    for i, (label, color, kind) in enumerate(legend):
        y = top + 10 + i * 16
        x = left + pw + 12
        if kind == "line":
            out.append(
                f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{color}" '
                'stroke-width="2"/>'
            )
        elif kind == "band":
            out.append(
                f'<rect x="{x}" y="{y - 9}" width="18" height="10" fill="{color}" '
                'fill-opacity="0.25"/>'
            )
        else:
            out.append(
                f'<polygon points="{x + 5},{y} {x + 13},{y} {x + 9},{y - 8}" fill="{color}"/>'
            )
        out.append(f'<text x="{x + 24}" y="{y}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


_Y_LIMIT = 1e300
"""Values are drawn within +-this: the axis span of +-1e308 would overflow to infinity."""


def _timed(x: FloatArray) -> NDArray[np.bool_] | slice | None:
    """Which points have a time a chart can place: all (a slice) in the usual case, else a
    mask without the non-finite ones; ``None`` when none has."""
    ok = np.isfinite(x)
    if ok.all():
        return slice(None)
    return ok if ok.any() else None


def _tame(y: FloatArray) -> FloatArray:
    """``y`` within +-``_Y_LIMIT`` (NaN and infinities stay: they break the line)."""
    finite = np.isfinite(y)
    if not finite.any() or np.abs(y[finite]).max() <= _Y_LIMIT:
        return y
    return np.where(finite, np.clip(y, -_Y_LIMIT, _Y_LIMIT), y)


def _segments(x: FloatArray, y: FloatArray, *, step: bool) -> list[list[tuple[float, float]]]:
    """Runs of finite points (NaN breaks the line); step lines hold each value."""
    segs: list[list[tuple[float, float]]] = []
    cur: list[tuple[float, float]] = []
    for a, c in zip(x.tolist(), y.tolist(), strict=True):
        if not math.isfinite(c):
            if cur:
                segs.append(cur)
            cur = []
            continue
        if step and cur:
            cur.append((a, cur[-1][1]))
        cur.append((a, c))
    if cur:
        segs.append(cur)
    return segs


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; numbers are right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for v in row:
            num = isinstance(v, int | float) and not isinstance(v, bool)
            text = f"{v:,.2f}" if isinstance(v, float) else str(v)
            cls = ' class="n"' if num else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, blocks: Sequence[str]) -> str:
    """A complete HTML document around ``blocks`` (already HTML)."""
    style = (
        "body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}"
        "table{border-collapse:collapse;margin:8px 0 20px}"
        "th,td{border:1px solid #ccc;padding:4px 10px}th{background:#f4f4f4}"
        "td.n{text-align:right;font-variant-numeric:tabular-nums}"
        "svg{display:block;margin:8px 0 18px}p.note{color:#555;font-size:13px}"
        "code{background:#f4f4f4;padding:1px 4px}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>" + "\n".join(blocks) + "</body></html>\n"
    )


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table for the terminal."""
    cells = [[str(h) for h in headers]] + [
        [f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        parts = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(parts))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
