"""Faults a real Prometheus (or the proxy in front of it) produces, replayed by a local
aiohttp server that answers what Prometheus and proxies answer: the 503 text before
readiness, JSON error envelopes, HTML error pages, truncated JSON, huge bodies, slowness.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from autoscaler.errors import SourceError
from autoscaler.sources.prometheus import PrometheusSource, PrometheusSpec
from policies.markers import Secret

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def vector(*series: tuple[str, str], ts: float = 1000.0, label: str = "service") -> bytes:
    result = [{"metric": {label: t}, "value": [ts, v]} for t, v in series]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


class FakePrometheus:
    """Answers ``/api/v1/query`` with whatever the test's handler returns."""

    def __init__(self) -> None:
        self.handler: Handler = self.ok
        self.requests: list[dict[str, Any]] = []
        self.server: TestServer | None = None

    async def ok(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=vector(("api", "3")), content_type="application/json")

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post()) if request.method == "POST" else dict(request.query)
        self.requests.append(
            {"method": request.method, "auth": request.headers.get("Authorization"), **form}
        )
        return await self.handler(request)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))


@pytest.fixture
async def fake() -> AsyncIterator[FakePrometheus]:
    f = FakePrometheus()
    app = web.Application()
    app.router.add_route("*", "/api/v1/query", f.dispatch)
    f.server = TestServer(app)
    await f.server.start_server()
    try:
        yield f
    finally:
        await f.server.close()


