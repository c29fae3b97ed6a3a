"""The assembled service: a circuit-breaker rule trips a published breaker end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import generate_latest

from autoscaler.config import from_mapping
from autoscaler.engine import Engine
from autoscaler.http import make_app
from autoscaler.journal import MemoryStore
from autoscaler.service import build_engine, component_routes
from autoscaler.sources.base import MemorySource
from policies.markers import Secret
from policies.types import Action, Notify
from remediation.base import ExecutorError
from remediation.board import BreakerBoard
from remediation.recording import RecordingExecutor

DOC: dict[str, Any] = {
    "service": {"interval": "10s"},
    "signals": {"vector_store_up": {"max_age": "30s"}},
    "targets": {"vector-db": {"executor": "rec", "min_replicas": 1}},
    "executors": {
        "rec": {"type": "recording"},
        "board": {"type": "breakers"},
        "pager": {"type": "recording"},
    },
    "bus": {"breakers": "board", "notify": ["pager"]},
    "policies": {
        "vector_store_breaker": {
            "type": "circuit_breaker",
            "breaker": "vector_store",
            "signal": "vector_store_up",
            "failure_threshold": 3,
            "targets": ["vector-db"],
        },
        "degradation": {"type": "degradation", "targets": ["vector-db"]},
    },
}


async def test_failing_dependency_opens_the_published_breaker_and_pages() -> None:
    src = MemorySource()
    engine = build_engine(from_mapping(DOC), state_store=MemoryStore(), sources=[src])
    pager = engine.executors["pager"]
    assert isinstance(pager, RecordingExecutor)
    for i in range(4):
        src.set("vector-db", "vector_store_up", 0.0)
        await engine.tick(100.0 + 10 * i)
    assert engine.breakers == {"vector_store": "open"}
    summaries = [a.params()["summary"] for a in pager.calls]
    assert any("breaker vector_store: closed -> open" in s for s in summaries)

    app = make_app(
        engine=engine,
        clock=lambda: engine.now,
        token=Secret(),
        healthz_max_age=30,
        extra_routes=component_routes(engine),
    )
    body = await _get_json(app, "/v1/breakers")
    assert body["breakers"]["vector_store"]["state"] == "open"
    assert body["degradation_level"] == 3
    metrics = generate_latest(engine.metrics.registry).decode()
    assert 'autoscaler_breaker_state{breaker="vector_store"} 2.0' in metrics


async def _get_json(app: web.Application, path: str) -> Any:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s, s.get(server.make_url(path)) as resp:
            assert resp.status == 200
            return await resp.json()
    finally:
        await server.close()


async def test_the_published_breaker_follows_the_rule_through_a_long_bus_cooldown() -> None:
    # the runbook's bus: a 5-minute default cooldown and dedupe window; a breaker that opens,
    # half-opens 30 s later and closes after 3 good samples must be published at each step
    doc = {**DOC, "bus": {**DOC["bus"], "cooldown": "5m", "dedupe_window": "5m"}}
    src = MemorySource()
    engine = build_engine(from_mapping(doc), state_store=MemoryStore(), sources=[src])
    published = []
    for i in range(12):
        src.set("vector-db", "vector_store_up", 0.0 if i < 3 else 1.0)
        await engine.tick(100.0 + 10 * i)
        published.append(engine.breakers.get("vector_store", "closed"))
    assert published[2] == "open"
    assert "half_open" in published
    assert published[-1] == "closed"
    board = engine.executors["board"]
    assert board.states_by_name() == {"vector_store": "closed"}  # type: ignore[attr-defined]


async def test_a_breaker_publish_that_failed_is_sent_again_next_pass() -> None:
    src = MemorySource()
    engine = build_engine(from_mapping(DOC), state_store=MemoryStore(), sources=[src])
    engine.set_paused(True)  # the opening TripBreaker is skipped: nothing is published
    for i in range(3):
        src.set("vector-db", "vector_store_up", 0.0)
        await engine.tick(100.0 + 10 * i)
    assert engine.breakers == {}
    engine.set_paused(False)
    src.set("vector-db", "vector_store_up", 0.0)
    report = await engine.tick(130.0)
    assert engine.breakers == {"vector_store": "open"}
    (republish,) = [d for d in report.decisions if d.action is not None and d.target == "vector-db"]
    assert "is open but closed is published" in republish.reason


async def test_a_breaker_notice_the_pager_did_not_take_is_told_again_while_it_differs() -> None:
    # the close (a resolve) reaches no notifier: without a second try the incident would
    # stay open for humans after the dependency recovered
    src = MemorySource()
    engine = build_engine(from_mapping(DOC), state_store=MemoryStore(), sources=[src])
    pager = engine.executors["pager"]
    assert isinstance(pager, RecordingExecutor)
    record = pager.execute
    down = False

    async def flaky(action: Action) -> str:
        if down:
            raise ExecutorError("pager: HTTP 400 (a bad day)")  # permanent: no bus retry
        return await record(action)

    pager.execute = flaky  # type: ignore[method-assign]
    notices: list[tuple[float, str, bool]] = []
    for i in range(16):
        down = 3 <= i < 12  # from the recovery until well after the breaker closed
        src.set("vector-db", "vector_store_up", 0.0 if i < 3 else 1.0)
        report = await engine.tick(100.0 + 10 * i)
        for o in report.outcomes:
            if isinstance(o.action, Notify) and o.action.dedup_key == "breaker:vector_store":
                notices.append((report.now, o.status, o.action.resolve))
    assert engine.breakers == {"vector_store": "closed"}
    sent = [a for a in pager.calls if isinstance(a, Notify) and a.dedup_key.startswith("breaker")]
    assert [a.resolve for a in sent] == [False, True]  # the opening, then the close once
    assert sent[1].summary == (
        "breaker vector_store: open -> closed (degradation level 1)"
        " (told again: the first notice was not sent)"
    )
    # the half-open trigger inside the opening's cooldown is not told again (open for
    # humans either way); the close is tried on each pass while the pager fails, then once
    assert notices == [
        (120.0, "done", False),
        (150.0, "skipped-cooldown", False),
        *[(t, "failed", True) for t in (180.0, 190.0, 200.0, 210.0)],
        (220.0, "done", True),
    ]


def _with_state_file(path: Path) -> dict[str, Any]:
    return {**DOC, "service": {**DOC["service"], "state_path": str(path)}}


async def _open_then_stop(doc: dict[str, Any]) -> None:
    """A first lifetime of the service: the breaker opens at 120 s, humans are told, it
    stops."""
    src = MemorySource()
    engine = build_engine(from_mapping(doc), sources=[src])
    for i in range(3):
        src.set("vector-db", "vector_store_up", 0.0)
        await engine.tick(100.0 + 10 * i)
    assert engine.breakers == {"vector_store": "open"}
    pager = engine.executors["pager"]
    assert isinstance(pager, RecordingExecutor)
    assert [a.resolve for a in pager.calls if isinstance(a, Notify)] == [False]
    engine.state_store.close()


def _flaky_pager(engine: Engine, down: Callable[[], bool]) -> RecordingExecutor:
    pager = engine.executors["pager"]
    assert isinstance(pager, RecordingExecutor)
    record = pager.execute

    async def flaky(action: Action) -> str:
        if down():
            raise ExecutorError("pager: HTTP 400 (a bad day)")  # permanent: no bus retry
        return await record(action)

    pager.execute = flaky  # type: ignore[method-assign]
    return pager


async def _healthy(
    engine: Engine, src: MemorySource, times: range
) -> list[tuple[float, str, bool, str]]:
    """A healthy sample and a pass at each of ``times``: the breaker notices handled."""
    notices = []
    for t in times:
        src.set("vector-db", "vector_store_up", 1.0)
        report = await engine.tick(float(t))
        for o in report.outcomes:
            if isinstance(o.action, Notify) and o.action.dedup_key == "breaker:vector_store":
                notices.append((report.now, o.status, o.action.resolve, o.action.summary))
    return notices


async def test_a_close_the_pager_did_not_take_after_a_restart_is_told_again(
    tmp_path: Path,
) -> None:
    # humans were told "open" before the restart; the close after it reaches no notifier:
    # what they were told survives the restart, so the resolve is tried until it goes out
    doc = _with_state_file(tmp_path / "state.db")
    await _open_then_stop(doc)
    src = MemorySource()
    engine = build_engine(from_mapping(doc), sources=[src])
    down = True
    pager = _flaky_pager(engine, lambda: down)
    failed = await _healthy(engine, src, range(130, 211, 10))
    down = False
    told = await _healthy(engine, src, range(220, 241, 10))
    assert engine.breakers == {"vector_store": "closed"}
    assert [(t, status) for t, status, resolve, _ in failed if resolve] == [
        (t, "failed") for t in (180, 190, 200, 210)
    ]
    closing = (
        "breaker vector_store: open -> closed (degradation level 1)"
        " (told again: the first notice was not sent)"
    )
    assert told == [(220.0, "done", True, closing)]
    sent = [a for a in pager.calls if isinstance(a, Notify)]
    assert [(a.resolve, a.summary) for a in sent] == [(True, closing)]


async def test_a_breaker_restored_open_is_not_told_open_again(tmp_path: Path) -> None:
    # the opening was told before the restart: its half-open trigger, which the opening's
    # cooldown holds back, is open for humans either way and is not told again (as
    # "closed -> half_open"); the close is told once
    doc = _with_state_file(tmp_path / "state.db")
    await _open_then_stop(doc)
    src = MemorySource()
    engine = build_engine(from_mapping(doc), sources=[src])
    notices = await _healthy(engine, src, range(130, 201, 10))
    assert [(t, status, resolve) for t, status, resolve, _ in notices] == [
        (150.0, "skipped-cooldown", False),
        (180.0, "done", True),
    ]


async def test_a_close_lost_just_before_a_restart_is_told_after_it(tmp_path: Path) -> None:
    # the resolve failed on the passes before the service stopped: the next lifetime tells
    # it on its second pass (the first finds it untold), though the board does not change
    doc = _with_state_file(tmp_path / "state.db")
    await _open_then_stop(doc)
    src = MemorySource()
    engine = build_engine(from_mapping(doc), sources=[src])
    _flaky_pager(engine, lambda: True)
    notices = await _healthy(engine, src, range(130, 191, 10))
    assert notices[-1][:3] == (190.0, "failed", True)
    assert engine.breakers == {"vector_store": "closed"}
    engine.state_store.close()

    engine = build_engine(from_mapping(doc), sources=[src])
    notices = await _healthy(engine, src, range(200, 231, 10))
    assert [(t, status, resolve) for t, status, resolve, _ in notices] == [(210.0, "done", True)]


async def test_a_breaker_whose_rule_was_removed_while_open_is_retired_and_resolved(
    tmp_path: Path,
) -> None:
    # no rule will ever close it: kept, it would stay open for ever on the board, in the
    # degradation level and in the pager
    doc = _with_state_file(tmp_path / "state.db")
    await _open_then_stop(doc)
    policies = {k: v for k, v in DOC["policies"].items() if k != "vector_store_breaker"}
    engine = build_engine(from_mapping({**doc, "policies": policies}), sources=[MemorySource()])
    board = engine.executors["board"]
    assert isinstance(board, BreakerBoard)
    assert engine.breakers == {}
    assert board.snapshot() == {"breakers": {}, "degradation_level": 1}
    pager = _flaky_pager(engine, lambda: engine.now < 220.0)  # its first resolve is lost
    for t in range(200, 231, 10):
        await engine.tick(float(t))
    engine.state_store.close()
    closing = (
        "breaker vector_store: open -> closed (degradation level 1) (no rule drives it any more)"
    )
    sent = [a for a in pager.calls if isinstance(a, Notify) and a.dedup_key.startswith("breaker")]
    assert [(a.resolve, a.summary) for a in sent] == [(True, closing)]
    again = build_engine(from_mapping({**doc, "policies": policies}), sources=[MemorySource()])
    assert again.executors["board"].told == {}  # type: ignore[attr-defined]
    saved = again.state_store.load_state()
    assert "published:vector_store" not in saved
    assert saved["executor:board"] == {}


async def test_a_resolve_of_a_retired_breaker_lost_before_a_restart_is_told_after_it(
    tmp_path: Path,
) -> None:
    doc = _with_state_file(tmp_path / "state.db")
    await _open_then_stop(doc)
    policies = {k: v for k, v in DOC["policies"].items() if k != "vector_store_breaker"}
    retired = {**doc, "policies": policies}
    engine = build_engine(from_mapping(retired), sources=[MemorySource()])
    _flaky_pager(engine, lambda: True)
    for t in range(200, 221, 10):
        await engine.tick(float(t))
    engine.state_store.close()
    engine = build_engine(from_mapping(retired), sources=[MemorySource()])
    pager = engine.executors["pager"]
    assert isinstance(pager, RecordingExecutor)
    for t in range(230, 251, 10):
        await engine.tick(float(t))
    sent = [a for a in pager.calls if isinstance(a, Notify) and a.dedup_key.startswith("breaker")]
    assert [a.resolve for a in sent] == [True]


async def test_a_dry_run_on_the_state_file_does_not_leave_the_board_open_for_ever(
    tmp_path: Path,
) -> None:
    # the dry run publishes the close in its journal only: the board, the real publisher,
    # stays open, and the live service after it must close it, not take the journal's word
    doc = _with_state_file(tmp_path / "state.db")
    await _open_then_stop(doc)
    src = MemorySource()
    engine = build_engine(from_mapping(doc), sources=[src], dry_run=True)
    await _healthy(engine, src, range(130, 201, 10))
    assert engine.executors["board"].states_by_name() == {"vector_store": "open"}  # type: ignore[attr-defined]
    engine.state_store.close()
    engine = build_engine(from_mapping(doc), sources=[src])
    notices = await _healthy(engine, src, range(210, 231, 10))
    assert engine.executors["board"].states_by_name() == {"vector_store": "closed"}  # type: ignore[attr-defined]
    assert [(t, status, resolve) for t, status, resolve, _ in notices] == [(210.0, "done", True)]
