"""HTTP endpoints, served by a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from autoscaler.config import Settings
from autoscaler.engine import Engine
from autoscaler.http import make_app, serve
from autoscaler.journal import MemoryStore, SQLiteStore
from autoscaler.metrics import make_metrics
from autoscaler.service import build_engine
from autoscaler.sources.alertmanager import AlertmanagerSource, AlertmanagerSpec
from autoscaler.sources.base import MemorySource
from policies.markers import Secret
from remediation.recording import RecordingExecutor


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(settings_factory: Callable[..., Settings]) -> Engine:
    return build_engine(
        settings_factory(),
        state_store=MemoryStore(),
        metrics=make_metrics(),
        executors={"rec": RecordingExecutor("rec")},
        sources=[MemorySource()],
    )


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[tuple[aiohttp.ClientSession, str, Clock]]:
    clock = Clock(1000.0)
    app = make_app(engine=engine, clock=clock, token=Secret("t0ken"), healthz_max_age=45)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield session, str(server.make_url("")).rstrip("/"), clock
    await server.close()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_healthz_follows_the_age_of_the_last_tick(client: Any, engine: Engine) -> None:
    session, base, clock = client
    assert (await get(session, f"{base}/healthz"))[0] == 503  # no tick yet
    await engine.tick(1000.0)
    status, body = await get(session, f"{base}/healthz")
    assert status == 200 and body["last_tick"] == 1000.0
    clock.now = 1046.0
    assert (await get(session, f"{base}/healthz"))[0] == 503


async def test_readyz_reports_failing_sources(client: Any, engine: Engine) -> None:
    session, base, _ = client
    await engine.tick(1000.0)
    assert (await get(session, f"{base}/readyz"))[0] == 200
    engine.sources[0].fail = RuntimeError("down")  # type: ignore[attr-defined]
    await engine.tick(1015.0)
    status, body = await get(session, f"{base}/readyz")
    assert status == 503 and body["failing"] == ["memory"]


async def test_metrics_expose_ticks_decisions_and_actions(client: Any, engine: Engine) -> None:
    session, base, _ = client
    engine.sources[0].set("api", "queue_length", 10.0)  # type: ignore[attr-defined]
    await engine.tick(1000.0)
    status, text = await get(session, f"{base}/metrics")
    assert status == 200
    assert 'autoscaler_ticks_total{result="ok"} 1.0' in text
    assert 'autoscaler_actions_total{kind="scale",status="done"} 1.0' in text
    assert 'autoscaler_decisions_total{kind="scale",policy="queue"} 1.0' in text
    assert "autoscaler_tick_duration_seconds_bucket" in text


async def test_decisions_endpoint_filters_by_since_and_target(client: Any, engine: Engine) -> None:
    session, base, _ = client
    engine.sources[0].set("api", "queue_length", 10.0)  # type: ignore[attr-defined]
    await engine.tick(1000.0)
    await engine.tick(1015.0)
    status, body = await get(session, f"{base}/v1/decisions?since=1010&target=api")
    assert status == 200
    assert [d["status"] for d in body["decisions"]] == ["skipped-cooldown"]
    assert (await get(session, f"{base}/v1/decisions?target=web"))[1]["decisions"] == []
    assert (await get(session, f"{base}/v1/decisions?since=yesterday"))[0] == 400


async def test_a_journal_query_waiting_on_the_store_leaves_the_loop_free(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """A commit in a worker thread holds the SQLite store's lock; a ``/v1/decisions``
    query waiting for it must not hold up ``/healthz`` (nor the tick, nor webhooks)."""
    store = SQLiteStore(tmp_path / "state.db")
    engine = build_engine(
        settings_factory(),
        state_store=store,
        metrics=make_metrics(),
        executors={"rec": RecordingExecutor("rec")},
        sources=[MemorySource()],
    )
    await engine.tick(1000.0)
    app = make_app(engine=engine, clock=Clock(1000.0), token=Secret(""), healthz_max_age=45)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    store._lock.acquire()  # a commit in progress
    # on the old code the loop itself blocks on the lock: free it after a while so the
    # test ends (and fails on the order) instead of hanging
    backstop = threading.Timer(10.0, store._lock.release)
    backstop.start()
    done: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:

            async def fetch(path: str) -> None:
                status, _ = await get(session, f"{base}{path}")
                assert status == 200
                done.append(path)

            query = asyncio.ensure_future(fetch("/v1/decisions"))
            await asyncio.sleep(0.1)  # the query has reached the store
            await fetch("/healthz")
            if backstop.is_alive():
                backstop.cancel()
                store._lock.release()
            await query
    finally:
        backstop.cancel()
        await server.close()
        store.close()
    assert done == ["/healthz", "/v1/decisions"]


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic t0ken", "Bearer "])
async def test_pause_refuses_a_missing_or_wrong_token(
    client: Any, engine: Engine, header: str | None
) -> None:
    session, base, _ = client
    headers = {} if header is None else {"Authorization": header}
    async with session.post(f"{base}/v1/pause", headers=headers) as resp:
        assert resp.status == 401
    assert engine.bus.paused is False


async def raw_post(url: str, header: bytes) -> bytes:
    """The status line of a POST whose Authorization header is raw bytes (no client encodes
    non-ASCII headers, but any sender on the network can write them)."""
    u = urlsplit(url)
    assert u.hostname is not None and u.port is not None
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    try:
        writer.write(
            f"POST {u.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n".encode()
            + b"Authorization: "
            + header
            + b"\r\nConnection: close\r\n\r\n{}"
        )
        await writer.drain()
        return (await reader.readline()).strip()
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("header", [b"Bearer \xff\xfe", "Bearer tøken".encode()])
async def test_pause_refuses_a_non_ascii_token_with_a_401(
    client: Any, engine: Engine, header: bytes
) -> None:
    _, base, _ = client
    assert await raw_post(f"{base}/v1/pause", header) == b"HTTP/1.1 401 Unauthorized"
    assert engine.bus.paused is False


async def test_pause_and_resume_with_the_token(client: Any, engine: Engine) -> None:
    session, base, _ = client
    auth = {"Authorization": "Bearer t0ken"}
    async with session.post(f"{base}/v1/pause", headers=auth) as resp:
        assert resp.status == 200 and (await resp.json()) == {"paused": True}
    assert engine.bus.paused is True
    async with session.post(f"{base}/v1/resume", headers=auth) as resp:
        assert resp.status == 200
    assert engine.bus.paused is False


async def test_mutating_endpoints_are_disabled_without_a_configured_token(
    engine: Engine,
) -> None:
    app = make_app(engine=engine, clock=Clock(0), token=Secret(), healthz_max_age=45)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                server.make_url("/v1/pause"), headers={"Authorization": "Bearer "}
            ) as resp,
        ):
            assert resp.status == 403
    finally:
        await server.close()
    assert engine.bus.paused is False


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (anything it sends
    before is read and dropped)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    return True


async def test_a_client_that_never_finishes_its_headers_is_cut_off(engine: Engine) -> None:
    app = make_app(engine=engine, clock=Clock(0), token=Secret("t0ken"), healthz_max_age=45)
    runner, port = await serve(app, "127.0.0.1", 0, request_timeout=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # ...and nothing more
        await writer.drain()
        assert await _closed_within(reader, 10.0)  # aiohttp's own default: an hour
        writer.close()
        # a client that sends its request in time is served as usual
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 503")  # (no tick yet)
        writer.close()
    finally:
        await runner.cleanup()


async def test_a_webhook_body_that_stalls_is_refused_with_408_and_counted(
    engine: Engine,
) -> None:
    src = AlertmanagerSource("am", AlertmanagerSpec(token=Secret("s3cret")))
    app = make_app(
        engine=engine,
        clock=Clock(0),
        token=Secret("t0ken"),
        healthz_max_age=45,
        extra_routes=src.routes(),
    )
    runner, port = await serve(app, "127.0.0.1", 0, request_timeout=0.5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"version": '
        )
        await writer.drain()
        async with asyncio.timeout(10.0):
            status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 408"), status
        writer.close()
    finally:
        await runner.cleanup()
    assert src.rejected == {"timeout": 1}
    assert src.drain(0.0) == []