class Sleeps:
    """Injected sleep: records delays, never sleeps."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def source(fake: FakePrometheus, sleeps: Sleeps | None = None, **kw: Any) -> PrometheusSource:
    spec = PrometheusSpec(
        url=fake.url, queries=kw.pop("queries", {"q": "sum by (service) (q)"}), **kw
    )
    return PrometheusSource("prom", spec, sleep=sleeps or Sleeps(), rand=lambda: 1.0)


async def collect_error(src: PrometheusSource, now: float = 1000.0) -> str:
    try:
        with pytest.raises(SourceError) as info:
            await src.collect(now)
    finally:
        await src.aclose()
    return str(info.value)


async def test_instant_query_is_posted_at_the_tick_time(fake: FakePrometheus) -> None:
    src = source(fake)
    try:
        samples = await src.collect(1234.5)
    finally:
        await src.aclose()
    assert [(s.target, s.signal, s.value, s.at) for s in samples] == [("api", "q", 3.0, 1000.0)]
    assert fake.requests == [
        {"method": "POST", "auth": None, "query": "sum by (service) (q)", "time": "1234.500"}
    ]


async def test_special_values_arrive_as_non_finite_floats(fake: FakePrometheus) -> None:
    async def special(request: web.Request) -> web.Response:
        body = vector(("a", "NaN"), ("b", "+Inf"), ("c", "-Inf"), ("d", "1e-3"))
        return web.Response(body=body, content_type="application/json")

    fake.handler = special
    src = source(fake)
    try:
        got = {s.target: s.value for s in await src.collect(1000.0)}
    finally:
        await src.aclose()
    assert math.isnan(got["a"]) and got["b"] == math.inf and got["c"] == -math.inf
    assert got["d"] == 0.001


async def test_empty_vector_means_no_samples_not_zero(fake: FakePrometheus) -> None:
    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=vector(), content_type="application/json")

    fake.handler = empty
    src = source(fake)
    try:
        assert list(await src.collect(1000.0)) == []
    finally:
        await src.aclose()


async def test_service_unavailable_text_before_ready_is_a_counted_source_error(
    fake: FakePrometheus,
) -> None:
    async def not_ready(request: web.Request) -> web.Response:
        return web.Response(status=503, text="Service Unavailable")

    fake.handler = not_ready
    sleeps = Sleeps()
    src = source(fake, sleeps, retries=2, retry_backoff=0.5)
    msg = await collect_error(src)
    assert "q: HTTP 503: Prometheus is not ready (Service Unavailable)" in msg
    assert len(fake.requests) == 3, "503 is temporary: retried"
    assert sleeps.delays == [0.5, 1.0], "exponential backoff (jitter factor fixed at 1)"
    assert src.errors["http"] == 1


async def test_error_envelope_is_reported_with_its_type_and_not_retried(
    fake: FakePrometheus,
) -> None:
    async def bad(request: web.Request) -> web.Response:
        body = {"status": "error", "errorType": "bad_data", "error": "parse error at char 4"}
        return web.json_response(body, status=400)

    fake.handler = bad
    src = source(fake, retries=3)
    msg = await collect_error(src)
    assert "bad_data: parse error at char 4" in msg
    assert len(fake.requests) == 1


async def test_html_error_page_is_a_source_error_naming_it(fake: FakePrometheus) -> None:
    async def html(request: web.Request) -> web.Response:
        page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
        return web.Response(status=502, text=page, content_type="text/html")

    fake.handler = html
    msg = await collect_error(source(fake, retries=0))
    assert "HTTP 502" in msg and "HTML error page ('502 Bad Gateway')" in msg


async def test_an_html_page_is_counted_as_http_unless_it_came_with_a_200(
    fake: FakePrometheus,
) -> None:
    """A proxy's 404 or 403 page is an HTTP failure (a wrong URL, a refused token), not a
    malformed answer; an HTML page sent with 200 (a captive portal) is malformed."""
    status = 404

    async def html(request: web.Request) -> web.Response:
        page = "<html><head><title>Not Found</title></head><body>nginx</body></html>"
        return web.Response(status=status, text=page, content_type="text/html")

    fake.handler = html
    src = source(fake, retries=0)
    assert "HTTP 404: HTML error page" in await collect_error(src)
    status = 200
    assert "malformed JSON: HTML error page" in await collect_error(src, now=1015.0)
    assert src.errors == {"http": 1, "malformed": 1}


async def test_malformed_json_is_a_source_error(fake: FakePrometheus) -> None:
    async def truncated(request: web.Request) -> web.Response:
        return web.Response(body=vector(("api", "1"))[:-7], content_type="application/json")

    fake.handler = truncated
    src = source(fake)
    msg = await collect_error(src)
    assert "malformed JSON" in msg
    assert src.errors["malformed"] == 1


async def test_a_body_over_the_cap_is_refused(fake: FakePrometheus) -> None:
    big = vector(*((f"svc{i}", "1") for i in range(5000)))

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=big, content_type="application/json")

    async def huge_chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(big), 4096):
            await resp.write(big[i : i + 4096])
        await resp.write_eof()
        return resp

    for handler in (huge, huge_chunked):
        fake.handler = handler
        src = source(fake, max_response_bytes=10_000)
        msg = await collect_error(src)
        assert "10000-byte cap" in msg
        assert src.errors["too_large"] == 1


async def test_slow_prometheus_times_out_within_the_tick(fake: FakePrometheus) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=vector(), content_type="application/json")

    fake.handler = slow
    src = source(fake, timeout=0.2, retries=1)
    try:
        msg = await collect_error(src)
    finally:
        release.set()
    assert "timed out after 0.2s" in msg
    assert src.errors["timeout"] == 1


async def test_one_failing_signal_fails_the_source_and_names_the_signal(
    fake: FakePrometheus,
) -> None:
    async def by_query(request: web.Request) -> web.Response:
        if "broken" in (await request.post())["query"]:
            return web.json_response(
                {"status": "error", "errorType": "execution", "error": "boom"}, status=422
            )
        return web.Response(body=vector(("api", "1")), content_type="application/json")

    fake.handler = by_query
    src = source(fake, queries={"good": "sum by (service) (x)", "bad": "broken"})
    msg = await collect_error(src)
    assert "bad: HTTP 422: execution: boom" in msg and "good" not in msg


async def test_a_query_without_aggregation_is_refused_with_advice(fake: FakePrometheus) -> None:
    async def dup(request: web.Request) -> web.Response:
        return web.Response(
            body=vector(("api", "1"), ("api", "2")), content_type="application/json"
        )

    fake.handler = dup
    msg = await collect_error(source(fake))
    assert "by (service)" in msg


async def test_warnings_are_logged_and_data_kept(
    fake: FakePrometheus, caplog: pytest.LogCaptureFixture
) -> None:
    async def warn(request: web.Request) -> web.Response:
        doc = json.loads(vector(("api", "2")))
        doc["warnings"] = ["partial response: store down"]
        return web.json_response(doc)

    fake.handler = warn
    src = source(fake)
    with caplog.at_level(logging.WARNING, logger="autoscaler.sources.prometheus"):
        try:
            samples = await src.collect(1000.0)
        finally:
            await src.aclose()
    assert [s.value for s in samples] == [2.0]
    assert any(getattr(r, "warning", "") == "partial response: store down" for r in caplog.records)


async def test_targets_map_renames_and_filters_label_values(fake: FakePrometheus) -> None:
    async def apps(request: web.Request) -> web.Response:
        body = vector(("platform-api", "1"), ("other-app", "2"), label="app")
        return web.Response(body=body, content_type="application/json")

    fake.handler = apps
    src = source(fake, target_label="app", targets={"platform-api": "api"})
    try:
        samples = await src.collect(1000.0)
    finally:
        await src.aclose()
    assert [(s.target, s.value) for s in samples] == [("api", 1.0)]
    assert src.skipped_series == 1


@pytest.mark.parametrize(
    ("token", "header"),
    [("abc", "Bearer abc"), ("FlyV1 fm2_xyz,fm2_abc", "FlyV1 fm2_xyz,fm2_abc")],
)
async def test_token_is_sent_as_bearer_or_as_a_fly_macaroon(
    fake: FakePrometheus, token: str, header: str
) -> None:
    src = source(fake, token=Secret(token))
    try:
        await src.collect(1000.0)
    finally:
        await src.aclose()
    assert fake.requests[0]["auth"] == header


async def test_a_get_only_endpoint_is_queried_with_get_after_405(fake: FakePrometheus) -> None:
    async def get_only(request: web.Request) -> web.Response:
        if request.method != "GET":
            return web.Response(status=405, text="Method Not Allowed")
        return await fake.ok(request)

    fake.handler = get_only
    src = source(fake, retries=0)
    try:
        assert [s.value for s in await src.collect(1000.0)] == [3.0]
        await src.collect(1001.0)
    finally:
        await src.aclose()
    assert [r["method"] for r in fake.requests] == ["POST", "GET", "GET"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirected_post_is_sent_again_as_a_get_that_keeps_the_query(
    status: int,
) -> None:
    """A proxy redirecting the API (http to https, a moved prefix) with 301/302/303 makes
    the client follow with a GET without the POSTed form: the query was lost and the
    server answered "no query". The query string of a GET survives the redirect."""
    seen: list[tuple[str, str]] = []

    async def moved(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        return web.Response(status=status, headers={"Location": "/new" + request.path_qs})

    async def new(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        if request.query.get("query") != "sum by (service) (q)":
            body = {"status": "error", "errorType": "bad_data", "error": "no query"}
            return web.json_response(body, status=400)
        return web.Response(body=vector(("api", "3")), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", moved)
    app.router.add_route("*", "/new/api/v1/query", new)
    server = TestServer(app)
    await server.start_server()
    spec = PrometheusSpec(
        url=str(server.make_url("/")), queries={"q": "sum by (service) (q)"}, retries=0
    )
    src = PrometheusSource("prom", spec)
    try:
        assert [s.value for s in await src.collect(1000.0)] == [3.0]
        assert [s.value for s in await src.collect(1015.0)] == [3.0]
    finally:
        await src.aclose()
        await server.close()
    assert seen == [
        ("POST", "/api/v1/query"),
        ("GET", "/api/v1/query"),
        ("GET", "/new/api/v1/query"),
        ("GET", "/api/v1/query"),
        ("GET", "/new/api/v1/query"),
    ]


async def test_breaker_opens_after_failed_ticks_and_a_trial_closes_it(
    fake: FakePrometheus,
) -> None:
    healthy = False

    async def flaky(request: web.Request) -> web.Response:
        if healthy:
            return await fake.ok(request)
        return web.Response(status=500, text="internal")

    fake.handler = flaky
    src = source(fake, retries=0, breaker_failures=2, breaker_reset=30)
    try:
        for now in (1000.0, 1001.0):
            with pytest.raises(SourceError, match="HTTP 500"):
                await src.collect(now)
        with pytest.raises(SourceError, match="circuit open"):
            await src.collect(1002.0)
        assert len(fake.requests) == 2, "an open breaker sends nothing"
        healthy = True
        assert [s.value for s in await src.collect(1031.0)] == [3.0]
        assert src.breaker.state == "closed"
    finally:
        await src.aclose()


async def test_a_half_open_trial_cancelled_by_the_tick_timeout_does_not_block_later_trials(
    fake: FakePrometheus,
) -> None:
    mode = "down"
    arrived, release = asyncio.Event(), asyncio.Event()

    async def flaky(request: web.Request) -> web.Response:
        if mode == "down":
            return web.Response(status=503, text="Service Unavailable")
        if mode == "hang":
            arrived.set()
            await release.wait()
        return await fake.ok(request)

    fake.handler = flaky
    src = source(fake, retries=0, breaker_failures=1, breaker_reset=1)
    try:
        with pytest.raises(SourceError, match="HTTP 503"):
            await src.collect(1000.0)
        assert src.breaker.state == "open"
        mode = "hang"
        trial = asyncio.create_task(src.collect(1002.0))
        await arrived.wait()
        assert src.breaker.trials_in_flight == 1
        trial.cancel()  # what the engine's tick timeout does
        with pytest.raises(asyncio.CancelledError):
            await trial
        assert src.breaker.trials_in_flight == 0
        mode = "ok"
        assert [s.value for s in await src.collect(1004.0)] == [3.0]
        assert src.breaker.state == "closed"
    finally:
        release.set()
        await src.aclose()


async def test_unreachable_prometheus_is_a_connection_error(fake: FakePrometheus) -> None:
    spec = PrometheusSpec(url="http://127.0.0.1:9", queries={"q": "q"}, retries=0)
    src = PrometheusSource("prom", spec)
    msg = await collect_error(src)
    assert "ClientConnectorError" in msg or "Connect" in msg
    assert src.errors["connection"] == 1


async def test_query_errors_are_exported_as_metrics_by_reason(fake: FakePrometheus) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from autoscaler.sources.stats import SourceStats

    async def truncated(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":', content_type="application/json")

    fake.handler = truncated
    src = source(fake)
    await collect_error(src)
    registry = CollectorRegistry()
    registry.register(SourceStats([src]))
    text = generate_latest(registry).decode()
    assert 'autoscaler_source_query_errors_total{reason="malformed",source="prom"} 1.0' in text


async def test_a_collect_cancelled_by_the_tick_timeout_counts_as_a_failure(
    fake: FakePrometheus,
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return await fake.ok(request)

    fake.handler = hang
    src = source(fake, breaker_failures=2)
    try:
        for k in range(2):
            arrived.clear()
            tick = asyncio.create_task(src.collect(1000.0 + 15 * k))
            await arrived.wait()
            tick.cancel()  # what the engine's tick timeout does
            with pytest.raises(asyncio.CancelledError):
                await tick
        assert src.errors["cancelled"] == 2
        assert src.breaker.state == "open"  # a hung server is not queried every tick
    finally:
        release.set()
        await src.aclose()


def test_the_default_worst_case_fits_the_default_tick_timeout() -> None:
    from autoscaler.config import ServiceSettings

    spec = PrometheusSpec(queries={"a": "up", "b": "up", "c": "up"})
    assert spec.worst_case() == pytest.approx(4.0 * 2 + 0.2)
    assert spec.worst_case() < ServiceSettings().tick_timeout
