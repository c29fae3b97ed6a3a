"""The Prometheus source: one instant query per signal per tick, whatever the target count.

Each signal is one PromQL expression whose result vector covers every target, aggregated
by a label (``sum by (service) (...)``); each series is mapped to a target by that label.
So 1,000 targets cost one request per signal. Queries run at the tick time (``time=now``)
with bounded concurrency, retries with jittered backoff on temporary failures, a response
size cap, and a circuit breaker (clock = the tick time) so a dead Prometheus is not
hammered.

Failure semantics: **if any signal's query fails, the whole source fails for that tick**
(``SourceError`` naming every failed signal). The engine then marks every (target,
signal) this source produced as stale for the pass, so affected targets hold; a partial
answer would leave the failed signal's old value looking fresh until ``max_age``.

The same source reads Fly.io metrics: point ``url`` at
``https://api.fly.io/prometheus/<org-slug>/`` with a ``FlyV1 …`` token and
``target_label = "app"``.

The sample time is what Prometheus reports (the evaluation time of the instant query).
A series that stopped being scraped disappears from the result (staleness markers, or the
5-minute lookback), so its last sample ages in the store and becomes stale after the
signal's ``max_age``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.core import CounterMetricFamily, Metric

from autoscaler.errors import SourceError
from autoscaler.sources.base import Sample
from autoscaler.sources.promql import auth_header, parse_envelope, vector_samples
from autoscaler.sources.stats import by_reason
from policies.markers import InvalidField, Seconds, Secret
from remediation.breaker import CircuitBreaker

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Errors worth retrying within the tick: the server or the network, not the query.
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

# Answers to a POST that a GET of the same query gets past: a proxy allowing only GET
# (405), or redirecting (a client follows a 301/302/303 with a GET without the form).
_USE_GET_STATUS = frozenset({301, 302, 303, 307, 308, 405})


MAX_RETRIES = 20
"""Most retries per query and tick: the backoff alone doubles with each one."""


@dataclass(frozen=True, slots=True)
class PrometheusSpec:
    """Config of a ``prometheus`` source (also Fly.io metrics)."""

    url: str = "http://127.0.0.1:9090"
    """Base URL of the Prometheus HTTP API (``/api/v1/query`` is appended)."""
    queries: dict[str, str] = field(default_factory=dict)
    """Signal name → PromQL returning one series per target, e.g.
    ``sum by (service) (queue_length)``."""
    target_label: str = "service"
    """Label whose value names the target of each series."""
    targets: dict[str, str] = field(default_factory=dict)
    """Optional label value → target name; when set, only listed values are kept."""
    timeout: Seconds = 4.0
    """Seconds one HTTP request may take. The worst case of a tick (``worst_case``) must
    stay below ``service.tick_timeout`` (config check refuses it otherwise)."""
    concurrency: int = 4
    """Most queries in flight at once (across signals)."""
    retries: int = 1
    """Retries of a temporary failure (network, 5xx, 429) within a tick (0..20)."""
    retry_backoff: Seconds = 0.2
    """First retry delay in seconds; doubles each retry, with full jitter."""
    token: Secret = field(default_factory=Secret)
    """Bearer token; a token starting with ``FlyV1 `` is sent as it is (Fly.io)."""
    max_response_bytes: int = 8 << 20
    """Larger responses are refused (a query selecting far too many series)."""
    breaker_failures: int = 5
    """Consecutive failed ticks that open the source's circuit breaker."""
    breaker_reset: Seconds = 30.0
    """Seconds the breaker stays open before a trial query."""

    def __post_init__(self) -> None:
        if self.timeout <= 0:  # aiohttp reads 0 as no timeout: a hung server holds the tick
            raise InvalidField("timeout", "must be greater than zero")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise InvalidField("retries", f"must lie in 0..{MAX_RETRIES}")
        if self.max_response_bytes < 1:  # every answer would be refused as too large
            raise InvalidField("max_response_bytes", "must be at least 1")

    def worst_case(self) -> float:
        """Seconds a collect may take against a server that never answers: every attempt
        times out, after the longest backoffs, for each round of ``concurrency`` queries."""
        retries = self.retries
        one = self.timeout * (retries + 1) + self.retry_backoff * (2**retries - 1)
        return float(one * math.ceil(len(self.queries) / max(1, self.concurrency)))


