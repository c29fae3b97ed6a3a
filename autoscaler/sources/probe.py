"""HTTP and TCP health probes of dependencies, the input of restart and circuit-break rules.

Every tick each configured check runs once, all concurrently (bounded), each under its own
timeout. Per target the source reports ``probe_up`` (1/0), ``probe_latency_ms`` (only when
an answer came back) and ``probe_failures`` (consecutive failed probes). A failed probe is
data, not a source failure: the source itself never fails a tick.

It is also a push source: an up→down transition queues a ``firing`` Event (named
``event_name``, default ``probe_down``) and down→up a ``resolved`` one, drained by the next
pass. A target whose first probe fails fires at once; one whose first probe succeeds
emits nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from prometheus_client.core import CounterMetricFamily, Metric

from autoscaler.sources.base import Sample, http_url
from policies.markers import InvalidField, Seconds
from policies.types import Event


@dataclass(frozen=True, slots=True)
class ProbeCheck:
    """One health check: ``url`` (HTTP GET) or ``tcp`` (``host:port`` connect)."""

    url: str = ""
    """HTTP(S) URL to GET, e.g. ``http://vectordb:8080/v1/.well-known/ready``."""
    tcp: str = ""
    """``host:port`` to open a TCP connection to (instead of ``url``)."""
    expect_status: tuple[int, ...] = tuple(range(200, 400))
    """HTTP statuses that count as up (default 200–399, as Kubernetes HTTP probes: a 204,
    or a redirect, which is not followed, is up)."""
    timeout: Seconds = 0.0
    """Seconds this probe may take (0: the source's ``timeout``)."""

    def __post_init__(self) -> None:
        # Each of these would report a healthy target down on every probe, and the restart
        # rule restart it: refuse them here (and a check with neither url nor tcp in
        # ProbeSpec, since these defaults must be a valid check).
        if self.tcp:
            try:
                _tcp_address(self.tcp)
            except ValueError as exc:
                raise InvalidField("tcp", str(exc)) from exc
        if self.url and http_url(self.url) is None:
            raise InvalidField("url", f"expected an http(s) URL, got {self.url[:60]!r}")
        if not self.expect_status:
            raise InvalidField("expect_status", "name at least one status that counts as up")


MAX_BODY = 1 << 20
"""Bytes of an answer's body a probe reads: a body read to its end lets the connection be
reused; a longer one (a misrouted download, an endless stream) is not read into memory or
until the timeout, and its connection is closed instead."""


async def _drain(resp: aiohttp.ClientResponse) -> None:
    read = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        read += len(chunk)
        if read > MAX_BODY:
            return


