"""Parsing Prometheus HTTP API responses into samples (pure, no I/O).

Shared by the Prometheus source (instant queries, ``vector`` results) and by
``autoscaler record`` / ``autoscaler.dataset`` (range queries, ``matrix`` results).
Values arrive as quoted Go floats, so ``"NaN"``, ``"+Inf"`` and ``"-Inf"`` parse with
``float()`` and reach the store as non-finite values, which it counts and keeps as
unusable observations (policies hold on them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from autoscaler.errors import SourceError
from autoscaler.sources.base import Sample


def auth_header(token: str) -> str:
    """``Authorization`` value: Fly macaroons (``FlyV1 …``) as they are, else ``Bearer``."""
    return token if token.startswith("FlyV1 ") else f"Bearer {token}"


def describe_body(body: bytes, content_type: str = "") -> str:
    """A short, safe description of a non-JSON body for an error message."""
    text = body[:2048].decode("utf-8", "replace")
    low = text.lower()
    if "html" in content_type or "<html" in low or "<!doctype" in low:
        start, end = low.find("<title>"), low.find("</title>")
        title = text[start + 7 : end].strip() if 0 <= start < end else ""
        return f"HTML error page{f' ({title!r})' if title else ''}"
    first = " ".join(text.split())[:120]
    return repr(first) if first else "empty body"


def parse_envelope(
    body: bytes, *, status: int = 200, content_type: str = ""
) -> tuple[Any, list[str]]:
    """``data`` and ``warnings`` of a Prometheus API response; ``SourceError`` with the
    reason otherwise.

    Handles the JSON error envelope (``errorType``/``error``), the plain-text
    ``Service Unavailable`` answered before Prometheus is ready, HTML error pages from
    proxies, and malformed JSON.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deep for the parser
        what = describe_body(body, content_type)
        if status == 503 and b"Service Unavailable" in body[:64]:
            raise SourceError("HTTP 503: Prometheus is not ready (Service Unavailable)") from None
        if status != 200:
            raise SourceError(f"HTTP {status}: {what}") from None
        raise SourceError(f"malformed JSON: {what}") from None
    if not isinstance(doc, dict):
        raise SourceError(f"HTTP {status}: unexpected JSON {type(doc).__name__}, not an object")
    if doc.get("status") != "success":
        etype = doc.get("errorType") or "unknown"
        err = doc.get("error") or "no error message"
        raise SourceError(f"HTTP {status}: {etype}: {err}")
    if status != 200:
        raise SourceError(f"HTTP {status} with a success envelope")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise SourceError("response has no data object")
    w = doc.get("warnings")
    return data, [str(x) for x in w] if isinstance(w, list) else []


def target_of(metric: Mapping[str, str], label: str, targets: Mapping[str, str]) -> str | None:
    """Target of a series: its ``label`` value, renamed through ``targets`` when that map is
    not empty (and then only the listed values are kept)."""
    value = metric.get(label)
    if not isinstance(value, str):
        return None
    if targets:
        return targets.get(value)
    return value


def vector_samples(
    data: Mapping[str, Any],
    *,
    signal: str,
    label: str,
    targets: Mapping[str, str],
) -> tuple[list[Sample], int]:
    """Samples of an instant-query ``vector`` result, and how many series were skipped
    (no target label, or not in the ``targets`` map).

    An empty vector yields no samples: "no data" is not zero. Two series mapping to the
    same target mean the query does not aggregate by the label: that is an error, since
    picking one would silently be wrong.
    """
    if data.get("resultType") != "vector":
        raise SourceError(
            f"signal {signal!r}: expected a vector result, got {data.get('resultType')!r}"
        )
    result = data.get("result")
    if not isinstance(result, list):
        raise SourceError(f"signal {signal!r}: result is not a list")
    out: list[Sample] = []
    seen: set[str] = set()
    skipped = 0
    try:
        for item in result:
            target = target_of(item["metric"], label, targets)
            if target is None:
                skipped += 1
                continue
            if target in seen:
                raise SourceError(
                    f"signal {signal!r}: several series for {label}={target!r}; "
                    f"aggregate the query with `by ({label})`"
                )
            seen.add(target)
            ts, value = item["value"]
            out.append(Sample(target, signal, float(value), float(ts)))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise SourceError(f"signal {signal!r}: malformed vector sample: {exc!r}") from None
    return out, skipped


def matrix_samples(
    data: Mapping[str, Any],
    *,
    signal: str,
    label: str,
    targets: Mapping[str, str],
) -> list[Sample]:
    """Samples of a range-query ``matrix`` result (every point of every mapped series)."""
    if data.get("resultType") != "matrix":
        raise SourceError(
            f"signal {signal!r}: expected a matrix result, got {data.get('resultType')!r}"
        )
    out: list[Sample] = []
    try:
        for item in data["result"]:
            target = target_of(item["metric"], label, targets)
            if target is None:
                continue
            out.extend(Sample(target, signal, float(v), float(ts)) for ts, v in item["values"])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise SourceError(f"signal {signal!r}: malformed matrix sample: {exc!r}") from None
    return out
