"""Alertmanager webhook intake: ``POST /v1/alertmanager`` (payload version 4).

A push source. Each alert of a delivery becomes an ``Event``: ``alertname`` → name,
``status`` (firing/resolved), the ``target_label`` label (default ``service``) → target,
the labels, ``startsAt`` (firing) or ``endsAt`` (resolved) → ``at``, and the fingerprint.
Events queue until the next pass drains them. ``collect()`` also reports
``alerts_firing`` per target (sampled at the tick).

After a (re)start the source has heard nothing, and Alertmanager sends a group that did not
change again only after the route's ``repeat_interval`` (4 h by default): a count of 0 is
not known until then. So for ``warmup`` after the first pass only targets with a firing
alert get a sample; the others have none (missing, not 0), and the restart rule keeps the
firing alerts it remembered.

With ``url`` set the source does not wait: at its first pass (and at each later one
until an answer arrives) it asks Alertmanager what fires (``GET /api/v2/alerts``, under
``timeout``) and takes the answer as the truth. Listed alerts become known as a webhook
delivery would make them (a ``firing`` event for one not already known), alerts it knew
as firing that two reads in a row no longer list get a ``resolved`` event (their resolve
was lost; one read may follow a restart of Alertmanager, which keeps alerts in memory
only, before Prometheus sent them again), and from then on a 0 is known: the warmup no
longer applies. A failed request is counted (``errors`` by reason) and retried at the
next pass; the warmup holds meanwhile. Once an answer arrived the source reads the API
again every ``resync``, the same way: a resolve lost while the service runs
(Alertmanager gave up on a POST that failed) is corrected by the second read after it,
instead of holding the alert as firing until its target's count is 0. A failed re-read
is tried again a ``resync`` later: an outage of Alertmanager costs one request per
``resync``, not one per pass. The first failure of a run is logged as a warning, the
recovery as info; each failure is counted.
Firing means what the webhook reports: Alertmanager notifies only alerts that are not
suppressed (silenced or inhibited), so those are left out; ``receiver`` restricts the
answer to the alerts routed to the receiver whose webhook points here.

Rules of the endpoint:
- bearer token required (``token``); with no token configured the endpoint answers 403
  "disabled" rather than accepting anything (Alertmanager's ``http_config.authorization``
  sends it);
- body at most ``max_body_bytes`` (413 beyond), sent within ``http.request_timeout`` (408
  after: a stalled sender cannot hold the handler);
- invalid JSON or an invalid payload → 400 with the reason, counted in ``rejected``;
  Alertmanager does not retry 4xx, so a bad payload is not resent forever;
- duplicate deliveries (same fingerprint and status, e.g. a ``repeat_interval`` resend or
  a retried POST) are accepted and ignored: the handler is idempotent;
- never a 500: anything unexpected is a 400.

An alert without the target label is accepted but reaches no target (no policy sees it).
When Alertmanager truncated a group (``max_alerts``), the number dropped is logged and
counted in ``truncated``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import aiohttp
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric

from autoscaler.sources.base import Sample, http_url
from autoscaler.sources.stats import by_reason
from policies.markers import InvalidField, Seconds, Secret
from policies.types import Event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AlertmanagerSpec:
    """Config of an ``alertmanager`` source (webhook intake)."""

    token: Secret = field(default_factory=Secret)
    """Bearer token Alertmanager must send; unset: the endpoint answers 403 (disabled)."""
    path: str = "/v1/alertmanager"
    """HTTP path of the webhook receiver."""
    target_label: str = "service"
    """Alert label naming the target."""
    targets: dict[str, str] = field(default_factory=dict)
    """Optional label value → target name (values not listed pass through unchanged)."""
    max_body_bytes: int = 1 << 20
    """Largest accepted request body in bytes."""
    max_events: int = 10000
    """Events kept between two drains (oldest dropped first)."""
    max_fingerprints: int = 10000
    """Alerts remembered for de-duplication and the firing count."""
    warmup: Seconds = 4 * 3600.0 + 600.0
    """Seconds after the first pass before ``alerts_firing`` reports 0 for a target (until
    then only counts above 0 are reported): at least the route's ``repeat_interval`` plus
    its ``group_interval``, the longest Alertmanager takes to send a still-firing group
    again. Ends early once Alertmanager's API answered (``url``)."""
    url: str = ""
    """Base URL of Alertmanager (``http://alertmanager:9093``); when set, what fires is read
    from its API (``/api/v2/alerts``) at start-up instead of waiting out ``warmup``."""
    api_token: Secret = field(default_factory=Secret)
    """Bearer token sent to ``url`` (a proxy in front of Alertmanager); unset: none."""
    receiver: str = ""
    """Only alerts routed to a receiver matching this regular expression (Alertmanager's
    ``receiver`` filter; the receiver whose webhook points here); empty: all alerts."""
    timeout: Seconds = 2.0
    """Seconds the request to ``url`` may take; below ``service.tick_timeout``."""
    resync: Seconds = 300.0
    """Seconds between reads of the API (``url``) after one answered: a resolve the webhook
    lost is corrected within this (0: read only until the first answer)."""

    def __post_init__(self) -> None:
        if self.url:
            parts = http_url(self.url)
            if parts is None or parts.query or parts.fragment:
                raise InvalidField(
                    "url",
                    'expected the base URL of Alertmanager like "http://alertmanager:9093",'
                    f" got {self.url[:60]!r}",
                )
        # Below 1, each would refuse every delivery (413, or a 400 Alertmanager does not
        # retry) or drop what it brings.
        for key in ("max_body_bytes", "max_events", "max_fingerprints"):
            if getattr(self, key) < 1:
                raise InvalidField(key, "must be at least 1")
        if self.timeout <= 0:
            raise InvalidField("timeout", "must be greater than zero")
        if self.resync < 0:
            raise InvalidField("resync", "must be 0 (off) or more")

    def worst_case(self) -> float:
        """Seconds a collect may take against an Alertmanager that never answers."""
        return float(self.timeout) if self.url else 0.0


