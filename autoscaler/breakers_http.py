"""HTTP and Prometheus views of the breaker board: ``GET /v1/breakers`` and gauges.

``breakers_routes(board)`` gives the aiohttp route; ``breaker_gauges(board, registry)``
registers a collector that reads ``board.snapshot()`` at every scrape, so there is one
``autoscaler_breaker_state{breaker=...}`` series per breaker (0 closed, 1 half-open,
2 open) and ``autoscaler_degradation_level``. The app wires both in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

STATE_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class Board(Protocol):
    """What the views need of a board."""

    def snapshot(self) -> dict[str, Any]: ...


def breakers_routes(board: Board) -> list[web.RouteDef]:
    """``GET /v1/breakers``: the board's snapshot as JSON."""

    async def get_breakers(request: web.Request) -> web.Response:
        return web.json_response(board.snapshot())

    return [web.get("/v1/breakers", get_breakers)]


class BreakerCollector(Collector):
    """Reads the board at scrape time."""

    def __init__(self, board: Board) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        snap = self.board.snapshot()
        state = GaugeMetricFamily(
            "autoscaler_breaker_state",
            "Published circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["breaker"],
        )
        since = GaugeMetricFamily(
            "autoscaler_breaker_since_seconds",
            "When the published breaker entered its state, epoch seconds.",
            labels=["breaker"],
        )
        for name, b in sorted(snap.get("breakers", {}).items()):
            state.add_metric([name], STATE_VALUES.get(b.get("state", ""), float("nan")))
            since.add_metric([name], float(b.get("since", 0.0)))
        yield state
        yield since
        yield GaugeMetricFamily(
            "autoscaler_degradation_level",
            "Degradation level computed from the published breakers.",
            value=float(snap.get("degradation_level", 0)),
        )


def breaker_gauges(board: Board, registry: CollectorRegistry) -> BreakerCollector:
    """Register the board's gauges on ``registry``; returns the collector (to unregister)."""
    collector = BreakerCollector(board)
    registry.register(collector)
    return collector
