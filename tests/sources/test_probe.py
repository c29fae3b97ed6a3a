"""HTTP and TCP health probes against real local servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from autoscaler.config import from_mapping
from autoscaler.errors import ConfigError
from autoscaler.sources.probe import ProbeCheck, ProbeSource, ProbeSpec
from tests.harness.prometheus import free_port


class Dependency:
    """A local HTTP dependency whose readiness the test flips."""

    def __init__(self) -> None:
        self.ready = True
        self.hang = asyncio.Event()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready else 503, text="ok" if self.ready else "no")

    async def empty(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/v1/.well-known/ready")

    async def endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        while True:  # until the client goes away
            await resp.write(b"x" * 65536)

    async def slow(self, request: web.Request) -> web.Response:
        await self.hang.wait()
        return web.Response(text="late")

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))


@pytest.fixture
async def dep() -> AsyncIterator[Dependency]:
    d = Dependency()
    app = web.Application()
    app.router.add_get("/v1/.well-known/ready", d.handle)
    app.router.add_get("/slow", d.slow)
    app.router.add_get("/health", d.empty)
    app.router.add_get("/moved", d.moved)
    app.router.add_get("/endless", d.endless)
    d.server = TestServer(app)
    await d.server.start_server()
    try:
        yield d
    finally:
        d.hang.set()
        await d.server.close()


def values(samples: Any) -> dict[tuple[str, str], float]:
    return {(s.target, s.signal): s.value for s in samples}


async def test_probe_reports_up_latency_and_consecutive_failures(dep: Dependency) -> None:
    spec = ProbeSpec(checks={"vectordb": ProbeCheck(url=dep.url("/v1/.well-known/ready"))})
    src = ProbeSource("probes", spec)
    try:
        got = values(await src.collect(10.0))
        assert got[("vectordb", "probe_up")] == 1.0
        assert got[("vectordb", "probe_failures")] == 0.0
        assert got[("vectordb", "probe_latency_ms")] > 0
        assert src.drain(10.0) == [], "healthy from the start: no event"

        dep.ready = False
        for now, failures in ((11.0, 1.0), (12.0, 2.0)):
            got = values(await src.collect(now))
            assert got[("vectordb", "probe_up")] == 0.0
            assert got[("vectordb", "probe_failures")] == failures
        (down,) = src.drain(12.0)
        assert (down.name, down.status, down.target, down.at) == (
            "probe_down",
            "firing",
            "vectordb",
            11.0,
        )
        assert down.labels["error"] == "HTTP 503"

        dep.ready = True
        got = values(await src.collect(13.0))
        assert got[("vectordb", "probe_failures")] == 0.0
        assert [(e.status, e.at) for e in src.drain(13.0)] == [("resolved", 13.0)]
    finally:
        await src.aclose()


async def test_an_endless_body_is_not_read_to_the_timeout(dep: Dependency) -> None:
    # the status answers the probe: the body was read whole, so an endless one (or a
    # misrouted download) timed the probe out and filled memory meanwhile
    spec = ProbeSpec(timeout=5.0, checks={"stream": ProbeCheck(url=dep.url("/endless"))})
    src = ProbeSource("probes", spec)
    try:
        got = values(await src.collect(1.0))
    finally:
        await src.aclose()
    assert got[("stream", "probe_up")] == 1.0, src.status()


async def test_timeouts_and_closed_ports_count_as_down(dep: Dependency) -> None:
    closed = free_port()
    spec = ProbeSpec(
        timeout=0.2,
        checks={
            "slow": ProbeCheck(url=dep.url("/slow")),
            "refused": ProbeCheck(url=f"http://127.0.0.1:{closed}/ready"),
            "tcp-down": ProbeCheck(tcp=f"127.0.0.1:{closed}"),
            "tcp-up": ProbeCheck(tcp=f"127.0.0.1:{dep.url('/').split(':')[-1].rstrip('/')}"),
        },
    )
    src = ProbeSource("probes", spec)
    try:
        got = values(await src.collect(1.0))
    finally:
        await src.aclose()
    assert got[("slow", "probe_up")] == 0.0 and ("slow", "probe_latency_ms") not in got
    assert got[("refused", "probe_up")] == 0.0
    assert got[("tcp-down", "probe_up")] == 0.0
    assert got[("tcp-up", "probe_up")] == 1.0
    events = {e.target: e for e in src.drain(1.0)}
    assert set(events) == {"slow", "refused", "tcp-down"}, "first probe down fires at once"
    assert events["slow"].labels["error"] == "timed out after 0.2s"
    assert src.status()["tcp-up"] == {"up": True, "failures": 0, "error": ""}


async def test_a_tcp_port_out_of_range_fails_its_probe_not_the_others(dep: Dependency) -> None:
    bad = ProbeCheck(tcp="127.0.0.1:1")
    # Bypasses the spec's own check, as a spec built without validation would.
    object.__setattr__(bad, "tcp", "127.0.0.1:70000")
    spec = ProbeSpec(checks={"api": ProbeCheck(url=dep.url("/v1/.well-known/ready")), "db": bad})
    src = ProbeSource("probes", spec)
    try:
        got = values(await src.collect(1.0))
    finally:
        await src.aclose()
    assert got[("api", "probe_up")] == 1.0
    assert got[("db", "probe_up")] == 0.0
    assert "65535" in str(src.status()["db"]["error"])


@pytest.mark.parametrize("tcp", ["db:70000", "db:0", "db:-1", "db:x", "db", ":6379"])
def test_a_tcp_check_without_a_valid_host_and_port_is_a_config_error(tcp: str) -> None:
    with pytest.raises(ConfigError, match=r"sources\.deps\.checks\.db\.tcp: "):
        from_mapping({"sources": {"deps": {"type": "probe", "checks": {"db": {"tcp": tcp}}}}})


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        # each would report a healthy target down on every probe (and restart it)
        ({"timeout": "0s"}, "sources.deps.timeout: must be greater than zero"),
        ({"checks": {"db": {}}}, "sources.deps.checks.db: set one of url or tcp"),
        (
            {"checks": {"db": {"url": "http://db/", "tcp": "db:1"}}},
            "sources.deps.checks.db: set one of url or tcp",
        ),
        (
            {"checks": {"db": {"url": "db:8080/ready"}}},
            "sources.deps.checks.db.url: expected an http(s) URL, got 'db:8080/ready'",
        ),
        (
            {"checks": {"db": {"url": "http://db:99999/ready"}}},
            "sources.deps.checks.db.url: expected an http(s) URL, got 'http://db:99999/ready'",
        ),
        (
            {"checks": {"db": {"url": "http://db/", "expect_status": []}}},
            "sources.deps.checks.db.expect_status: name at least one status that counts as up",
        ),
    ],
)
def test_a_probe_that_could_never_succeed_is_a_config_error(
    source: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"sources": {"deps": {"type": "probe", **source}}})
    assert err.value.problems == [problem]


async def test_unexpected_status_is_down_unless_expected(dep: Dependency) -> None:
    dep.ready = False
    url = dep.url("/v1/.well-known/ready")
    spec = ProbeSpec(
        checks={
            "strict": ProbeCheck(url=url),
            "lenient": ProbeCheck(url=url, expect_status=(200, 503)),
        }
    )
    src = ProbeSource("probes", spec)
    try:
        got = values(await src.collect(1.0))
    finally:
        await src.aclose()
    assert got[("strict", "probe_up")] == 0.0
    assert got[("lenient", "probe_up")] == 1.0


async def test_any_2xx_or_3xx_is_up_by_default_as_kubernetes_probes_read_them(
    dep: Dependency,
) -> None:
    """A health endpoint that answers 204, or redirects, is healthy: reading it as down
    would have the restart rule restart a healthy service."""
    spec = ProbeSpec(
        checks={
            "empty": ProbeCheck(url=dep.url("/health")),
            "redirect": ProbeCheck(url=dep.url("/moved")),
            "only_200": ProbeCheck(url=dep.url("/health"), expect_status=(200,)),
        }
    )
    src = ProbeSource("probes", spec)
    try:
        got = values(await src.collect(1.0))
    finally:
        await src.aclose()
    assert got[("empty", "probe_up")] == 1.0 and got[("redirect", "probe_up")] == 1.0
    assert got[("only_200", "probe_up")] == 0.0


def test_probe_checks_are_configured_per_target() -> None:
    s = from_mapping(
        {
            "sources": {
                "deps": {
                    "type": "probe",
                    "timeout": "1s",
                    "checks": {
                        "vectordb": {
                            "url": "http://vectordb:8080/v1/.well-known/ready",
                            "expect_status": [200],
                        },
                        "redis": {"tcp": "redis:6379", "timeout": "500ms"},
                    },
                }
            }
        }
    )
    spec = s.sources["deps"].spec
    assert spec.timeout == 1.0
    assert spec.checks["redis"] == ProbeCheck(tcp="redis:6379", timeout=0.5)


def probe_doc(tick_timeout: str, **source: object) -> dict[str, object]:
    return {
        "service": {"tick_timeout": tick_timeout},
        "sources": {"deps": {"type": "probe", **source}},
    }


def test_probes_that_can_outlast_the_tick_timeout_are_refused_at_the_key_to_blame() -> None:
    """The engine cancels a collect at service.tick_timeout: the whole source fails that
    tick, every target's probe_up is stale and the restart rule holds, so a dependency that
    hangs is never seen down (nor any other check of the source)."""
    check = {"url": "http://vectordb:8080/ready"}
    from_mapping(probe_doc("10s", checks={"a": check, "b": {**check, "timeout": "9s"}}))
    with pytest.raises(ConfigError) as err:
        from_mapping(probe_doc("10s", checks={"a": check, "b": {**check, "timeout": "15s"}}))
    (problem,) = err.value.problems
    assert problem.startswith(
        "sources.deps.checks.b.timeout: a tick where every dependency hangs can take 15 s"
    )
    assert "service.tick_timeout (10 s)" in problem
    # three rounds of 4 s: each check alone fits, the source does not
    three = {"checks": {t: check for t in "abc"}, "timeout": "4s", "concurrency": 1}
    with pytest.raises(ConfigError) as err:
        from_mapping(probe_doc("10s", **three))
    (problem,) = err.value.problems
    assert problem.startswith(
        "sources.deps.timeout: a tick where every dependency hangs can take 12 s"
    )
    from_mapping(probe_doc("13s", **three))
    from_mapping(probe_doc("10s", **{**three, "concurrency": 3}))


def test_the_worst_case_of_probes_waits_out_each_timeout_concurrency_at_a_time() -> None:
    url = "http://vectordb:8080/ready"
    spec = ProbeSpec(
        checks={t: ProbeCheck(url=url, timeout=s) for t, s in [("a", 3.0), ("b", 1.0), ("c", 0.0)]},
        timeout=2.0,
        concurrency=2,
    )
    assert spec.worst_case() == 3.0  # a: 0-3; b: 0-1, then c: 1-3
    assert ProbeSpec().worst_case() == 0.0


async def test_the_worst_case_is_what_a_collect_takes_when_every_dependency_hangs(
    dep: Dependency,
) -> None:
    """``worst_case`` is what check compares with tick_timeout: a real collect against a
    hanging server takes that long, so a source check lets through reports in time."""
    slow = ProbeCheck(url=dep.url("/slow"))
    spec = ProbeSpec(
        timeout=0.2,
        concurrency=2,
        checks={"a": slow, "b": slow, "c": ProbeCheck(url=dep.url("/slow"), timeout=0.3)},
    )
    assert spec.worst_case() == pytest.approx(0.5)  # a and b side by side, then c after a
    src = ProbeSource("probes", spec)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        got = values(await src.collect(1.0))
    finally:
        await src.aclose()
    took = loop.time() - started
    assert {got[(t, "probe_up")] for t in "abc"} == {0.0}
    assert spec.worst_case() <= took < spec.worst_case() + 1.0
