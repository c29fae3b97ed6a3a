"""The Fly Machines executor against the local contract server (Fly is not reachable)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.bus import ActionBus
from autoscaler.config import BusSettings
from policies.markers import Secret
from policies.types import Notify, Restart, Rollback, Scale
from remediation.base import ExecutorError
from remediation.breaker import CircuitBreaker
from remediation.fly import FlyExecutor, FlySpec, auth_header, full_image_ref
from tests.remediation.fly_contract import APP, TOKEN, Failure, FlyContract

V1 = "registry.fly.io/astest-app:deployment-v1"
V2 = "registry.fly.io/astest-app:deployment-v2"


@pytest.fixture
async def fly() -> AsyncIterator[tuple[FlyContract, TestServer]]:
    contract = FlyContract()
    server = TestServer(contract.app)
    await server.start_server()
    yield contract, server
    await server.close()


def executor(
    server: TestServer, contract: FlyContract, *, token: str = TOKEN, **kw: object
) -> FlyExecutor:
    base = str(server.make_url("")).rstrip("/")
    kw.setdefault("graphql_url", f"{base}/graphql")
    spec = FlySpec(app=APP, token=Secret(token), base_url=base, **kw)  # type: ignore[arg-type]
    return FlyExecutor("fly", spec, sleep=contract.sleep)


def fly_bus(ex: FlyExecutor, contract: FlyContract, **bus: Any) -> ActionBus:
    """A bus that sends every action to ``ex``, sleeping on the contract's clock."""
    return ActionBus(
        settings=BusSettings(**bus),
        executors={"fly": ex},
        route=lambda a: ["fly"],
        sleep=contract.sleep,
    )


def test_a_hung_request_times_out_before_the_bus_cuts_the_whole_call() -> None:
    """With the defaults, Fly's own request timeout fires first: its error says what the
    call had done (machines started or restarted), where the bus's says only "timed out"."""
    assert FlySpec().timeout < BusSettings().executor_timeout


def test_tokens_get_the_right_authorization_scheme() -> None:
    assert auth_header("FlyV1 fm2_abc,fm2_def") == "FlyV1 fm2_abc,fm2_def"
    assert auth_header("fo1_personal") == "Bearer fo1_personal"


def test_the_full_image_ref_joins_registry_repository_tag_and_digest() -> None:
    m = {"image_ref": {"registry": "registry-1.docker.io", "repository": "rebelthor/sleep",
                       "tag": "latest", "digest": "sha256:abc"}}  # fmt: skip
    assert full_image_ref(m) == "registry-1.docker.io/rebelthor/sleep:latest@sha256:abc"
    assert full_image_ref({"config": {"image": "x:1"}}) == "x:1"
    # null where the API omits nothing: an image of "None" would pass for a real one
    assert full_image_ref({"config": None}) == full_image_ref({"config": {"image": None}}) == ""


async def test_a_flyv1_token_is_sent_as_is(fly: tuple[FlyContract, TestServer]) -> None:
    contract, server = fly
    contract.authorization = "FlyV1 fm2_secret"
    contract.add_machine()
    ex = executor(server, contract, token="FlyV1 fm2_secret")
    try:
        assert (await ex.states(["api"]))["api"].running_replicas == 1
    finally:
        await ex.aclose()


async def test_a_wrong_token_is_a_permanent_error(fly: tuple[FlyContract, TestServer]) -> None:
    contract, server = fly
    contract.add_machine()
    ex = executor(server, contract, token="nope")
    try:
        with pytest.raises(ExecutorError, match="HTTP 401 unauthorized") as err:
            await ex.execute(Scale("api", replicas=2, current=1))
        assert not err.value.temporary
    finally:
        await ex.aclose()


