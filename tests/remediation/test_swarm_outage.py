"""The swarm executor when dockerd goes away and comes back, seen through a socket proxy.

Stopping the proxy makes the executor see connection errors exactly as if dockerd were down;
the shared dockerd itself is never touched.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.bus import ActionBus
from autoscaler.config import BusSettings
from policies.types import Action, Restart, Scale
from remediation.base import ExecutorError
from remediation.breaker import CircuitBreaker
from remediation.swarm import SwarmExecutor, SwarmSpec
from tests.harness.dockerd import SocketProxy
from tests.remediation.helpers import ServiceFactory

pytestmark = [
    pytest.mark.integration,
    # docker-py's UnixHTTPConnection.connect() does not close its socket when connect()
    # fails (the daemon is "down"); the garbage collector closes it and Python reports it.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. .socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

OPT_IN = {"autoscaler.enable": "true", "autoscaler.min": "1", "autoscaler.max": "4"}


@pytest.fixture
def proxy(swarm: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SocketProxy]:
    # A short path: unix socket paths are limited to about 100 bytes.
    path = Path(tmp_path_factory.mktemp("px", numbered=True)) / "d.sock"
    p = SocketProxy(str(path))
    p.start()
    try:
        yield p
    finally:
        p.stop()
        gc.collect()  # collect docker-py's leaked sockets while the filter above applies


class Guarded:
    """What the action bus does around an executor: a breaker, counting real calls."""

    def __init__(self, ex: SwarmExecutor) -> None:
        self.ex = ex
        self.breaker = CircuitBreaker("swarm")
        self.calls = 0

    async def run(self, action: Action, now: float) -> str:
        if not self.breaker.allow(now):
            return "breaker-open"
        self.calls += 1
        try:
            detail = await self.ex.execute(action)
        except ExecutorError as exc:
            self.breaker.record_failure(now)
            return f"failed ({'temporary' if exc.temporary else 'permanent'})"
        self.breaker.record_success(now)
        return detail


async def test_a_stopped_daemon_gives_temporary_errors_and_states_fail_cleanly(
    proxy: SocketProxy, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    ex = SwarmExecutor("swarm", SwarmSpec(base_url=proxy.base_url, timeout=5))
    try:
        assert (await ex.states([svc]))[svc].desired_replicas == 1
        proxy.stop()  # dockerd "stopped" mid-run
        with pytest.raises(ExecutorError, match="unreachable") as err:
            await ex.execute(Scale(svc, replicas=2, current=1))
        assert err.value.temporary
        with pytest.raises(ExecutorError, match="unreachable") as err:
            await ex.states([svc])
        assert err.value.temporary
        proxy.start()
        assert await ex.execute(Scale(svc, replicas=2, current=1)) == "replicas 1 -> 2"
    finally:
        await ex.aclose()


async def test_a_fresh_executor_built_while_the_daemon_is_down_works_once_it_returns(
    proxy: SocketProxy, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    proxy.stop()
    ex = SwarmExecutor("swarm", SwarmSpec(base_url=proxy.base_url, timeout=5))
    try:
        with pytest.raises(ExecutorError) as err:
            await ex.states([svc])
        assert err.value.temporary
        proxy.start()
        assert (await ex.states([svc]))[svc].desired_replicas == 1
    finally:
        await ex.aclose()


async def test_the_breaker_opens_while_the_daemon_is_unreachable_and_closes_after_it_returns(
    proxy: SocketProxy, make_service: ServiceFactory, api: docker.APIClient
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    guarded = Guarded(SwarmExecutor("swarm", SwarmSpec(base_url=proxy.base_url, timeout=5)))
    now = 1000.0
    try:
        assert await guarded.run(Scale(svc, replicas=2, current=1), now) == "replicas 1 -> 2"
        proxy.stop()
        outcomes = [await guarded.run(Scale(svc, replicas=3, current=2), now + i) for i in range(8)]
        assert outcomes[:5] == ["failed (temporary)"] * 5
        assert outcomes[5:] == ["breaker-open"] * 3
        assert guarded.breaker.state == "open"
        assert guarded.calls == 6  # five failures reached the executor, then none

        proxy.start()
        later = now + 8 + 30  # reset_timeout elapsed: half-open trials
        trials = [
            await guarded.run(Scale(svc, replicas=n, current=2), later + i)
            for i, n in enumerate((3, 2, 3))
        ]
        assert trials == ["replicas 2 -> 3", "replicas 3 -> 2", "replicas 2 -> 3"]
        assert guarded.breaker.state == "closed"
        assert api.inspect_service(svc)["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    finally:
        await guarded.ex.aclose()


# Decisions are any integer (in or out of bounds); a failure is the daemon being unreachable
# for that call, or another writer racing the executor between its read and its write.
step = st.tuples(st.integers(min_value=-1, max_value=7), st.sampled_from(["ok", "down", "race"]))


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(step, min_size=1, max_size=5))
def test_replicas_never_leave_their_bounds_whatever_the_decisions_and_failures(
    proxy: SocketProxy,
    make_service: ServiceFactory,
    api: docker.APIClient,
    steps: list[tuple[int, str]],
) -> None:
    svc = make_service(replicas=2, labels=OPT_IN, image="autoscaler-test/busybox:v1")
    racing: list[bool] = []

    def race(service: str, read: object) -> None:
        if racing and racing.pop():
            spec = api.inspect_service(service)
            api._raise_for_status(
                api._post_json(
                    api._url("/services/{0}/update", spec["ID"]),
                    data=spec["Spec"],
                    params={"version": spec["Version"]["Index"]},
                )
            )

    async def scenario() -> None:
        ex = SwarmExecutor("swarm", SwarmSpec(base_url=proxy.base_url, timeout=5), after_read=race)
        try:
            for replicas, failure in steps:
                before = api.inspect_service(svc)["Spec"]["Mode"]["Replicated"]["Replicas"]
                if failure == "down":
                    proxy.stop()
                racing[:] = [failure == "race"]
                try:
                    await ex.execute(Scale(svc, replicas=replicas, current=before))
                except ExecutorError as exc:
                    # Refusals are permanent; only an outage is temporary.
                    assert exc.temporary == (failure == "down")
                finally:
                    proxy.start()
                now = api.inspect_service(svc)["Spec"]["Mode"]["Replicated"]["Replicas"]
                assert 1 <= now <= 4
                expected = replicas if 1 <= replicas <= 4 and failure != "down" else before
                assert now == expected
        finally:
            await ex.aclose()

    asyncio.run(scenario())


async def test_a_restart_whose_answer_never_comes_is_neither_retried_nor_asked_for_again(
    proxy: SocketProxy, make_service: ServiceFactory, api: docker.APIClient
) -> None:
    # dockerd does the write but its answer is lost (a busy manager, a restart mid-call):
    # retried by the bus, or asked for again at once (no cooldown left), the restart would
    # roll every task a second time
    svc = make_service(replicas=1, labels=OPT_IN)

    def hang_after_the_write(service: str, read: object) -> None:
        proxy.withhold.set()

    ex = SwarmExecutor(
        "swarm", SwarmSpec(base_url=proxy.base_url, timeout=2), after_read=hang_after_the_write
    )
    bus = ActionBus(
        settings=BusSettings(retries=2, cooldowns={"restart": 60}),
        executors={"swarm": ex},
        route=lambda a: ["swarm"],
    )
    try:
        (outcome,) = await bus.submit([Restart(svc)], 1000.0)
        assert outcome.status == "failed" and outcome.uncertain
        assert "may have been carried out" in outcome.detail
        proxy.withhold.clear()
        (again,) = await bus.submit([Restart(svc)], 1015.0)
        assert again.status == "skipped-cooldown"  # it kept its cooldown
        assert api.inspect_service(svc)["Spec"]["TaskTemplate"]["ForceUpdate"] == 1
    finally:
        proxy.withhold.clear()
        await ex.aclose()