class PayloadError(ValueError):
    """The webhook body is not a valid version-4 payload."""


@dataclass(frozen=True, slots=True)
class _Alert:
    name: str
    status: Literal["firing", "resolved"]
    target: str
    at: float
    labels: dict[str, str]
    fingerprint: str


def parse_time(value: object, where: str) -> float:
    """Epoch seconds from an RFC 3339 time (Go writes up to nanoseconds)."""
    if not isinstance(value, str):
        raise PayloadError(f"{where}: expected an RFC 3339 time string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python keeps microseconds: cut nanosecond digits Go may write.
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[: min(digits, 6)] + rest[digits:]
        text = f"{head}.{rest}"
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            raise PayloadError(f"{where}: time has no timezone: {value[:40]!r}")
        return dt.timestamp()
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, PayloadError):
            raise
        raise PayloadError(f"{where}: not an RFC 3339 time: {value[:40]!r}") from None


def _labels(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PayloadError(f"{where}: expected an object of string labels")
    return value


def _named(value: object, where: str) -> tuple[dict[str, str], str]:
    """An alert's labels and its ``alertname``, which it must have."""
    labels = _labels(value, where)
    name = labels.get("alertname", "")
    if not name:
        raise PayloadError(f"{where}: no alertname")
    return labels, name


def _target(labels: Mapping[str, str], target_label: str, targets: Mapping[str, str]) -> str:
    """The target an alert names: its ``target_label`` value, renamed by ``targets``."""
    value = labels.get(target_label, "")
    return targets.get(value, value)


def parse_payload(doc: object, *, target_label: str, targets: Mapping[str, str]) -> list[_Alert]:
    """Alerts of a version-4 webhook payload; ``PayloadError`` naming the first problem."""
    if not isinstance(doc, dict):
        raise PayloadError("payload: expected a JSON object")
    if doc.get("version") != "4":
        raise PayloadError(f'version: expected "4", got {str(doc.get("version"))[:20]!r}')
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts: expected a list")
    out: list[_Alert] = []
    for i, a in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(a, dict):
            raise PayloadError(f"{where}: expected an object")
        status = a.get("status")
        if status not in ("firing", "resolved"):
            raise PayloadError(f"{where}.status: expected firing or resolved")
        labels, name = _named(a.get("labels"), f"{where}.labels")
        if status == "firing":
            at = parse_time(a.get("startsAt"), f"{where}.startsAt")
        else:
            at = parse_time(a.get("endsAt"), f"{where}.endsAt")
        fp = a.get("fingerprint", "")
        if not isinstance(fp, str):
            raise PayloadError(f"{where}.fingerprint: expected a string")
        if not fp:  # older senders: identify the alert by its label set
            fp = "labels:" + json.dumps(labels, sort_keys=True)
        out.append(_Alert(name, status, _target(labels, target_label, targets), at, labels, fp))
    return out


def parse_api_alerts(doc: object, *, target_label: str, targets: Mapping[str, str]) -> list[_Alert]:
    """The firing alerts of a ``GET /api/v2/alerts`` answer (a list of gettableAlert);
    ``PayloadError`` naming the first problem. A suppressed alert (silenced or inhibited)
    is not firing here: Alertmanager does not notify it, so the webhook never reports it.
    ``unprocessed`` (not judged yet; 0.25 judges every alert it lists) is not muted, so
    it counts."""
    if not isinstance(doc, list):
        raise PayloadError("answer: expected a JSON list of alerts")
    out: list[_Alert] = []
    for i, a in enumerate(doc):
        where = f"alerts[{i}]"
        if not isinstance(a, dict):
            raise PayloadError(f"{where}: expected an object")
        status = a.get("status")
        state = status.get("state") if isinstance(status, dict) else None
        if state not in ("active", "suppressed", "unprocessed"):
            raise PayloadError(f"{where}.status.state: expected active, suppressed or unprocessed")
        labels, name = _named(a.get("labels"), f"{where}.labels")
        at = parse_time(a.get("startsAt"), f"{where}.startsAt")
        fp = a.get("fingerprint")
        if not isinstance(fp, str) or not fp:
            raise PayloadError(f"{where}.fingerprint: expected a non-empty string")
        if state == "suppressed":
            continue
        target = _target(labels, target_label, targets)
        out.append(_Alert(name, "firing", target, at, labels, fp))
    return out


class SyncError(Exception):
    """Alertmanager's API gave no usable answer; ``reason`` is its counter label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# An answer larger than this is refused: 16 MiB is tens of thousands of alerts.
_MAX_ANSWER_BYTES = 16 << 20


class AlertmanagerSource:
    """Webhook intake for Alertmanager; drained as events, counted as ``alerts_firing``."""

    def __init__(self, name: str, spec: AlertmanagerSpec) -> None:
        self.name = name
        self.spec = spec
        self._events: list[Event] = []
        # fingerprint → the alert as last delivered (or listed by the API), oldest first.
        self._seen: OrderedDict[str, _Alert] = OrderedDict()
        self._watched: frozenset[str] = frozenset()
        """The engine's targets (``watch_targets``), as last told."""
        self.rejected: Counter[str] = Counter()
        """Refused deliveries by reason (``json``, ``schema``, ``too_large``, ``auth``,
        ``timeout``)."""
        self.accepted = 0
        self.duplicates = 0
        self.dropped_events = 0
        self.truncated = 0
        self.errors: Counter[str] = Counter()
        """Failed requests to Alertmanager's API by reason (``connection``, ``timeout``,
        ``http``, ``malformed``, ``too_large``, ``cancelled``)."""
        self.synced = False
        """Alertmanager's API answered once: what fires is known, 0 included."""
        self._tried_at = math.nan
        """``now`` of the pass that last asked the API."""
        self._failing = False
        """The last request failed (the next failure is not logged again)."""
        self._started: float | None = None
        self._counted: set[str] = set()
        """Targets given a count during the warmup."""
        # Fingerprints delivered by the webhook while a request to the API is in flight:
        # newer than the answer, which must not undo them.
        self._delivered: set[str] | None = None
        self._absent: set[str] = set()
        """Alerts known as firing that the last API read did not list."""

    # --- push side ---------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [web.post(self.spec.path, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        try:
            return await self._handle(request)
        except Exception as exc:  # never a 500: the sender would retry a broken payload
            log.exception("alertmanager intake failed")
            self.rejected["error"] += 1
            return _bad(f"could not process the payload: {type(exc).__name__}")

    async def _handle(self, request: web.Request) -> web.Response:
        # Imported here: autoscaler.http imports the engine, which imports this package.
        from autoscaler.http import check_bearer, read_body

        refused = check_bearer(request, self.spec.token)
        if refused is not None:
            self.rejected["auth"] += 1
            return refused
        cap = self.spec.max_body_bytes
        try:
            body = await read_body(request, cap)
        except TimeoutError:
            self.rejected["timeout"] += 1
            return _bad("the body did not arrive within http.request_timeout", status=408)
        if body is None:
            self.rejected["too_large"] += 1
            return _bad(f"body larger than {cap} bytes", status=413)
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self.rejected["json"] += 1
            return _bad(f"invalid JSON: {str(exc)[:200]}")
        try:
            alerts = parse_payload(
                doc, target_label=self.spec.target_label, targets=self.spec.targets
            )
        except PayloadError as exc:
            self.rejected["schema"] += 1
            return _bad(str(exc)[:300])
        truncated = doc.get("truncatedAlerts") if isinstance(doc, dict) else None
        # Alertmanager sends a uint64; a larger number (JSON integers have no limit) would
        # make the counter overflow a float and break every later /metrics scrape.
        if (
            isinstance(truncated, int)
            and not isinstance(truncated, bool)
            and 0 < truncated < 1 << 64
        ):
            self.truncated += truncated
            log.warning("alertmanager truncated alerts", extra={"dropped": truncated})
        new = self._ingest(alerts)
        self.accepted += 1
        return web.json_response({"accepted": len(alerts), "new": new})

    def _ingest(self, alerts: Sequence[_Alert], *, delivered: bool = True) -> int:
        new = 0
        for a in alerts:
            if delivered and self._delivered is not None:
                self._delivered.add(a.fingerprint)
            seen = self._seen.get(a.fingerprint)
            if seen is not None and (seen.status, seen.target) == (a.status, a.target):
                if delivered:
                    self.duplicates += 1
                continue
            self._seen[a.fingerprint] = a
            self._seen.move_to_end(a.fingerprint)
            while len(self._seen) > self.spec.max_fingerprints:
                self._seen.popitem(last=False)
            self._events.append(Event(a.name, a.status, a.target, a.at, a.labels, a.fingerprint))
            if len(self._events) > self.spec.max_events:
                del self._events[0]
                self.dropped_events += 1
            new += 1
        return new

    @property
    def pending(self) -> tuple[Event, ...]:
        """Events waiting for the next drain (a copy)."""
        return tuple(self._events)

    def drain(self, now: float) -> Sequence[Event]:
        events, self._events = self._events, []
        return events

    def metric_families(self) -> list[Metric]:
        """Refused deliveries by reason, accepted deliveries, duplicates, dropped events,
        failed requests to Alertmanager's API by reason."""
        accepted = CounterMetricFamily(
            "autoscaler_webhook_deliveries",
            "Accepted webhook deliveries",
            labels=["source"],
        )
        accepted.add_metric([self.name], float(self.accepted))
        dups = CounterMetricFamily(
            "autoscaler_webhook_duplicate_alerts",
            "Alerts delivered again with the same fingerprint and status (ignored)",
            labels=["source"],
        )
        dups.add_metric([self.name], float(self.duplicates))
        dropped = CounterMetricFamily(
            "autoscaler_source_dropped_events",
            "Events dropped because the queue between two passes was full",
            labels=["source"],
        )
        dropped.add_metric([self.name], float(self.dropped_events))
        rejected = by_reason(
            "autoscaler_webhook_rejected",
            "Refused webhook deliveries by reason",
            self.name,
            self.rejected,
        )
        truncated = CounterMetricFamily(
            "autoscaler_webhook_truncated_alerts",
            "Alerts Alertmanager left out of deliveries (its max_alerts)",
            labels=["source"],
        )
        truncated.add_metric([self.name], float(self.truncated))
        errors = by_reason(
            "autoscaler_source_query_errors",
            "Failed source queries by reason",
            self.name,
            self.errors,
        )
        return [accepted, dups, dropped, rejected, truncated, errors]

    # --- pull side ---------------------------------------------------------------------

    def watch_targets(self, targets: Iterable[str]) -> None:
        """The engine's targets (configured and discovered). Every alert that names one
        reaches it (by its label value, or through the ``targets`` map, which renames only
        the values it lists), so once a 0 is known (warmup over, or the API read) a target
        no alert ever named gets its 0 too, and the restart rule forgets an alert of it
        whose resolve was lost. A target the engine no longer has is no longer watched."""
        self._watched = frozenset(targets)

    async def collect(self, now: float) -> Sequence[Sample]:
        if self._started is None:
            self._started = now
        if self.spec.url and self._sync_due(now):
            await self._sync(now)
        firing: Counter[str] = Counter(
            a.target for a in self._seen.values() if a.status == "firing" and a.target
        )
        if not self.synced and now - self._started < self.spec.warmup:  # a 0 is not known yet
            # A target whose alerts all resolved since: its count is not known either (a
            # group not yet re-sent may fire), but the last one reported is wrong: NaN
            # makes it unusable, where no sample would leave it fresh until max_age.
            unknown = self._counted - firing.keys()
            self._counted |= firing.keys()
            return [
                Sample(t, "alerts_firing", float(firing.get(t, math.nan)), now)
                for t in sorted(firing.keys() | unknown)
            ]
        # Known: mapped, watched, or named by an alert still remembered (``_seen`` is
        # bounded): a label value no alert has named for ``max_fingerprints`` alerts is
        # dropped, its row ages out of the store, and churning label values (or a sender
        # making them up) cannot grow the store without end.
        known = {a.target for a in self._seen.values() if a.target}
        known |= self._watched
        known.update(self.spec.targets.values())
        return [Sample(t, "alerts_firing", float(firing.get(t, 0)), now) for t in sorted(known)]

    def _sync_due(self, now: float) -> bool:
        """No answer yet, or the last request is ``resync`` old (or from the future: the
        clock went back)."""
        if not self.synced:
            return True
        resync = self.spec.resync
        return resync > 0 and not 0 <= now - self._tried_at < resync

    async def _sync(self, now: float) -> None:
        """Take Alertmanager's list of firing alerts as the truth; on failure count, log
        and leave everything as it was (``_sync_due`` says when to ask again)."""
        self._tried_at = now
        delivered: set[str] = set()
        self._delivered = delivered
        try:
            doc = await self._fetch()
            listed = parse_api_alerts(
                doc, target_label=self.spec.target_label, targets=self.spec.targets
            )
        except asyncio.CancelledError:
            self.errors["cancelled"] += 1  # the engine's tick_timeout gave up first
            raise
        except (SyncError, PayloadError) as exc:
            reason = exc.reason if isinstance(exc, SyncError) else "malformed"
            self.errors[reason] += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "could not read what fires from alertmanager; asking again %s",
                    f"every {self.spec.resync:g} s" if self.synced else "every pass",
                    extra={"source": self.name, "reason": reason, "error": str(exc)[:300]},
                )
            return
        finally:
            self._delivered = None
        listed = [a for a in listed if a.fingerprint not in delivered]
        fingerprints = {a.fingerprint for a in listed}
        # Known as firing but no longer listed, in this read and the one before: the resolve
        # was lost (we were down, or its delivery failed for good). One read is not enough:
        # Alertmanager keeps alerts in memory only, and a read just after it restarted, before
        # Prometheus sent them again, lists none of them.
        absent = {
            fp
            for fp, a in self._seen.items()
            if a.status == "firing" and fp not in fingerprints and fp not in delivered
        }
        gone = [
            _Alert(a.name, "resolved", a.target, now, a.labels, fp)
            for fp, a in self._seen.items()
            if fp in absent and fp in self._absent
        ]
        self._absent = absent - {a.fingerprint for a in gone}
        changed = self._ingest([*gone, *listed], delivered=False)
        # info at the first answer, after failures, or when it corrected something
        quiet = self.synced and not self._failing and not changed
        self.synced, self._failing = True, False
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "alertmanager API read",
            extra={"source": self.name, "firing": len(listed), "resolved": len(gone)},
        )

    async def _fetch(self) -> object:
        """The decoded answer of ``GET /api/v2/alerts``; ``SyncError`` otherwise."""
        # What the webhook would deliver: not silenced, not inhibited (parse_api_alerts
        # drops suppressed ones again, whatever the server did with these).
        params = {
            "active": "true",
            "silenced": "false",
            "inhibited": "false",
            "unprocessed": "true",
        }
        if self.spec.receiver:
            params["receiver"] = self.spec.receiver
        headers = {"Accept": "application/json"}
        if self.spec.api_token:
            headers["Authorization"] = f"Bearer {self.spec.api_token.get()}"
        url = self.spec.url.rstrip("/") + "/api/v2/alerts"
        timeout = aiohttp.ClientTimeout(total=self.spec.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, headers=headers) as session,
                session.get(url, params=params) as resp,
            ):
                if resp.status != 200:
                    text = (await resp.content.read(200)).decode("utf-8", "replace")
                    raise SyncError("http", f"HTTP {resp.status}: {' '.join(text.split())!r}")
                body = bytearray()
                while len(body) <= _MAX_ANSWER_BYTES:  # read(n) may return less than n
                    chunk = await resp.content.read(_MAX_ANSWER_BYTES + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
        except TimeoutError:
            raise SyncError("timeout", f"timed out after {self.spec.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise SyncError("connection", f"{type(exc).__name__}: {exc}") from None
        if len(body) > _MAX_ANSWER_BYTES:
            raise SyncError("too_large", f"answer larger than {_MAX_ANSWER_BYTES} bytes")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise SyncError("malformed", f"invalid JSON: {str(exc)[:200]}") from None

    async def aclose(self) -> None:
        return None


def _bad(reason: str, *, status: int = 400) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def build(name: str, spec: AlertmanagerSpec) -> AlertmanagerSource:
    """Factory for ``SOURCE_TYPES``."""
    return AlertmanagerSource(name, spec)