def _tcp_address(tcp: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) → (host, port); a ValueError says what is wrong."""
    host, sep, port = tcp.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise ValueError(f'expected "host:port", got {tcp!r}')
    # Checked here: a port out of range raises OverflowError, not OSError, in the socket layer.
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, got {port!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """Config of a ``probe`` source: ``[sources.NAME.checks.TARGET]`` tables."""

    checks: dict[str, ProbeCheck] = field(default_factory=dict)
    """Target name → its health check."""
    timeout: Seconds = 2.0
    """Default seconds a probe may take before it counts as down. With every dependency
    hung (``worst_case``) the probes must end below ``service.tick_timeout`` (config check
    refuses it otherwise)."""
    concurrency: int = 32
    """Most probes in flight at once."""
    event_name: str = "probe_down"
    """Name of the events queued on up↔down transitions."""
    max_events: int = 1000
    """Events kept between two drains (oldest dropped first)."""

    def __post_init__(self) -> None:
        if self.timeout <= 0:  # every probe would time out: all targets down
            raise InvalidField("timeout", "must be greater than zero")
        if self.max_events < 1:  # every up/down event would be dropped
            raise InvalidField("max_events", "must be at least 1")
        for target, check in self.checks.items():
            if bool(check.url) == bool(check.tcp):
                raise InvalidField(f"checks.{target}", "set one of url or tcp")

    def worst_case(self) -> float:
        """Seconds a collect may take when every dependency hangs: each probe waits out its
        timeout, ``concurrency`` of them at a time, in the order they start."""
        free_at = [0.0] * max(1, self.concurrency)
        for check in self.checks.values():
            start = heapq.heappop(free_at)
            heapq.heappush(free_at, start + (check.timeout or self.timeout))
        return max(free_at)


@dataclass(slots=True)
class _State:
    up: bool | None = None
    failures: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class _Result:
    up: bool
    latency_ms: float | None
    error: str


class ProbeSource:
    """Pull source of probe results and push source of up↔down events."""

    def __init__(self, name: str, spec: ProbeSpec) -> None:
        self.name = name
        self.spec = spec
        self._state: dict[str, _State] = {t: _State() for t in spec.checks}
        self._events: list[Event] = []
        self.dropped_events = 0
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                raise_for_status=False,
            )
        return self._session

    async def collect(self, now: float) -> Sequence[Sample]:
        sem = asyncio.Semaphore(max(1, self.spec.concurrency))

        async def one(check: ProbeCheck) -> _Result:
            async with sem:
                return await self._probe(check)

        names = list(self.spec.checks)
        results = await asyncio.gather(*(one(self.spec.checks[t]) for t in names))
        out: list[Sample] = []
        for target, res in zip(names, results, strict=True):
            st = self._state[target]
            st.failures = 0 if res.up else st.failures + 1
            st.error = res.error
            if st.up is not res.up and (st.up is not None or not res.up):
                self._queue(target, res, now)
            st.up = res.up
            out.append(Sample(target, "probe_up", 1.0 if res.up else 0.0, now))
            out.append(Sample(target, "probe_failures", float(st.failures), now))
            if res.latency_ms is not None:
                out.append(Sample(target, "probe_latency_ms", res.latency_ms, now))
        return out

    def _queue(self, target: str, res: _Result, now: float) -> None:
        status: Literal["firing", "resolved"] = "resolved" if res.up else "firing"
        check = self.spec.checks[target]
        labels = {"probe": check.url or f"tcp://{check.tcp}", "source": self.name}
        if res.error:
            labels["error"] = res.error
        self._events.append(
            Event(self.spec.event_name, status, target, now, labels, f"{self.name}:{target}")
        )
        if len(self._events) > self.spec.max_events:
            del self._events[0]
            self.dropped_events += 1

    def drain(self, now: float) -> Sequence[Event]:
        events, self._events = self._events, []
        return events

    def metric_families(self) -> list[Metric]:
        """Events dropped because the queue between two passes was full."""
        dropped = CounterMetricFamily(
            "autoscaler_source_dropped_events",
            "Events dropped because the queue between two passes was full",
            labels=["source"],
        )
        dropped.add_metric([self.name], float(self.dropped_events))
        return [dropped]

    def status(self) -> dict[str, dict[str, object]]:
        """Last known state of every check (for status pages and tests)."""
        return {
            t: {"up": s.up, "failures": s.failures, "error": s.error}
            for t, s in self._state.items()
        }

    async def _probe(self, check: ProbeCheck) -> _Result:
        timeout = check.timeout or self.spec.timeout
        # perf_counter measures latency only; it never decides timing of behaviour.
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                if check.tcp:
                    host, port = _tcp_address(check.tcp)
                    _, writer = await asyncio.open_connection(host, port)
                    writer.close()
                    await writer.wait_closed()
                    status = None
                else:
                    async with self._client().get(check.url, allow_redirects=False) as resp:
                        status = resp.status
                        await _drain(resp)
        except TimeoutError:
            return _Result(False, None, f"timed out after {timeout:g}s")
        except (OSError, aiohttp.ClientError, ValueError, OverflowError) as exc:
            return _Result(False, None, f"{type(exc).__name__}: {exc}"[:200])
        latency = (time.perf_counter() - started) * 1000.0
        if status is not None and status not in check.expect_status:
            return _Result(False, latency, f"HTTP {status}")
        return _Result(True, latency, "")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def build(name: str, spec: ProbeSpec) -> ProbeSource:
    """Factory for ``SOURCE_TYPES``."""
    return ProbeSource(name, spec)