class PrometheusSource:
    """Pull source over the Prometheus HTTP API (instant queries)."""

    def __init__(
        self,
        name: str,
        spec: PrometheusSpec,
        *,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.spec = spec
        self.endpoint = spec.url.rstrip("/") + "/api/v1/query"
        self.breaker = CircuitBreaker(
            f"source:{name}",
            failure_threshold=max(1, spec.breaker_failures),
            reset_timeout=spec.breaker_reset,
            half_open_trials=1,
        )
        self.errors: Counter[str] = Counter()
        """Failed queries by reason class (``http``, ``timeout``, ``malformed``,
        ``cancelled`` (the tick gave up on it), ...)."""
        self.skipped_series = 0
        """Series without the target label (or not in ``targets``), ignored."""
        self._sleep = sleep
        self._rand = rand
        self._session: aiohttp.ClientSession | None = None
        self._use_get = False

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json"}
            if self.spec.token:
                headers["Authorization"] = auth_header(self.spec.token.get())
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.spec.timeout),
                raise_for_status=False,
            )
        return self._session

    async def collect(self, now: float) -> Sequence[Sample]:
        if not self.spec.queries:
            return []
        if not self.breaker.allow(now):
            wait = self.breaker.reset_timeout - (now - self.breaker.since)
            raise SourceError(
                f"source {self.name!r}: circuit open after repeated failures, "
                f"next try in {max(0.0, wait):.0f}s"
            )
        sem = asyncio.Semaphore(max(1, self.spec.concurrency))

        async def one(signal: str, promql: str) -> list[Sample]:
            try:
                async with sem:
                    return await self._query(signal, promql, now)
            except asyncio.CancelledError:
                self.errors["cancelled"] += 1  # the engine's tick_timeout gave up first
                raise

        items = list(self.spec.queries.items())
        try:
            results = await asyncio.gather(*(one(s, q) for s, q in items), return_exceptions=True)
        except BaseException:
            # Cancelled (the engine's tick timeout) or interrupted: the call still needs an
            # outcome, or a half-open trial stays in flight and the source never queries again.
            self.breaker.record_failure(now)
            raise
        samples: list[Sample] = []
        failed: list[str] = []
        for (signal, _), res in zip(items, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    self.breaker.record_failure(now)
                    raise res
                failed.append(f"{signal}: {res}")
            else:
                samples.extend(res)
        if failed:
            self.breaker.record_failure(now)
            raise SourceError(f"source {self.name!r}: " + "; ".join(failed))
        self.breaker.record_success(now)
        return samples

    async def _query(self, signal: str, promql: str, now: float) -> list[Sample]:
        attempt = 0
        while True:
            try:
                status, ctype, body = await self._fetch(promql, now)
                data, warnings = parse_envelope(body, status=status, content_type=ctype)
                for w in warnings:
                    log.warning(
                        "prometheus warning",
                        extra={"source": self.name, "signal": signal, "warning": w},
                    )
                samples, skipped = vector_samples(
                    data, signal=signal, label=self.spec.target_label, targets=self.spec.targets
                )
                self.skipped_series += skipped
                return samples
            except _Retryable as exc:
                if attempt >= self.spec.retries:
                    self.errors[exc.kind] += 1
                    raise SourceError(str(exc)) from None
                attempt += 1
                delay = self.spec.retry_backoff * (2 ** (attempt - 1)) * self._rand()
                await self._sleep(delay)
            except SourceError as exc:
                self.errors[_kind(str(exc))] += 1
                raise

    async def _fetch(self, promql: str, now: float) -> tuple[int, str, bytes]:
        """One request; ``_Retryable`` for network errors, timeouts and 5xx/429."""
        params = {"query": promql, "time": f"{now:.3f}"}
        session = self._client()
        try:
            if self._use_get:
                ctx = session.get(self.endpoint, params=params)
            else:
                # Not followed: a 301/302/303 would be followed by a GET without the form.
                ctx = session.post(self.endpoint, data=params, allow_redirects=False)
            async with ctx as resp:
                if resp.status in _USE_GET_STATUS and not self._use_get:
                    # A proxy that only allows GET, or redirects (the query string of a GET
                    # survives a redirect): use GET from now on.
                    self._use_get = True
                    return await self._fetch(promql, now)
                body = await _read_capped(resp, self.spec.max_response_bytes)
                ctype = resp.headers.get("Content-Type", "")
                if resp.status in _RETRY_STATUS:
                    try:
                        parse_envelope(body, status=resp.status, content_type=ctype)
                    except SourceError as exc:
                        raise _Retryable("http", str(exc)) from None
                return resp.status, ctype, body
        except TimeoutError:
            raise _Retryable("timeout", f"timed out after {self.spec.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise _Retryable("connection", f"{type(exc).__name__}: {exc}") from None

    def metric_families(self) -> list[Metric]:
        """``autoscaler_source_query_errors_total{source,reason}`` and skipped series."""
        skipped = CounterMetricFamily(
            "autoscaler_source_skipped_series",
            "Series without the target label (or not in targets), ignored",
            labels=["source"],
        )
        skipped.add_metric([self.name], float(self.skipped_series))
        return [
            by_reason(
                "autoscaler_source_query_errors",
                "Failed source queries by reason",
                self.name,
                self.errors,
            ),
            skipped,
        ]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Retryable(Exception):
    """A failure a retry may fix; ``kind`` is its counter label."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _kind(message: str) -> str:
    if "larger than" in message:
        return "too_large"
    if "malformed" in message:  # a 200 that is not the API's JSON ("malformed JSON: ...")
        return "malformed"
    if message.startswith("HTTP"):
        return "http"
    return "query"


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body, refusing (without reading it all) one larger than ``cap`` bytes."""
    length = resp.content_length
    if length is not None and length > cap:
        raise SourceError(f"response of {length} bytes is larger than the {cap}-byte cap")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > cap:
            raise SourceError(f"response is larger than the {cap}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def build(name: str, spec: PrometheusSpec) -> PrometheusSource:
    """Factory for ``SOURCE_TYPES``."""
    return PrometheusSource(name, spec)
