"""The breaker board: TripBreaker actions, degradation level, snapshot, HTTP and gauges."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from autoscaler.breakers_http import breaker_gauges, breakers_routes
from policies.types import Restart, TripBreaker
from remediation.base import ExecutorError
from remediation.board import BoardSpec, BreakerBoard, Transition


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_trip_moves_the_breaker_and_raises_the_degradation_level() -> None:
    clock = Clock()
    board = BreakerBoard("breakers", BoardSpec(names=("vectordb", "gpu")), clock=clock)
    assert board.snapshot() == {
        "breakers": {
            "gpu": {"state": "closed", "since": 0.0},
            "vectordb": {"state": "closed", "since": 0.0},
        },
        "degradation_level": 0,
    }
    detail = await board.execute(TripBreaker("vectordb", state="open"))
    assert detail == "breaker vectordb closed -> open (degradation level 1)"
    clock.now = 1010.0
    await board.execute(TripBreaker("gpu", state="half_open"))
    snap = board.snapshot()
    assert snap["breakers"]["vectordb"] == {"state": "open", "since": 1000.0}
    assert snap["breakers"]["gpu"] == {"state": "half_open", "since": 1010.0}
    assert snap["degradation_level"] == 2


async def test_repeating_the_same_state_is_not_a_transition_and_keeps_since() -> None:
    clock = Clock()
    seen: list[Transition] = []

    async def note(t: Transition) -> None:
        seen.append(t)

    board = BreakerBoard(on_transition=note, clock=clock)
    await board.execute(TripBreaker("db", state="open"))
    clock.now = 2000.0
    assert await board.execute(TripBreaker("db", state="open")) == "breaker db already open"
    await board.execute(TripBreaker("db", state="closed"))
    assert [(t.name, t.old, t.new, t.at, t.level) for t in seen] == [
        ("db", "closed", "open", 1000.0, 1),
        ("db", "open", "closed", 2000.0, 0),
    ]
    assert board.snapshot()["breakers"]["db"] == {"state": "closed", "since": 2000.0}


async def test_the_degradation_level_comes_from_the_callable_passed_in() -> None:
    def level_of(states: Mapping[str, str]) -> int:
        return 3 if states.get("gpu") == "open" else 0

    board = BreakerBoard(level_of=level_of, clock=Clock())
    await board.execute(TripBreaker("db", state="open"))
    assert board.snapshot()["degradation_level"] == 0
    await board.execute(TripBreaker("gpu", state="open"))
    assert board.snapshot()["degradation_level"] == 3


async def test_a_failing_transition_callback_does_not_undo_the_transition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(t: Transition) -> None:
        raise RuntimeError("slack is down")

    board = BreakerBoard(on_transition=broken, clock=Clock())
    assert "closed -> open" in await board.execute(TripBreaker("db", state="open"))
    assert board.states_by_name() == {"db": "open"}
    assert "transition callback failed" in caplog.text


async def test_the_board_refuses_other_actions() -> None:
    board = BreakerBoard(clock=Clock())
    with pytest.raises(ExecutorError, match="cannot carry out restart") as err:
        await board.execute(Restart("api"))
    assert not err.value.temporary
    assert await board.states(["api"]) == {}


async def test_board_state_survives_a_restart_through_to_dict_and_restore() -> None:
    board = BreakerBoard(clock=Clock(1234.0))
    await board.execute(TripBreaker("db", state="open"))
    again = BreakerBoard(clock=Clock())
    again.restore({**board.to_dict(), "junk": {"state": "melted"}, "bad": 3})
    assert again.snapshot() == board.snapshot()


async def test_what_humans_were_told_survives_a_restart_with_the_board() -> None:
    board = BreakerBoard(clock=Clock(1234.0))
    await board.execute(TripBreaker("db", state="open"))
    await board.execute(TripBreaker("gpu", state="half_open"))
    board.told["gpu"] = "open"  # the opening of db was not told
    again = BreakerBoard(clock=Clock())
    again.restore(board.to_dict())
    assert again.told == {"db": "closed", "gpu": "open"}


async def test_a_board_saved_without_what_humans_were_told_takes_them_as_told() -> None:
    # saved by a version that did not keep it: each transition was told then
    board = BreakerBoard(clock=Clock())
    board.restore(
        {
            "db": {"state": "open", "since": 1.0},
            "gpu": {"state": "half_open", "since": 2.0},
            "ssd": {"state": "closed", "since": 3.0},
        }
    )
    assert board.told == {"db": "open", "gpu": "open", "ssd": "closed"}


async def test_get_v1_breakers_serves_the_snapshot() -> None:
    board = BreakerBoard("breakers", BoardSpec(names=("db",)), clock=Clock())
    await board.execute(TripBreaker("gpu", state="open"))
    app = web.Application()
    app.add_routes(breakers_routes(board))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/breakers")
        assert resp.status == 200
        assert await resp.json() == board.snapshot()


async def test_gauges_follow_the_board_at_each_scrape() -> None:
    board = BreakerBoard(clock=Clock(1000.0))
    registry = CollectorRegistry()
    breaker_gauges(board, registry)
    assert "autoscaler_degradation_level 0.0" in generate_latest(registry).decode()
    await board.execute(TripBreaker("db", state="open"))
    await board.execute(TripBreaker("gpu", state="half_open"))
    text = generate_latest(registry).decode()
    assert 'autoscaler_breaker_state{breaker="db"} 2.0' in text
    assert 'autoscaler_breaker_state{breaker="gpu"} 1.0' in text
    assert 'autoscaler_breaker_since_seconds{breaker="db"} 1000.0' in text
    assert "autoscaler_degradation_level 2.0" in text
