"""Recorded datasets: what ``autoscaler record`` writes and replay reads.

Two formats:

- long CSV with the header ``timestamp,target,signal,value``; ``timestamp`` is unix
  seconds (or ISO-8601 with a timezone; a naive one is read as UTC); ``value`` is a float
  (``NaN``, ``+Inf`` and ``-Inf`` allowed — the store counts them and keeps them as
  unusable observations, never as history);
- JSON dump (``--format json``): ``{"format": "autoscaler-record/1", "start", "end",
  "step", "signals": {SIGNAL: {"source", "query", "target_label", "targets",
  "data": <Prometheus query_range data: {"resultType": "matrix", "result": [...]}>}}}``.

``autoscaler.replay.read_metrics`` reads both (and Prometheus ``query_range`` answers) into
series; ``read_record_json`` here turns a dump into ``Sample`` lists sorted by time, and bad
input raises ``DatasetError`` naming the file and problem. ``parse_timestamp`` is the one
reader of times in recorded files and on command lines.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autoscaler.errors import AutoscalerError, SourceError
from autoscaler.sources.base import Sample
from autoscaler.sources.promql import matrix_samples

HEADER = ("timestamp", "target", "signal", "value")
JSON_FORMAT = "autoscaler-record/1"

MAX_TIME = 1e11
"""Timestamps beyond this (the year 5138) are not unix seconds: milliseconds, a typo. Nor
are negative ones (before 1970, down to years no date can show)."""


class DatasetError(AutoscalerError):
    """A dataset file is missing or malformed."""


def parse_timestamp(text: str) -> float:
    """Unix seconds from ``"1700000000.5"`` or an ISO-8601 time (``2014-07-01 00:00:00``,
    ``...Z``, ``...+02:00``; without an offset it is UTC). Raises ``ValueError``."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not unix seconds or ISO-8601: {text[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"timestamp is not finite: {text!r}")
    return value


def bad_byte_line(path: Path) -> int | None:
    """The line of the first byte of ``path`` that is not UTF-8 (a leading BOM is fine), or
    None. Readers decode text a block ahead of the CSV parser, so the parser's line number
    is not where the bad byte is: this finds it in the file itself."""
    try:
        data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return data.count(b"\n", 0, bad.start) + 1
    except OSError:
        pass
    return None


def format_value(value: float) -> str:
    """A float as CSV text that ``float()`` reads back exactly (Prometheus spellings for
    the special values)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def write_long_csv(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples as long CSV; returns the number of rows."""
    n = 0
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for s in samples:
            w.writerow((repr(s.at), s.target, s.signal, format_value(s.value)))
            n += 1
    return n


def read_record_json(path: str | Path) -> list[Sample]:
    """Samples of a JSON dump written by ``autoscaler record --format json``."""
    p = Path(path)
    try:
        doc: Any = json.loads(p.read_bytes())
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise DatasetError(f"{p}: not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        raise DatasetError(f"{p}: not an autoscaler record dump (format {JSON_FORMAT!r})")
    signals = doc.get("signals")
    if not isinstance(signals, dict):
        raise DatasetError(f"{p}: 'signals' must be an object")
    out: list[Sample] = []
    for signal, entry in signals.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("data"), dict):
            raise DatasetError(f"{p}: signals.{signal}: expected an object with 'data'")
        targets = entry.get("targets") or {}
        label = entry.get("target_label", "service")
        if (
            not isinstance(targets, dict)
            or not all(isinstance(v, str) for v in targets.values())
            or not isinstance(label, str)
        ):
            raise DatasetError(f"{p}: signals.{signal}: bad target_label or targets")
        try:
            out.extend(matrix_samples(entry["data"], signal=signal, label=label, targets=targets))
        except SourceError as exc:
            raise DatasetError(f"{p}: signals.{signal}: {exc}") from None
    out.sort(key=lambda s: s.at)
    return out