async def test_scale_up_starts_stopped_machines_before_creating_clones(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    first = contract.add_machine(region="ams")
    stopped = contract.add_machine(state="stopped")
    contract.add_machine(group="worker")  # another process group is left alone
    ex = executor(server, contract)
    try:
        detail = await ex.execute(Scale("api", replicas=4, current=1))
        assert detail.startswith(f"started machines 1 -> 4: started {stopped}; created ")
        assert contract.started() == 4
        clones = [m for m in contract.live() if m["id"] not in (first, stopped)]
        assert len(clones) == 2
        source = contract.machines[first]
        for c in clones:
            assert c["config"]["image"] == full_image_ref(source)
            assert c["config"]["guest"] == source["config"]["guest"]
            assert c["config"]["metadata"]["fly_process_group"] == "app"
            assert c["region"] == "ams"
        assert contract.started("worker") == 1
    finally:
        await ex.aclose()


async def test_scale_up_does_not_start_a_machine_still_suspending(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """Like one still stopping, a machine mid-suspend cannot be started yet (412): a clone
    is created instead."""
    contract, server = fly
    contract.add_machine()
    suspending = contract.add_machine(state="suspending")
    ex = executor(server, contract)
    try:
        assert (await ex.execute(Scale("api", replicas=2, current=1))).startswith(
            "started machines 1 -> 2: created "
        )
        assert contract.machines[suspending]["state"] == "suspending"
        assert not any(r.endswith("/start") for r in contract.requests)
    finally:
        await ex.aclose()


async def test_scale_down_stops_the_newest_machines_and_keeps_them(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    ids = sorted(contract.add_machine() for _ in range(3))
    ex = executor(server, contract)
    try:
        assert await ex.execute(Scale("api", replicas=1, current=3)) == (
            f"started machines 3 -> 1: stopped {ids[2]}, {ids[1]}"
        )
        assert contract.started() == 1 and len(contract.live()) == 3
        assert await ex.execute(Scale("api", replicas=1, current=1)) == (
            "already at 1 started machines"
        )
    finally:
        await ex.aclose()


async def test_scale_down_stops_started_machines_not_one_still_starting(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """The newest machine is still ``starting``: a stop would be refused (412); another,
    started, machine is stopped instead."""
    contract, server = fly
    ids = sorted(contract.add_machine() for _ in range(3))
    contract.machines[ids[2]]["state"] = "starting"
    ex = executor(server, contract)
    try:
        assert await ex.execute(Scale("api", replicas=2, current=3)) == (
            f"started machines 3 -> 2: stopped {ids[1]}"
        )
        assert contract.machines[ids[2]]["state"] == "starting"
    finally:
        await ex.aclose()


async def test_scale_down_with_only_machines_mid_transition_is_a_clear_temporary_error(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    ids = sorted(contract.add_machine() for _ in range(2))
    contract.machines[ids[0]]["state"] = "restarting"
    contract.machines[ids[1]]["state"] = "starting"
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match="not stopping a machine mid-transition") as err:
            await ex.execute(Scale("api", replicas=1, current=2))
        assert err.value.temporary
        assert f"{ids[1]} (starting)" in str(err.value) and "HTTP 412" not in str(err.value)
        assert not any(r.endswith("/stop") for r in contract.requests)
    finally:
        await ex.aclose()


async def test_machines_beyond_the_maximum_are_destroyed_stopped_ones_only(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    keep = sorted(contract.add_machine() for _ in range(2))
    idle = [contract.add_machine(state="stopped") for _ in range(3)]
    ex = executor(server, contract, max_replicas=3)
    try:
        detail = await ex.execute(Scale("api", replicas=2, current=2))
        assert "destroyed" in detail
        live = contract.live()
        assert len(live) == 3
        assert all(contract.machines[k]["state"] == "started" for k in keep)
        assert sum(contract.machines[i]["state"] == "destroyed" for i in idle) == 2
    finally:
        await ex.aclose()


@pytest.mark.parametrize("replicas", [0, -1, 11])
async def test_replicas_outside_the_bounds_are_refused_and_never_below_one(
    fly: tuple[FlyContract, TestServer], replicas: int
) -> None:
    contract, server = fly
    contract.add_machine()
    ex = FlyExecutor(
        "fly",
        executor(server, contract, min_replicas=0).spec,
        bounds={"api": (0, 10)},
        sleep=contract.sleep,
    )
    try:
        with pytest.raises(ExecutorError, match=r"outside its bounds \[1, 10\]") as err:
            await ex.execute(Scale("api", replicas=replicas, current=1))
        assert not err.value.temporary
        assert contract.requests == []  # refused before any call
    finally:
        await ex.aclose()


async def test_an_app_without_machines_cannot_be_scaled(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match="no machines in process group 'app'") as err:
            await ex.execute(Scale("api", replicas=2, current=0))
        assert not err.value.temporary
    finally:
        await ex.aclose()


async def test_an_unknown_app_is_a_permanent_error(fly: tuple[FlyContract, TestServer]) -> None:
    contract, server = fly
    base = executor(server, contract).spec
    spec = FlySpec(app="astest-nope", token=base.token, base_url=base.base_url, graphql_url="")
    ex = FlyExecutor("fly", spec, sleep=contract.sleep)
    try:
        with pytest.raises(ExecutorError, match="HTTP 404 app not found") as err:
            await ex.execute(Scale("api", replicas=2, current=1))
        assert not err.value.temporary
        assert await FlyExecutor("fly", FlySpec()).states(["api"]) == {}  # no app: left out
    finally:
        await ex.aclose()


async def test_nothing_is_scaled_while_a_machine_is_updating(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    contract.add_machine()
    busy = contract.add_machine()
    contract.machines[busy]["state"] = "updating"
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match="updating") as err:
            await ex.execute(Scale("api", replicas=3, current=2))
        assert err.value.temporary
        assert (await ex.states(["api"]))["api"].deploying
        assert len(contract.live()) == 2
    finally:
        await ex.aclose()


async def test_nothing_is_done_while_a_release_is_running(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    contract.add_machine()
    contract.add_machine()
    contract.release_status = "running"
    ex = executor(server, contract)
    try:
        for action in (Scale("api", replicas=3, current=2), Restart("api"), Rollback("api")):
            with pytest.raises(ExecutorError, match="release is being deployed") as err:
                await ex.execute(action)
            assert err.value.temporary
        st = (await ex.states(["api"]))["api"]
        assert st.update_state == "running" and st.deploying
        assert not any(r.endswith(("/start", "/restart")) for r in contract.requests)
    finally:
        await ex.aclose()


async def test_restart_restarts_every_started_machine(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    ids = sorted(contract.add_machine() for _ in range(2))
    contract.add_machine(state="stopped")
    ex = executor(server, contract)
    try:
        assert await ex.execute(Restart("api")) == f"restarted 2 machines: {ids[0]}, {ids[1]}"
        for mid in ids:
            assert contract.machines[mid]["events"][-1]["type"] == "restart"
    finally:
        await ex.aclose()


async def test_a_restart_retried_by_the_bus_restarts_only_the_machines_not_yet_restarted(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """The second machine's restart fails (503) after the first was restarted: the bus's
    retry of the same action must not restart the first machine a second time."""
    contract, server = fly
    ids = sorted(contract.add_machine() for _ in range(3))
    contract.fail_next(Failure(503, "hiccup", match=f"{ids[1]}/restart"))
    ex = executor(server, contract)
    bus = fly_bus(ex, contract, retries=2)
    try:
        (outcome,) = await bus.submit([Restart("api")], contract.now)
        assert outcome.status == "done", outcome.detail
        assert outcome.detail == f"restarted 3 machines: {', '.join(ids)}"
        restarts = {
            mid: sum(e["type"] == "restart" for e in contract.machines[mid]["events"])
            for mid in ids
        }
        assert restarts == dict.fromkeys(ids, 1)
        # a new restart (the next one the policy asks for) restarts every machine again
        assert await ex.execute(Restart("api", attempt=2)) == outcome.detail
    finally:
        await ex.aclose()


async def test_a_restart_that_timed_out_part_way_is_finished_not_begun_again(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """The API hangs on the second machine: the bus cancels the call at its timeout, and
    its retry goes on from there instead of restarting the first machine again."""
    contract, server = fly
    ids = sorted(contract.add_machine() for _ in range(2))
    contract.hang = f"{ids[1]}/restart"
    ex = executor(server, contract)
    bus = fly_bus(ex, contract, executor_timeout=0.2, retries=1)
    try:
        (outcome,) = await bus.submit([Restart("api")], contract.now)
        assert (outcome.status, outcome.detail) == ("failed", "temporary: timed out after 0.2 s")
        contract.hang = ""
        (outcome,) = await bus.submit([Restart("api")], contract.now + 15)  # a new restart
        assert outcome.status == "done"
        restarts = [
            sum(e["type"] == "restart" for e in contract.machines[mid]["events"]) for mid in ids
        ]
        assert restarts == [2, 1]  # once per restart action, never twice for one
    finally:
        await ex.aclose()


async def test_a_restart_that_fails_part_way_says_which_machines_it_restarted(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    ids = sorted(contract.add_machine() for _ in range(2))
    contract.fail_next(Failure(503, "hiccup", match=f"{ids[1]}/restart"))
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match=f"after: restarted {ids[0]}") as err:
            await ex.execute(Restart("api"))
        assert err.value.temporary
    finally:
        await ex.aclose()


async def test_rollback_updates_every_machine_to_the_previous_image(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    for _ in range(2):
        contract.add_machine(image=V1)
    contract.now += 60
    contract.deploy(V2)
    ex = executor(server, contract)
    try:
        st = (await ex.states(["api"]))["api"]
        assert (st.image, st.previous_image) == (V2, V1)
        assert st.updated_at == contract.now and st.deploy_id == f"{APP}@v2"
        before = {m["id"]: m["instance_id"] for m in contract.live()}
        detail = await ex.execute(Rollback("api", deploy_id=st.deploy_id))
        assert detail == f"rollback {V2} -> {V1} on 2 machines"
        for m in contract.live():
            assert m["config"]["image"] == V1
            assert m["image_ref"]["tag"] == "deployment-v1"
            assert m["instance_id"] != before[m["id"]]  # a new version of each machine
        assert (await ex.states(["api"]))["api"].image == V1
    finally:
        await ex.aclose()


async def test_a_rollback_leaves_stopped_machines_stopped(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """Machines scaled to zero (or stopped by auto_stop) get the old image too, but an
    update starts a machine unless it says ``skip_launch``: a rollback must not wake them."""
    contract, server = fly
    running = contract.add_machine(image=V1)
    stopped = contract.add_machine(image=V1, state="stopped")
    suspended = contract.add_machine(image=V1, state="suspended")
    contract.deploy(V2)
    ex = executor(server, contract)
    try:
        assert await ex.execute(Rollback("api")) == f"rollback {V2} -> {V1} on 3 machines"
        states = {mid: contract.machines[mid]["state"] for mid in (running, stopped, suspended)}
        assert states == {running: "started", stopped: "stopped", suspended: "suspended"}
        assert all(m["config"]["image"] == V1 for m in contract.live())
    finally:
        await ex.aclose()


async def test_a_rollback_never_writes_a_config_it_could_not_read_and_says_what_it_had_done(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """A Get Machine answer with no config object (here a JSON list) is a clear temporary
    error, not an AttributeError; the machines rolled back before it are named."""
    contract, server = fly
    first, second = sorted(contract.add_machine(image=V1) for _ in range(2))  # in ID order
    contract.deploy(V2)
    contract.fail_next(Failure(200, "[]", raw=True, match=f"GET /v1/apps/{APP}/machines/{second}"))
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError) as err:
            await ex.execute(Rollback("api"))
        assert str(err.value) == (
            f"fly: get {second}: the answer has no config object (after: rolled back {first})"
        )
        assert err.value.temporary
        assert contract.machines[first]["config"]["image"] == V1
        assert contract.machines[second]["config"]["image"] == V2
    finally:
        await ex.aclose()


async def test_rollback_without_a_previous_image_is_a_permanent_error(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    contract.add_machine(image=V1)
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match="no previous image") as err:
            await ex.execute(Rollback("api"))
        assert not err.value.temporary
    finally:
        await ex.aclose()


async def test_a_rollback_of_an_older_deploy_is_refused(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    contract.add_machine(image=V1)
    contract.deploy(V2)
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match="no longer the latest"):
            await ex.execute(Rollback("api", deploy_id=f"{APP}@v1"))
        assert contract.live()[0]["config"]["image"] == V2
    finally:
        await ex.aclose()


async def test_a_machine_changed_between_read_and_update_is_a_temporary_error(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    mid = contract.add_machine(image=V1)
    contract.deploy(V2)
    hotfixes: list[str] = []

    def someone_else_deploys(machine_id: str) -> None:
        # Right after our GET, another client updates the machine: our version is stale.
        if not hotfixes:
            hotfixes.append(machine_id)
            contract.deploy(V2 + "-hotfix")

    contract.after_get = someone_else_deploys
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match="HTTP 412") as err:
            await ex.execute(Rollback("api"))
        assert err.value.temporary
        assert contract.machines[mid]["config"]["image"] == V2 + "-hotfix"  # not clobbered
    finally:
        await ex.aclose()


async def test_429_is_retried_after_the_injected_sleep(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    contract.add_machine(state="stopped")
    contract.add_machine()
    contract.fail_next(Failure(429, "rate limit exceeded", match="/start"))
    ex = executor(server, contract)
    try:
        start = contract.now
        assert "started" in await ex.execute(Scale("api", replicas=2, current=1))
        assert contract.now == start + 1.0  # one backoff of 1 s, on the server's clock
    finally:
        await ex.aclose()


async def test_a_429_the_executor_retried_is_not_retried_again_by_the_bus(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """Rate limited on every try: the executor's own retries are all; the bus does not
    multiply them (3 tries, not 3 x 3), and waits out a Retry-After before the next call."""
    contract, server = fly
    contract.add_machine(state="stopped")
    contract.add_machine()
    contract.fail_next(*[Failure(429, "rate limit exceeded", match="/start")] * 9)
    ex = executor(server, contract, graphql_url="")
    bus = fly_bus(ex, contract, retries=2)
    try:
        (outcome,) = await bus.submit([Scale("api", replicas=2, current=1)], contract.now)
        assert outcome.status == "failed" and "HTTP 429" in outcome.detail
        assert sum(r.endswith("/start") for r in contract.requests) == 3
    finally:
        await ex.aclose()


async def test_a_429_retry_after_is_passed_to_the_bus(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    contract.add_machine(state="stopped")
    contract.add_machine()
    contract.fail_next(*[Failure(429, "rate limit exceeded", match="/start", retry_after=5)] * 3)
    ex = executor(server, contract, graphql_url="")
    try:
        start = contract.now
        with pytest.raises(ExecutorError, match="HTTP 429") as err:
            await ex.execute(Scale("api", replicas=2, current=1))
        assert err.value.temporary and err.value.retried and err.value.delay == 5
        assert contract.now == start + 10  # waited out twice (within max_delay), then gave up
    finally:
        await ex.aclose()


async def test_a_429_retry_after_given_as_an_http_date_is_waited_out(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """``Retry-After: <HTTP-date>`` (RFC 9110), counted from the answer's ``Date``: the
    server's clock, here its own ``now`` and far from this host's."""
    contract, server = fly
    contract.add_machine(state="stopped")
    contract.add_machine()
    contract.fail_next(
        Failure(429, "rate limit exceeded", match="/start", retry_after=4, as_date=True),
        Failure(429, "rate limit exceeded", match="/start", retry_after=-60, as_date=True),
    )
    ex = executor(server, contract, graphql_url="")
    try:
        start = contract.now
        assert "started" in await ex.execute(Scale("api", replicas=2, current=1))
        assert contract.now == start + 4  # 4 s, then 0 for a date past; was backoff 1 + 2
    finally:
        await ex.aclose()


async def test_a_retry_after_longer_than_max_delay_is_not_slept_but_deferred_by_the_bus(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """Retry-After: 3600 must not hold the pass for an hour (or burn the bus's timeout):
    the action fails at once, temporary, and the bus makes no call before the hour is up."""
    contract, server = fly
    contract.add_machine(state="stopped")
    contract.add_machine()
    contract.fail_next(Failure(429, "rate limit exceeded", match="/start", retry_after=3600))
    ex = executor(server, contract, graphql_url="")
    bus = fly_bus(ex, contract, retries=2)
    try:
        start = contract.now
        (outcome,) = await bus.submit([Scale("api", replicas=2, current=1)], start)
        assert outcome.status == "failed"
        assert outcome.detail.startswith("temporary: ") and "(Retry-After 3600 s)" in outcome.detail
        assert contract.now == start  # nobody slept
        assert sum(r.endswith("/start") for r in contract.requests) == 1
        (later,) = await bus.submit([Scale("api", replicas=2, current=1)], start + 60)
        assert later.status == "skipped-retry-after" and "asked to wait" in later.detail
        assert sum(r.endswith("/start") for r in contract.requests) == 1
        (after,) = await bus.submit([Scale("api", replicas=2, current=1)], start + 3600)
        assert after.status == "done" and contract.started() == 2
    finally:
        await ex.aclose()


async def test_a_retry_after_holds_calls_for_its_target_only(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """Fly rate-limits per machine: a long Retry-After for one target's machines must not
    stop the executor acting for another target (here the same fake app under two names)."""
    contract, server = fly
    contract.add_machine(state="stopped")
    contract.add_machine()
    contract.fail_next(Failure(429, "rate limit exceeded", match="/start", retry_after=3600))
    ex = executor(server, contract, graphql_url="", apps={"web": APP})
    bus = fly_bus(ex, contract, retries=2)
    try:
        start = contract.now
        (outcome,) = await bus.submit([Scale("api", replicas=2, current=1)], start)
        assert outcome.status == "failed" and "(Retry-After 3600 s)" in outcome.detail
        held, other = await bus.submit(
            [Scale("api", replicas=2, current=1), Scale("web", replicas=2, current=1)], start + 60
        )
        assert held.status == "skipped-retry-after" and "for api" in held.detail
        assert other.status == "done" and contract.started() == 2
    finally:
        await ex.aclose()


async def test_the_documented_rate_limit_is_respected_by_backing_off(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    mid = contract.add_machine()
    contract.add_machine()
    ex = executor(server, contract)
    try:
        # Restarting the same machine 5 times at once exceeds 1 req/s with bursts of 3.
        for _ in range(5):
            await ex.execute(Restart("api"))
        assert contract.rate_limited >= 1
        assert sum(e["type"] == "restart" for e in contract.machines[mid]["events"]) == 5
    finally:
        await ex.aclose()


@pytest.mark.parametrize(
    ("failure", "temporary"),
    [
        (Failure(500, "internal error", match="POST"), True),
        (Failure(503, "unavailable", match="POST"), True),
        (Failure(408, "timeout", match="POST"), True),
        (Failure(422, "insufficient resources", "insufficient_capacity", match="POST"), True),
        (Failure(422, "invalid config: guest.memory_mb", match="POST"), False),
        (Failure(400, "bad params", match="POST"), False),
        (Failure(429, "rate limit exceeded", match="POST"), True),
    ],
)
async def test_api_failures_map_to_temporary_or_permanent(
    fly: tuple[FlyContract, TestServer], failure: Failure, temporary: bool
) -> None:
    contract, server = fly
    contract.add_machine()
    # 429 three times: the first try and both retries are answered 429.
    contract.fail_next(*([failure] * (3 if failure.status == 429 else 1)))
    ex = executor(server, contract, graphql_url="")
    try:
        with pytest.raises(ExecutorError, match=f"HTTP {failure.status}") as err:
            await ex.execute(Scale("api", replicas=2, current=1))
        assert err.value.temporary is temporary
        assert "fly-request-id" in str(err.value)
    finally:
        await ex.aclose()


async def test_a_2xx_answer_that_is_not_json_is_a_temporary_error(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    contract.add_machine()
    contract.fail_next(Failure(200, "<html>proxy page</html>", match="GET /v1", raw=True))
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match="not JSON") as err:
            await ex.execute(Restart("api"))
        assert err.value.temporary
    finally:
        await ex.aclose()


async def test_insufficient_capacity_midway_reports_what_was_done(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    stopped = contract.add_machine(state="stopped")
    contract.add_machine()
    contract.capacity = 2
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match="insufficient_capacity") as err:
            await ex.execute(Scale("api", replicas=3, current=1))
        assert err.value.temporary
        assert f"after: started {stopped}" in str(err.value)
        assert contract.started() == 2
    finally:
        await ex.aclose()


async def test_a_leased_machine_is_a_temporary_error(
    fly: tuple[FlyContract, TestServer],
) -> None:
    contract, server = fly
    mid = max(contract.add_machine() for _ in range(2))  # the newest is stopped first
    contract.leases[mid] = "someone-elses-nonce"
    ex = executor(server, contract)
    try:
        with pytest.raises(ExecutorError, match="HTTP 409 machine is leased") as err:
            await ex.execute(Scale("api", replicas=1, current=2))
        assert err.value.temporary
    finally:
        await ex.aclose()


async def test_an_unreachable_api_is_a_temporary_error(unused_tcp_port: int) -> None:
    spec = FlySpec(app=APP, token=Secret(TOKEN), base_url=f"http://127.0.0.1:{unused_tcp_port}")
    ex = FlyExecutor("fly", spec)
    try:
        with pytest.raises(ExecutorError, match="unreachable") as err:
            await ex.execute(Restart("api"))
        assert err.value.temporary
    finally:
        await ex.aclose()


async def test_the_breaker_opens_while_the_api_is_down_and_closes_when_it_returns(
    unused_tcp_port: int,
) -> None:
    contract = FlyContract()
    contract.add_machine()
    contract.add_machine(state="stopped")
    ex = FlyExecutor(
        "fly",
        FlySpec(app=APP, token=Secret(TOKEN), base_url=f"http://127.0.0.1:{unused_tcp_port}",
                graphql_url=""),
        sleep=contract.sleep,
    )  # fmt: skip
    breaker = CircuitBreaker("fly")
    calls = 0

    async def guarded(action: Scale, now: float) -> str:
        nonlocal calls
        if not breaker.allow(now):
            return "breaker-open"
        calls += 1
        try:
            detail = await ex.execute(action)
        except ExecutorError as exc:
            breaker.record_failure(now)
            return "temporary" if exc.temporary else "permanent"
        breaker.record_success(now)
        return detail

    try:
        down = [await guarded(Scale("api", replicas=2, current=1), 100.0 + i) for i in range(7)]
        assert down == ["temporary"] * 5 + ["breaker-open"] * 2 and calls == 5
        server = TestServer(contract.app, port=unused_tcp_port)
        await server.start_server()
        try:
            later = [
                await guarded(Scale("api", replicas=n, current=0), 140.0 + i)
                for i, n in enumerate((2, 1, 2))
            ]
            assert all(d.startswith("started machines") for d in later)
            assert breaker.state == "closed" and contract.started() == 2
        finally:
            await server.close()
    finally:
        await ex.aclose()


async def test_the_fly_executor_refuses_notify_actions() -> None:
    with pytest.raises(ExecutorError, match="cannot carry out notify"):
        await FlyExecutor().execute(Notify("api", summary="x"))


# --- invariant --------------------------------------------------------------------------

MIN, MAX = 2, 5
step = st.tuples(
    st.integers(min_value=-1, max_value=8),
    st.sampled_from(["ok", "ok", "500", "429", "capacity", "updating"]),
)


@settings(max_examples=60, deadline=None)
@given(initial=st.integers(min_value=MIN, max_value=MAX), steps=st.lists(step, max_size=8))
def test_started_machines_never_leave_their_bounds_whatever_the_decisions_and_failures(
    initial: int, steps: list[tuple[int, str]]
) -> None:
    async def scenario() -> None:
        contract = FlyContract()
        for _ in range(initial):
            contract.add_machine()
        server = TestServer(contract.app)
        await server.start_server()
        ex = executor(server, contract, min_replicas=MIN, max_replicas=MAX)
        try:
            for replicas, failure in steps:
                if failure == "500":
                    contract.fail_next(Failure(500, "boom", match="POST /v1"))
                elif failure == "429":
                    contract.fail_next(*[Failure(429, "slow down", match="POST /v1")] * 3)
                elif failure == "capacity":
                    contract.capacity = len(contract.live())
                elif failure == "updating":
                    contract.live()[0]["state"] = "updating"
                try:
                    await ex.execute(Scale("api", replicas=replicas, current=0))
                except ExecutorError:
                    pass
                contract.failures.clear()
                contract.capacity = 1000
                for m in contract.live():
                    if m["state"] == "updating":
                        m["state"] = "started"
                started = contract.started()
                assert MIN <= started <= MAX
                assert len(contract.live()) <= MAX
                contract.now += 15  # the next tick
        finally:
            await ex.aclose()
            await server.close()

    asyncio.run(scenario())


async def test_a_retried_rollback_finishes_what_the_first_try_began(
    fly: tuple[FlyContract, TestServer],
) -> None:
    """One machine's update fails part-way (503): the retry must take the rest to the good
    image, not choose again (most machines now run the good image, the bad one would
    look like the previous)."""
    contract, server = fly
    for _ in range(3):
        contract.add_machine(image=V1)
    contract.now += 60
    contract.deploy(V2)
    ex = executor(server, contract)
    try:
        deploy = (await ex.states(["api"]))["api"].deploy_id
        last = sorted(contract.machines)[-1]
        contract.fail_next(Failure(503, "hiccup", match=f"POST /v1/apps/{APP}/machines/{last}"))
        with pytest.raises(ExecutorError) as err:
            await ex.execute(Rollback("api", deploy_id=deploy))
        assert err.value.temporary
        assert await ex.execute(Rollback("api", deploy_id=deploy)) == (
            f"rollback {V2} -> {V1} on 1 machines"
        )
        assert [m["config"]["image"] for m in contract.live()] == [V1, V1, V1]
    finally:
        await ex.aclose()
