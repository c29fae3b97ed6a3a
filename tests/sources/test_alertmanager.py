"""The Alertmanager webhook intake: auth, validation, idempotency, fuzzing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.cli import main
from autoscaler.sources.alertmanager import (
    AlertmanagerSource,
    AlertmanagerSpec,
    PayloadError,
    parse_api_alerts,
    parse_time,
)
from policies.markers import Secret

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def alert(
    status: str = "firing", service: str = "api", fp: str = "f1", name: str = "HighQueue"
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "service": service, "severity": "page"},
        "annotations": {"summary": "queue is long"},
        "startsAt": "2024-05-01T10:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2024-05-01T10:05:00Z",
        "generatorURL": "http://prom/graph",
        "fingerprint": fp,
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighQueue"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "autoscaler",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am:9093",
        "alerts": list(alerts),
    }


def make_client(src: AlertmanagerSource) -> TestClient:  # type: ignore[type-arg]
    app = web.Application()
    app.add_routes(src.routes())
    return TestClient(TestServer(app))


@pytest.fixture
async def intake() -> AsyncIterator[tuple[AlertmanagerSource, TestClient]]:  # type: ignore[type-arg]
    src = AlertmanagerSource("am", AlertmanagerSpec(token=Secret(TOKEN), max_body_bytes=4096))
    client = make_client(src)
    await client.start_server()
    try:
        yield src, client
    finally:
        await client.close()


async def test_firing_alert_becomes_an_event_for_its_service(intake: Any) -> None:
    src, client = intake
    resp = await client.post("/v1/alertmanager", json=payload(alert()), headers=AUTH)
    assert resp.status == 200
    (event,) = src.drain(0.0)
    assert (event.name, event.status, event.target, event.fingerprint) == (
        "HighQueue",
        "firing",
        "api",
        "f1",
    )
    assert event.at == pytest.approx(1714557600.123456)
    assert event.labels["severity"] == "page"
    assert src.drain(0.0) == []


async def test_resolved_alert_is_timed_at_its_end(intake: Any) -> None:
    src, client = intake
    await client.post("/v1/alertmanager", json=payload(alert()), headers=AUTH)
    await client.post("/v1/alertmanager", json=payload(alert("resolved")), headers=AUTH)
    events = src.drain(0.0)
    assert [e.status for e in events] == ["firing", "resolved"]
    assert events[1].at == 1714557900.0


async def test_duplicate_deliveries_are_accepted_and_ignored(intake: Any) -> None:
    src, client = intake
    for _ in range(3):
        resp = await client.post("/v1/alertmanager", json=payload(alert()), headers=AUTH)
        assert resp.status == 200
    assert len(src.drain(0.0)) == 1
    assert src.duplicates == 2
    assert (
        await client.post("/v1/alertmanager", json=payload(alert()), headers=AUTH)
    ).status == 200
    assert src.drain(0.0) == []


async def test_alerts_firing_counts_per_target(intake: Any) -> None:
    src, client = intake
    body = payload(alert(fp="a"), alert(fp="b", name="Errors"), alert(service="db", fp="c"))
    await client.post("/v1/alertmanager", json=body, headers=AUTH)
    got = {(s.target, s.value, s.at) for s in await src.collect(50.0)}
    assert got == {("api", 2.0, 50.0), ("db", 1.0, 50.0)}
    await client.post("/v1/alertmanager", json=payload(alert("resolved", fp="a")), headers=AUTH)
    got = {(s.target, s.value) for s in await src.collect(51.0)}
    assert got == {("api", 1.0), ("db", 1.0)}


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"Authorization": "Basic x"}, 401)],
)
async def test_wrong_or_missing_token_is_refused(
    intake: Any, headers: dict[str, str], status: int
) -> None:
    src, client = intake
    resp = await client.post("/v1/alertmanager", json=payload(alert()), headers=headers)
    assert resp.status == status
    assert src.drain(0.0) == [] and src.rejected["auth"] == 1


async def test_a_non_ascii_token_is_refused_as_auth_not_as_an_error(intake: Any) -> None:
    src, client = intake
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /v1/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n{}"
        )
        await writer.drain()
        assert (await reader.readline()).strip() == b"HTTP/1.1 401 Unauthorized"
    finally:
        writer.close()
        await writer.wait_closed()
    assert dict(src.rejected) == {"auth": 1}


async def test_without_a_token_the_endpoint_is_disabled() -> None:
    src = AlertmanagerSource("am", AlertmanagerSpec())
    client = make_client(src)
    await client.start_server()
    try:
        resp = await client.post("/v1/alertmanager", json=payload(alert()))
        assert resp.status == 403
        assert "disabled" in (await resp.json())["error"]
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("body", "reason", "counter"),
    [
        (b"{not json", "invalid JSON", "json"),
        (b"[]", "expected a JSON object", "schema"),
        (json.dumps({"version": "3", "alerts": []}).encode(), "version", "schema"),
        (json.dumps(payload({"status": "odd"})).encode(), "alerts[0].status", "schema"),
        (
            json.dumps(payload({**alert(), "startsAt": "yesterday"})).encode(),
            "alerts[0].startsAt",
            "schema",
        ),
        (
            json.dumps(payload({**alert(), "labels": {"service": "api"}})).encode(),
            "no alertname",
            "schema",
        ),
        (
            json.dumps(payload({**alert(), "labels": {"alertname": 1}})).encode(),
            "string labels",
            "schema",
        ),
    ],
)
async def test_invalid_payloads_are_400_with_a_reason_and_counted(
    intake: Any, body: bytes, reason: str, counter: str
) -> None:
    src, client = intake
    resp = await client.post("/v1/alertmanager", data=body, headers=AUTH)
    assert resp.status == 400
    assert reason in (await resp.json())["error"]
    assert src.rejected[counter] == 1
    assert src.drain(0.0) == []


async def test_a_body_over_the_limit_is_413(intake: Any) -> None:
    src, client = intake
    many = payload(*(alert(fp=str(i)) for i in range(40)))
    resp = await client.post("/v1/alertmanager", json=many, headers=AUTH)
    assert resp.status == 413
    assert src.rejected["too_large"] == 1


async def two_writes(body: bytes) -> AsyncIterator[bytes]:
    """A chunked request body sent in two writes, as a sender over a real network does."""
    yield body[: len(body) // 2]
    await asyncio.sleep(0.05)  # lets the server read the first half on its own
    yield body[len(body) // 2 :]


async def test_a_body_arriving_in_two_network_reads_is_accepted_whole(intake: Any) -> None:
    src, client = intake
    body = json.dumps(payload(alert(fp="a"), alert(fp="b", service="web"))).encode()
    resp = await client.post("/v1/alertmanager", data=two_writes(body), headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] == 2
    assert not src.rejected


async def test_a_chunked_body_over_the_limit_is_413(intake: Any) -> None:
    src, client = intake
    body = json.dumps(payload(*(alert(fp=str(i)) for i in range(40)))).encode()
    resp = await client.post("/v1/alertmanager", data=two_writes(body), headers=AUTH)
    assert resp.status == 413
    assert src.rejected["too_large"] == 1


def test_go_times_with_nanoseconds_and_offsets_parse() -> None:
    assert parse_time("2024-05-01T10:00:00.999999999Z", "t") == pytest.approx(1714557600.999999)
    assert parse_time("2024-05-01T12:00:00+02:00", "t") == 1714557600.0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
alert_like = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved", "other"]) | json_values,
        "labels": st.dictionaries(
            st.sampled_from(["alertname", "service", "x"]), st.text(max_size=5)
        )
        | json_values,
        "startsAt": st.sampled_from(["2024-05-01T10:00:00Z", "0001-01-01T00:00:00Z", "bad"])
        | json_values,
        "endsAt": st.sampled_from(["2024-05-01T10:00:00Z", "9999-12-31T23:59:59Z"]) | json_values,
        "fingerprint": st.text(max_size=6) | json_values,
    },
)
payload_like = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from(["4", "3", 4]) | json_values,
        "alerts": st.lists(alert_like, max_size=4) | json_values,
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=300)
    | payload_like.map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda d: json.dumps(d).encode())
)
async def test_fuzzed_bodies_never_cause_a_500(intake: Any, body: bytes) -> None:
    src, client = intake
    resp = await client.post("/v1/alertmanager", data=body, headers=AUTH)
    assert resp.status in (200, 400, 413), await resp.text()
    assert src.rejected["error"] == 0, "no unexpected exception inside the handler"
    src.drain(0.0)


async def test_rejections_are_exported_as_metrics_by_reason(intake: Any) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from autoscaler.sources.stats import SourceStats

    src, client = intake
    await client.post("/v1/alertmanager", data=b"{", headers=AUTH)
    await client.post("/v1/alertmanager", json=payload(alert()), headers={})
    await client.post("/v1/alertmanager", json=payload(alert()), headers=AUTH)
    registry = CollectorRegistry()
    registry.register(SourceStats([src, object()]))
    text = generate_latest(registry).decode()
    assert 'autoscaler_webhook_rejected_total{reason="json",source="am"} 1.0' in text
    assert 'autoscaler_webhook_rejected_total{reason="auth",source="am"} 1.0' in text
    assert 'autoscaler_webhook_deliveries_total{source="am"} 1.0' in text


async def test_truncated_deliveries_are_counted(intake: Any) -> None:
    src, client = intake
    body = {**payload(alert()), "truncatedAlerts": 3}
    assert (await client.post("/v1/alertmanager", json=body, headers=AUTH)).status == 200
    assert src.truncated == 3 and len(src.drain(0.0)) == 1


async def test_a_truncated_count_beyond_uint64_is_ignored_and_metrics_still_render(
    intake: Any,
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from autoscaler.sources.stats import SourceStats

    src, client = intake
    # JSON integers have no limit; Alertmanager's truncatedAlerts is a uint64
    body = json.dumps(payload(alert())).replace(
        '"truncatedAlerts": 0', '"truncatedAlerts": 1' + "0" * 400
    )
    assert (await client.post("/v1/alertmanager", data=body, headers=AUTH)).status == 200
    assert src.truncated == 0 and len(src.drain(0.0)) == 1
    registry = CollectorRegistry()
    registry.register(SourceStats([src]))
    text = generate_latest(registry).decode()
    assert 'autoscaler_webhook_truncated_alerts_total{source="am"} 0.0' in text


async def test_alerts_without_the_target_label_are_accepted_but_reach_no_target(
    intake: Any,
) -> None:
    src, client = intake
    orphan = {**alert(), "labels": {"alertname": "Watchdog"}}
    assert (await client.post("/v1/alertmanager", json=payload(orphan), headers=AUTH)).status == 200
    (event,) = src.drain(0.0)
    assert event.target == "" and event.name == "Watchdog"
    assert list(await src.collect(1.0)) == []


async def test_after_a_start_no_zero_is_reported_until_alertmanager_had_time_to_resend() -> None:
    # Alertmanager re-sends an unchanged firing group only after its repeat_interval: a
    # restarted intake that has heard nothing does not know that nothing fires
    spec = AlertmanagerSpec(token=Secret(TOKEN), targets={"api": "api", "db": "db"}, warmup=600)
    src = AlertmanagerSource("am", spec)
    client = make_client(src)
    await client.start_server()
    try:
        assert list(await src.collect(1000.0)) == []
        await client.post("/v1/alertmanager", json=payload(alert(service="db")), headers=AUTH)
        got = {(s.target, s.value) for s in await src.collect(1015.0)}
        assert got == {("db", 1.0)}  # a firing alert is known; api's 0 is not
        await client.post(
            "/v1/alertmanager", json=payload(alert("resolved", service="db")), headers=AUTH
        )
        (db,) = await src.collect(1030.0)  # no longer 1, not yet a known 0: unusable
        assert db.target == "db" and math.isnan(db.value)
        got = {(s.target, s.value) for s in await src.collect(1600.0)}
        assert got == {("api", 0.0), ("db", 0.0)}
        await client.post("/v1/alertmanager", json=payload(alert(service="db")), headers=AUTH)
        got = {(s.target, s.value) for s in await src.collect(1615.0)}
        assert got == {("api", 0.0), ("db", 1.0)}
    finally:
        await client.close()


def test_the_default_warmup_outlasts_alertmanagers_default_repeat_and_group_intervals() -> None:
    assert AlertmanagerSpec().warmup >= 4 * 3600 + 5 * 60


# --- reading what fires from Alertmanager's API (url) ----------------------------------


def listed(state: str, fp: str, service: str = "api", name: str = "ApiDown") -> dict[str, Any]:
    """One gettableAlert of ``GET /api/v2/alerts``."""
    return {
        "labels": {"alertname": name, "service": service},
        "annotations": {},
        "fingerprint": fp,
        "startsAt": "2024-05-01T10:00:00.000Z",
        "endsAt": "2024-05-01T10:05:00.000Z",
        "updatedAt": "2024-05-01T10:00:00.000Z",
        "receivers": [{"name": "autoscaler"}],
        "status": {"state": state, "silencedBy": [], "inhibitedBy": []},
    }


def test_the_api_answer_counts_what_the_webhook_would_deliver() -> None:
    doc = [listed("active", "a"), listed("suppressed", "s"), listed("unprocessed", "u", "db")]
    alerts = parse_api_alerts(doc, target_label="service", targets={"db": "database"})
    assert [(a.fingerprint, a.status, a.target, a.name) for a in alerts] == [
        ("a", "firing", "api", "ApiDown"),
        ("u", "firing", "database", "ApiDown"),
    ]
    assert alerts[0].at == 1714557600.0


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"alerts": []}, "expected a JSON list"),
        ([listed("odd", "a")], "alerts[0].status.state"),
        ([{**listed("active", "a"), "fingerprint": ""}], "alerts[0].fingerprint"),
        ([listed("active", "a"), {**listed("active", "b"), "labels": {}}], "alerts[1].labels"),
        ([{**listed("active", "a"), "startsAt": 5}], "alerts[0].startsAt"),
    ],
)
def test_a_malformed_api_answer_names_the_first_problem(doc: object, reason: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(reason)):
        parse_api_alerts(doc, target_label="service", targets={})


async def api_server(answer: Any) -> TestServer:
    """An HTTP server standing in for Alertmanager's API where a real one cannot be made
    to misbehave; ``answer`` is the body (bytes) or a coroutine function returning it."""

    async def alerts(request: web.Request) -> web.Response:
        body = await answer() if callable(answer) else answer
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.add_routes([web.get("/api/v2/alerts", alerts)])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_a_malformed_api_answer_is_counted_and_the_warmup_holds() -> None:
    server = await api_server(b'{"not": "a list"}')
    try:
        spec = AlertmanagerSpec(targets={"api": "api"}, url=str(server.make_url("")))
        src = AlertmanagerSource("am", spec)
        assert list(await src.collect(1000.0)) == []  # no 0 for api: not known yet
        assert list(await src.collect(1015.0)) == []
        assert dict(src.errors) == {"malformed": 2} and not src.synced
    finally:
        await server.close()


async def test_a_webhook_delivery_during_the_api_request_is_not_undone(intake: Any) -> None:
    src, client = intake
    await client.post("/v1/alertmanager", json=payload(alert(fp="f1")), headers=AUTH)
    src.drain(0.0)

    async def answer() -> bytes:
        # the answer was taken before f1 resolved and f2 fired; both arrive meanwhile
        snapshot = json.dumps([listed("active", "f1")]).encode()
        body = payload(alert("resolved", fp="f1"), alert(fp="f2", name="Errors"))
        assert (await client.post("/v1/alertmanager", json=body, headers=AUTH)).status == 200
        return snapshot

    server = await api_server(answer)
    try:
        src.spec = dataclasses.replace(src.spec, url=str(server.make_url("")))
        got = {(s.target, s.value) for s in await src.collect(1000.0)}
        assert got == {("api", 1.0)}  # f2 fires; f1's resolve is newer than the answer
        assert [(e.fingerprint, e.status) for e in src.drain(1000.0)] == [
            ("f1", "resolved"),
            ("f2", "firing"),
        ]
        assert src.synced
    finally:
        await server.close()


async def test_the_api_is_read_again_every_resync_and_after_the_clock_went_back() -> None:
    asked: list[int] = []

    async def answer() -> bytes:
        asked.append(1)
        return b"[]"

    server = await api_server(answer)
    try:
        spec = AlertmanagerSpec(url=str(server.make_url("")), resync=60.0)
        src = AlertmanagerSource("am", spec)
        for now in (1000.0, 1015.0, 1059.0, 1060.0, 1075.0):
            await src.collect(now)
        assert len(asked) == 2  # at 1000 and 1060
        await src.collect(500.0)  # the clock stepped back: the last answer is not "recent"
        assert len(asked) == 3
        await src.collect(515.0)
        assert len(asked) == 3
    finally:
        await server.close()


async def test_an_alertmanager_down_after_the_first_answer_is_asked_once_per_resync(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asked: list[int] = []

    async def answer() -> bytes:
        asked.append(1)
        if len(asked) > 1:
            raise web.HTTPServiceUnavailable(text="down")
        return b"[]"

    server = await api_server(answer)
    try:
        src = AlertmanagerSource("am", AlertmanagerSpec(url=str(server.make_url("")), resync=300.0))
        with caplog.at_level(logging.WARNING, logger="autoscaler.sources.alertmanager"):
            for k in range(41):  # 10 minutes of 15 s passes
                await src.collect(1000.0 + 15 * k)
        assert len(asked) == 3  # at 1000, 1300 (fails), 1600 (fails): not every pass
        assert dict(src.errors) == {"http": 2} and src.synced
        warned = [r for r in caplog.records if "could not read" in r.getMessage()]
        assert len(warned) == 1  # the first failure of the run; the counter has each
    finally:
        await server.close()


def test_check_refuses_a_bad_url_and_a_timeout_beyond_the_tick(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sources.am]\ntype = "alertmanager"\nurl = "alertmanager:9093"\n')
    assert main(["check", str(cfg)]) == 2
    assert "sources.am.url: expected the base URL of Alertmanager" in capsys.readouterr().err
    cfg.write_text(
        '[service]\ntick_timeout = "5s"\n[sources.am]\ntype = "alertmanager"\n'
        'url = "http://alertmanager:9093"\ntimeout = "5s"\n'
    )
    assert main(["check", str(cfg)]) == 2
    assert "sources.am.timeout: 5 s" in capsys.readouterr().err
    cfg.write_text('[sources.am]\ntype = "alertmanager"\nresync = -1\n')
    assert main(["check", str(cfg)]) == 2
    assert "sources.am.resync: expected a duration" in capsys.readouterr().err
    cfg.write_text('[sources.am]\ntype = "alertmanager"\nurl = "http://alertmanager:9093/"\n')
    assert main(["check", str(cfg)]) == 0


@pytest.mark.parametrize("renames", [{}, {"database": "db"}], ids=["no map", "a map"])
async def test_the_engines_targets_get_a_known_zero_once_the_warmup_is_over(
    settings_factory: Any, tmp_path: Path, renames: dict[str, str]
) -> None:
    """No alert ever named ``api``: an alert would reach it by its label value (a map
    renames only the values it lists), so once a 0 is known the engine's target gets one
    (and the restart rule may forget)."""
    from autoscaler.journal import MemoryStore
    from autoscaler.metrics import make_metrics
    from autoscaler.service import build_engine

    token = tmp_path / "token"
    token.write_text(TOKEN)
    am = {"type": "alertmanager", "token_file": str(token), "warmup": "10m", "targets": renames}
    settings = settings_factory(sources={"am": am})
    engine = build_engine(settings, state_store=MemoryStore(), metrics=make_metrics())
    await engine.tick(1000.0)
    assert engine.store.observation("api", "alerts_firing", 1000.0).stale  # not known yet
    await engine.tick(1600.0)
    firing = engine.store.observation("api", "alerts_firing", 1600.0)
    assert not firing.stale and firing.value == 0.0


async def test_known_targets_are_bounded_by_the_alerts_remembered() -> None:
    """A label value gets its 0 while an alert that named it is remembered: label values
    that come and go (or a sender making them up) cannot grow the store without end. The
    engine's targets and the mapped ones always get theirs, while they are targets."""
    spec = AlertmanagerSpec(
        token=Secret(TOKEN), max_fingerprints=2, warmup=0.0, targets={"database": "db"}
    )
    src = AlertmanagerSource("am", spec)
    src.watch_targets(["api", "ui"])
    client = make_client(src)
    await client.start_server()
    try:
        for i in range(3):  # pod-0 is forgotten when the third alert arrives
            body = payload(alert("resolved", service=f"pod-{i}", fp=f"f{i}"))
            assert (await client.post("/v1/alertmanager", json=body, headers=AUTH)).status == 200
        targets = {s.target for s in await src.collect(1000.0)}
        assert targets == {"pod-1", "pod-2", "api", "ui", "db"}
        src.watch_targets(["api"])  # ui was a discovered service that went away
        assert {s.target for s in await src.collect(1015.0)} == {"pod-1", "pod-2", "api", "db"}
    finally:
        await client.close()
