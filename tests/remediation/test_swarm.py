"""The Docker Swarm executor against a real single-node swarm (shared dockerd)."""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import docker
import pytest

from policies.types import Restart, Rollback, Scale, TripBreaker
from remediation.base import ExecutorError
from remediation.swarm import SwarmExecutor, SwarmSpec
from tests.harness.dockerd import IMAGE_V1, IMAGE_V2
from tests.remediation.conftest import COMMAND, PREFIX
from tests.remediation.helpers import ServiceFactory, await_for, running_tasks, wait_for

pytestmark = pytest.mark.integration

OPT_IN = {"autoscaler.enable": "true", "autoscaler.min": "1", "autoscaler.max": "4"}


def spec_of(api: docker.APIClient, service: str) -> dict[str, Any]:
    result: dict[str, Any] = api.inspect_service(service)
    return result


def replicas_of(api: docker.APIClient, service: str) -> int:
    return int(spec_of(api, service)["Spec"]["Mode"]["Replicated"]["Replicas"])


def set_image(
    api: docker.APIClient, service: str, image: str, command: list[str] | None = None
) -> None:
    svc = spec_of(api, service)
    spec = svc["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = image
    if command is not None:
        spec["TaskTemplate"]["ContainerSpec"]["Command"] = command
    resp = api._post_json(
        api._url("/services/{0}/update", svc["ID"]),
        data=spec,
        params={"version": svc["Version"]["Index"]},
    )
    api._raise_for_status(resp)


def scale_by_hand(service: str, replicas: int) -> None:
    """``docker service scale``, as a human runs it: another write that keeps the template."""
    subprocess.run(
        ["docker", "service", "scale", "--detach", f"{service}={replicas}"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def label_by_hand(service: str, label: str) -> None:
    """``docker service update --label-add``: a write that keeps the template."""
    subprocess.run(
        ["docker", "service", "update", "--detach", "--label-add", label, service],
        check=True,
        capture_output=True,
        timeout=60,
    )


def update_state(api: docker.APIClient, service: str) -> str:
    return str((spec_of(api, service).get("UpdateStatus") or {}).get("State", ""))


def image_of(api: docker.APIClient, service: str) -> str:
    return str(spec_of(api, service)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])


def all_running_on(api: docker.APIClient, service: str, image: str, n: int) -> bool:
    tasks = running_tasks(api, service)
    return len(tasks) == n and all(t["Spec"]["ContainerSpec"]["Image"] == image for t in tasks)


EXITS = ["sh", "-c", "exit 3"]
"""A command whose tasks fail at once: an update to it fails."""
OTHER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3601 & wait"]
"""A command like ``COMMAND``: on v2, a third task template ("v3") that runs."""


PAUSE_MONITOR_NS = 30_000_000_000


@pytest.fixture
def pausing_service(api: docker.APIClient) -> Iterator[str]:
    """Two replicas on v1 whose updates pause at the first failed task (swarm's default
    failure action, made explicit; docker-py's default is "continue") and whose rollbacks
    pause likewise.

    Swarm's updater counts a failed task only while it is inside the monitor window, from
    when the updater saw it start, and reads failures only between slots, so a busy node
    could read one late and complete the update on a failing image. 30 s is slack, not test
    time: the tests here never wait for an update to complete."""
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    api.create_service(
        docker.types.TaskTemplate(
            container_spec=docker.types.ContainerSpec(image=IMAGE_V1, command=COMMAND)
        ),
        name=name,
        labels=OPT_IN,
        mode=docker.types.ServiceMode("replicated", replicas=2),
        update_config=docker.types.UpdateConfig(
            parallelism=1, monitor=PAUSE_MONITOR_NS, failure_action="pause", order="stop-first"
        ),
        rollback_config=docker.types.RollbackConfig(
            parallelism=1, monitor=PAUSE_MONITOR_NS, failure_action="pause", order="stop-first"
        ),
    )
    try:
        yield name
    finally:
        try:
            api.remove_service(name)
        except docker.errors.NotFound:
            pass


async def test_scale_up_and_down_changes_running_replicas(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    ex = SwarmExecutor("swarm")
    try:
        detail = await ex.execute(Scale(svc, replicas=3, current=1))
        assert detail == "replicas 1 -> 3"

        async def three() -> bool:
            st = (await ex.states([svc]))[svc]
            return st.desired_replicas == 3 and st.running_replicas == 3

        await await_for(three, what="3 running replicas")
        assert await ex.execute(Scale(svc, replicas=1, current=3)) == "replicas 3 -> 1"
        wait_for(lambda: len(running_tasks(api, svc)) == 1, what="1 running task")
        assert await ex.execute(Scale(svc, replicas=1, current=1)) == "already at 1 replicas"
    finally:
        await ex.aclose()


async def test_states_leave_out_unknown_targets_and_report_the_image(
    make_service: ServiceFactory,
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    ex = SwarmExecutor("swarm", SwarmSpec(services={"api": svc}))
    try:
        states = await ex.states(["api", "astest-remediation-does-not-exist"])
        assert set(states) == {"api"}
        st = states["api"]
        assert st.image == IMAGE_V1
        assert st.previous_image == ""
        assert st.deploy_id == ""
        assert st.updated_at == 0.0
        assert not st.deploying
    finally:
        await ex.aclose()


async def test_an_older_api_version_counts_running_tasks_instead(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=2, labels=OPT_IN)
    wait_for(lambda: len(running_tasks(api, svc)) == 2, what="2 running tasks")
    ex = SwarmExecutor("swarm", SwarmSpec(api_version="1.40"))  # before ServiceStatus
    try:
        st = (await ex.states([svc]))[svc]
        assert (st.desired_replicas, st.running_replicas) == (2, 2)
    finally:
        await ex.aclose()


async def test_rolling_restart_replaces_every_task(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=2, labels=OPT_IN)
    before = wait_for(
        lambda: {t["ID"] for t in running_tasks(api, svc)} if len(running_tasks(api, svc)) == 2
        else set(),
        what="2 running tasks",
    )  # fmt: skip
    ex = SwarmExecutor("swarm")
    try:
        detail = await ex.execute(Restart(svc))
        assert detail == "rolling restart (ForceUpdate=1)"

        def replaced() -> bool:
            now = {t["ID"] for t in running_tasks(api, svc)}
            return len(now) == 2 and not now & before and update_state(api, svc) == "completed"

        wait_for(replaced, what="two new running tasks")
        assert spec_of(api, svc)["Spec"]["TaskTemplate"]["ForceUpdate"] == 1
    finally:
        await ex.aclose()


async def test_rollback_restores_the_previous_image_after_a_real_update(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    wait_for(lambda: running_tasks(api, svc), what="a running task")
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "completed", what="the update to v2")
    ex = SwarmExecutor("swarm")
    try:
        st = (await ex.states([svc]))[svc]
        assert (st.image, st.previous_image) == (IMAGE_V2, IMAGE_V1)
        assert st.update_state == "completed"
        assert st.updated_at > 0 and st.deploy_id.startswith(spec_of(api, svc)["ID"] + "@")

        detail = await ex.execute(Rollback(svc, deploy_id=st.deploy_id))
        assert detail == f"rollback {IMAGE_V2} -> {IMAGE_V1}"

        def back_on_v1() -> bool:
            image = spec_of(api, svc)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            tasks = running_tasks(api, svc)
            on_v1 = [t for t in tasks if t["Spec"]["ContainerSpec"]["Image"] == IMAGE_V1]
            return (
                image == IMAGE_V1
                and len(on_v1) == len(tasks) == 1
                and update_state(api, svc) == "rollback_completed"
            )

        wait_for(back_on_v1, what="the service back on v1")
        after = (await ex.states([svc]))[svc]
        assert after.image == IMAGE_V1
        assert after.deploy_id != st.deploy_id  # the rollback is a rollout of its own
    finally:
        await ex.aclose()


async def test_a_deploy_survives_our_scale_and_its_rollback_restores_the_previous_image(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    # swarm drops UpdateStatus and sets PreviousSpec to the v2 spec on our scale: without
    # a record the deploy vanishes and rollback=previous would restore v2
    svc = make_service(replicas=1, labels=OPT_IN)
    wait_for(lambda: running_tasks(api, svc), what="a running task")
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "completed", what="the update to v2")
    ex = SwarmExecutor("swarm")
    try:
        deployed = (await ex.states([svc]))[svc]
        assert await ex.execute(Scale(svc, replicas=2, current=1)) == "replicas 1 -> 2"
        wait_for(lambda: all_running_on(api, svc, IMAGE_V2, 2), what="2 tasks on v2")
        assert spec_of(api, svc).get("UpdateStatus") is None  # swarm's own record is gone
        after = (await ex.states([svc]))[svc]
        assert (after.deploy_id, after.updated_at) == (deployed.deploy_id, deployed.updated_at)
        assert (after.image, after.previous_image) == (IMAGE_V2, IMAGE_V1)
        assert after.update_state == "completed"
        assert (await ex.discover())[svc].settings == {}  # the record is not a setting

        detail = await ex.execute(Rollback(svc, deploy_id=deployed.deploy_id))
        assert detail == f"rollback {IMAGE_V2} -> {IMAGE_V1} (image only)"
        wait_for(
            lambda: all_running_on(api, svc, IMAGE_V1, 2) and update_state(api, svc) == "completed",
            what="both tasks back on v1",
        )
        assert replicas_of(api, svc) == 2  # the replicas of now, not of before the deploy
        rolled = (await ex.states([svc]))[svc]
        assert rolled.update_state == "rollback_completed"  # the rule never undoes it
        assert rolled.deploy_id not in ("", deployed.deploy_id)
        assert (rolled.image, rolled.previous_image) == (IMAGE_V1, IMAGE_V2)
        with pytest.raises(ExecutorError, match="no longer the latest"):
            await ex.execute(Rollback(svc, deploy_id=deployed.deploy_id))
    finally:
        await ex.aclose()


async def test_a_deploy_after_our_scale_is_judged_on_its_own(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "completed", what="the update to v2")
    ex = SwarmExecutor("swarm")
    try:
        deployed = (await ex.states([svc]))[svc]
        await ex.execute(Scale(svc, replicas=2, current=1))
        set_image(api, svc, IMAGE_V1)  # someone deploys again: our record no longer applies
        wait_for(lambda: update_state(api, svc) == "completed", what="the update to v1")
        after = (await ex.states([svc]))[svc]
        assert after.deploy_id not in ("", deployed.deploy_id)
        assert (after.image, after.previous_image) == (IMAGE_V1, IMAGE_V2)
        detail = await ex.execute(Rollback(svc, deploy_id=after.deploy_id))
        assert detail == f"rollback {IMAGE_V1} -> {IMAGE_V2}"  # swarm's own rollback
    finally:
        await ex.aclose()


async def test_a_return_to_the_template_we_recorded_is_a_new_deploy(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    # v1 -> v2, our scale records that deploy; a human deploys "v3", then goes back to v2:
    # the template is the recorded one again, but the deploy is v3 -> v2, and rolling it
    # back must restore v3, not the recorded v1
    svc = make_service(replicas=1, labels=OPT_IN)
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "completed", what="the update to v2")
    ex = SwarmExecutor("swarm")
    try:
        deployed = (await ex.states([svc]))[svc]
        await ex.execute(Scale(svc, replicas=2, current=1))
        set_image(api, svc, IMAGE_V2, command=OTHER)
        wait_for(lambda: update_state(api, svc) == "completed", what="the update to v3")
        set_image(api, svc, IMAGE_V2, command=COMMAND)
        wait_for(lambda: update_state(api, svc) == "completed", what="the update back to v2")
        after = (await ex.states([svc]))[svc]
        assert after.deploy_id not in ("", deployed.deploy_id)
        assert after.updated_at > deployed.updated_at
        assert (after.image, after.previous_image) == (IMAGE_V2, IMAGE_V2)  # v3 ran v2 too

        detail = await ex.execute(Rollback(svc, deploy_id=after.deploy_id))
        assert detail == f"rollback {IMAGE_V2} -> {IMAGE_V2}"  # swarm's own, to v3
        wait_for(lambda: update_state(api, svc) == "rollback_completed", what="the rollback")
        container = spec_of(api, svc)["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert (container["Image"], container["Command"]) == (IMAGE_V2, OTHER)
    finally:
        await ex.aclose()


async def test_a_human_scale_after_our_restart_keeps_the_recorded_deploy(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    # our restart changes the template (ForceUpdate); a human's scale after it sets
    # PreviousSpec to the restart's spec: still no deploy, the record still holds
    svc = make_service(replicas=1, labels=OPT_IN)
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "completed", what="the update to v2")
    ex = SwarmExecutor("swarm")
    try:
        deployed = (await ex.states([svc]))[svc]
        started = spec_of(api, svc)["UpdateStatus"]["StartedAt"]
        await ex.execute(Restart(svc))
        wait_for(
            lambda: (
                spec_of(api, svc).get("UpdateStatus", {}).get("StartedAt") != started
                and update_state(api, svc) == "completed"
            ),
            what="the restart's rollout",
        )
        scale_by_hand(svc, 2)
        wait_for(lambda: all_running_on(api, svc, IMAGE_V2, 2), what="2 tasks on v2")
        after = (await ex.states([svc]))[svc]
        assert (after.deploy_id, after.updated_at) == (deployed.deploy_id, deployed.updated_at)
        assert (after.previous_image, after.update_state) == (IMAGE_V1, "completed")
        detail = await ex.execute(Rollback(svc, deploy_id=deployed.deploy_id))
        assert detail == f"rollback {IMAGE_V2} -> {IMAGE_V1} (image only)"
    finally:
        await ex.aclose()


async def test_our_restart_is_not_taken_for_a_deploy(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    wait_for(lambda: running_tasks(api, svc), what="a running task")
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "completed", what="the update to v2")
    ex = SwarmExecutor("swarm")
    try:
        deployed = (await ex.states([svc]))[svc]
        started = spec_of(api, svc)["UpdateStatus"]["StartedAt"]
        assert await ex.execute(Restart(svc)) == "rolling restart (ForceUpdate=1)"
        wait_for(
            lambda: (
                spec_of(api, svc).get("UpdateStatus", {}).get("StartedAt") != started
                and update_state(api, svc) == "completed"
            ),
            what="the restart's rollout",
        )
        after = (await ex.states([svc]))[svc]
        assert (after.deploy_id, after.updated_at) == (deployed.deploy_id, deployed.updated_at)
        assert (after.previous_image, after.update_state) == (IMAGE_V1, "completed")

        detail = await ex.execute(Rollback(svc, deploy_id=deployed.deploy_id))
        assert detail == f"rollback {IMAGE_V2} -> {IMAGE_V1} (image only)"
        wait_for(lambda: all_running_on(api, svc, IMAGE_V1, 1), what="the task back on v1")
    finally:
        await ex.aclose()


async def test_an_update_swarm_paused_is_a_failed_deploy_we_roll_back_but_never_scale(
    api: docker.APIClient, pausing_service: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc = pausing_service
    wait_for(lambda: len(running_tasks(api, svc)) == 2, what="2 running tasks")
    set_image(api, svc, IMAGE_V2, command=EXITS)
    wait_for(
        lambda: update_state(api, svc) == "paused",
        what="swarm to pause the update",
        show=lambda: update_state(api, svc),
    )
    ex = SwarmExecutor("swarm")
    try:
        with caplog.at_level(logging.WARNING, logger="remediation.swarm"):
            st = (await ex.states([svc]))[svc]
            await ex.states([svc])
        assert (st.update_state, st.image, st.previous_image) == ("paused", IMAGE_V2, IMAGE_V1)
        assert st.deploy_id and st.deploying
        # said once, for a target no rollback policy covers (nothing else tells of it)
        (said,) = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
        assert f"swarm paused the update of {svc} (deploy {st.deploy_id})" in said
        for action in (Scale(svc, replicas=3, current=2), Restart(svc)):
            # a write would drop the pause and let the failed rollout go on
            with pytest.raises(ExecutorError, match="paused its update") as err:
                await ex.execute(action)
            assert not err.value.temporary
        assert update_state(api, svc) == "paused" and replicas_of(api, svc) == 2

        detail = await ex.execute(Rollback(svc, deploy_id=st.deploy_id))
        assert detail == f"rollback {IMAGE_V2} -> {IMAGE_V1}"
        wait_for(lambda: all_running_on(api, svc, IMAGE_V1, 2), what="both tasks back on v1")
    finally:
        await ex.aclose()


async def test_a_rollback_swarm_paused_is_reported_and_nothing_is_written(
    api: docker.APIClient, pausing_service: str
) -> None:
    # the previous spec is the failing one: v1 on a failing command (paused), then v2
    # fixes it; rolling back restores the failing spec, and swarm pauses the rollback
    svc = pausing_service
    set_image(api, svc, IMAGE_V1, command=EXITS)
    wait_for(
        lambda: update_state(api, svc) == "paused",
        what="swarm to pause the update",
        show=lambda: update_state(api, svc),
    )
    set_image(api, svc, IMAGE_V2, command=COMMAND)
    wait_for(lambda: all_running_on(api, svc, IMAGE_V2, 2), what="2 tasks on v2")
    ex = SwarmExecutor("swarm")
    try:
        st = (await ex.states([svc]))[svc]
        await ex.execute(Rollback(svc, deploy_id=st.deploy_id))
        wait_for(
            lambda: update_state(api, svc) == "rollback_paused",
            what="the rollback to pause",
            show=lambda: update_state(api, svc),
        )
        st = (await ex.states([svc]))[svc]
        assert st.update_state == "rollback_paused" and st.deploying
        for action in (Scale(svc, replicas=3, current=2), Restart(svc)):
            with pytest.raises(ExecutorError, match="rollback_paused") as err:
                await ex.execute(action)
            assert not err.value.temporary
        assert update_state(api, svc) == "rollback_paused"
    finally:
        await ex.aclose()


async def test_rollback_of_a_deploy_that_is_no_longer_the_latest_is_refused(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "completed", what="the update to v2")
    ex = SwarmExecutor("swarm")
    try:
        with pytest.raises(ExecutorError, match="no longer the latest") as err:
            await ex.execute(Rollback(svc, deploy_id="someone-else@2020-01-01T00:00:00Z"))
        assert not err.value.temporary
        assert spec_of(api, svc)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == IMAGE_V2
    finally:
        await ex.aclose()


async def test_rollback_of_a_deploy_a_human_scale_hid_is_refused_not_a_revert_of_the_scale(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    # the rule judged v1 -> v2; then `docker service scale` (no deploy record of ours):
    # swarm forgets the deploy and PreviousSpec is v2 with 1 replica, so rollback=previous
    # would undo the scale, keep v2 and report a rollback
    svc = make_service(replicas=1, labels=OPT_IN)
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "completed", what="the update to v2")
    ex = SwarmExecutor("swarm")
    try:
        judged = (await ex.states([svc]))[svc]
        scale_by_hand(svc, 2)
        wait_for(lambda: all_running_on(api, svc, IMAGE_V2, 2), what="2 tasks on v2")
        with pytest.raises(ExecutorError, match="no longer the latest") as err:
            await ex.execute(Rollback(svc, deploy_id=judged.deploy_id))
        assert not err.value.temporary
        assert (image_of(api, svc), replicas_of(api, svc)) == (IMAGE_V2, 2)
    finally:
        await ex.aclose()


async def test_rollback_after_a_label_edit_mid_deploy_is_refused_not_a_rollback_to_the_same_image(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    # a label edited while v1 -> v2 rolls out: swarm restarts the rollout as a deploy of
    # its own whose PreviousSpec is v2 too, so rollback=previous would only drop the label
    svc = make_service(replicas=3, labels=OPT_IN, update_delay_s=3.0)
    wait_for(lambda: len(running_tasks(api, svc)) == 3, what="3 running tasks")
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "updating", what="the update to v2")
    label_by_hand(svc, "team=web")
    ex = SwarmExecutor("swarm")
    try:
        st = await await_for(
            lambda: _deploy_showing(ex, svc, previous_image=IMAGE_V2),
            what="the rollout swarm restarted after the label edit",
        )
        assert st.image == IMAGE_V2
        with pytest.raises(ExecutorError, match="same task template") as err:
            await ex.execute(Rollback(svc, deploy_id=st.deploy_id))
        assert not err.value.temporary
        after = spec_of(api, svc)["Spec"]
        assert (after["TaskTemplate"]["ContainerSpec"]["Image"], after["Labels"]["team"]) == (
            IMAGE_V2,
            "web",
        )
    finally:
        await ex.aclose()


async def _deploy_showing(ex: SwarmExecutor, svc: str, *, previous_image: str) -> Any:
    st = (await ex.states([svc]))[svc]
    return st if st.deploy_id and st.previous_image == previous_image else None


async def test_a_stale_version_is_reread_and_retried(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    bumped: list[int] = []

    def race(service: str, read: Mapping[str, Any]) -> None:
        # Another writer updates the service between our read and our write, once.
        if not bumped:
            spec = spec_of(api, service)
            spec["Spec"]["Labels"]["touched-by"] = "someone-else"
            api._raise_for_status(
                api._post_json(
                    api._url("/services/{0}/update", spec["ID"]),
                    data=spec["Spec"],
                    params={"version": spec["Version"]["Index"]},
                )
            )
            bumped.append(read["Version"]["Index"])

    ex = SwarmExecutor("swarm", after_read=race)
    try:
        detail = await ex.execute(Scale(svc, replicas=2, current=1))
        assert detail == "replicas 1 -> 2 (after 1 version conflict)"
        assert ex.conflicts == 1
        after = spec_of(api, svc)["Spec"]
        assert after["Mode"]["Replicated"]["Replicas"] == 2
        # The retry re-read the service: the other writer's change survived.
        assert after["Labels"]["touched-by"] == "someone-else"
    finally:
        await ex.aclose()


async def test_endless_version_conflicts_end_in_a_temporary_error_not_a_retry_storm(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    writes = 0

    def race(service: str, read: Mapping[str, Any]) -> None:
        nonlocal writes
        spec = spec_of(api, service)
        spec["Spec"]["Labels"]["n"] = str(writes)
        api._raise_for_status(
            api._post_json(
                api._url("/services/{0}/update", spec["ID"]),
                data=spec["Spec"],
                params={"version": spec["Version"]["Index"]},
            )
        )
        writes += 1

    ex = SwarmExecutor("swarm", SwarmSpec(conflict_retries=2), after_read=race)
    try:
        with pytest.raises(ExecutorError, match="out of sequence") as err:
            await ex.execute(Scale(svc, replicas=2, current=1))
        assert err.value.temporary
        assert ex.conflicts == 3 and writes == 3  # the first try and two retries, no more
        assert replicas_of(api, svc) == 1
    finally:
        await ex.aclose()


async def test_scaling_is_refused_while_a_rollout_is_in_progress(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    # One task at a time with a long delay between tasks: the update stays "updating".
    svc = make_service(replicas=2, labels=OPT_IN, update_delay_s=120)
    wait_for(lambda: len(running_tasks(api, svc)) == 2, what="2 running tasks")
    set_image(api, svc, IMAGE_V2)
    wait_for(lambda: update_state(api, svc) == "updating", what="the rollout to start")
    ex = SwarmExecutor("swarm")
    try:
        st = (await ex.states([svc]))[svc]
        assert st.deploying
        with pytest.raises(ExecutorError, match="deploying") as err:
            await ex.execute(Scale(svc, replicas=3, current=2))
        assert err.value.temporary
        assert replicas_of(api, svc) == 2
        # a scale to the count it has writes nothing: done, not an error to retry
        assert await ex.execute(Scale(svc, replicas=2, current=1)) == "already at 2 replicas"
        assert update_state(api, svc) == "updating"
    finally:
        await ex.aclose()


# --- bad input: clear outcomes, nothing touched --------------------------------------------


async def test_an_unknown_service_is_a_permanent_error(swarm: None) -> None:
    ex = SwarmExecutor("swarm")
    try:
        with pytest.raises(ExecutorError, match="not found") as err:
            await ex.execute(Scale("astest-remediation-nonexistent", replicas=2, current=1))
        assert not err.value.temporary
    finally:
        await ex.aclose()


async def test_a_service_without_the_opt_in_label_is_never_touched(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels={"autoscaler.max": "4"})
    ex = SwarmExecutor("swarm")
    try:
        for action in (Scale(svc, replicas=2, current=1), Restart(svc), Rollback(svc)):
            with pytest.raises(ExecutorError, match="has not opted in") as err:
                await ex.execute(action)
            assert not err.value.temporary
        after = spec_of(api, svc)
        assert after["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
        assert "ForceUpdate" not in after["Spec"]["TaskTemplate"] or not after["Spec"][
            "TaskTemplate"
        ].get("ForceUpdate")
        assert svc not in await ex.discover()
    finally:
        await ex.aclose()


async def test_a_global_mode_service_cannot_be_scaled(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(global_mode=True, labels=OPT_IN)
    ex = SwarmExecutor("swarm")
    try:
        with pytest.raises(ExecutorError, match="Global mode") as err:
            await ex.execute(Scale(svc, replicas=2, current=1))
        assert not err.value.temporary
        assert "Global" in spec_of(api, svc)["Spec"]["Mode"]
    finally:
        await ex.aclose()


@pytest.mark.parametrize("mode", ["replicated-job", "global-job"])
async def test_a_job_service_is_never_restarted_which_would_run_the_job_again(
    api: docker.APIClient, swarm: None, mode: str
) -> None:
    # ForceUpdate on a job starts a new job iteration: its completed work runs again
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    api.create_service(
        docker.types.TaskTemplate(
            container_spec=docker.types.ContainerSpec(image=IMAGE_V1, command=["true"]),
            restart_policy=docker.types.RestartPolicy(condition="none"),
        ),
        name=name,
        labels=OPT_IN,
        mode=docker.types.ServiceMode(mode),
    )
    ex = SwarmExecutor("swarm")
    try:
        with pytest.raises(ExecutorError, match="runs to completion") as err:
            await ex.execute(Restart(name))
        assert not err.value.temporary
        after = spec_of(api, name)
        assert not after["Spec"]["TaskTemplate"].get("ForceUpdate")
        assert not (after.get("JobStatus") or {}).get("JobIteration", {}).get("Index")
    finally:
        await ex.aclose()
        api.remove_service(name)


@pytest.mark.parametrize("replicas", [0, 5])
async def test_replicas_outside_the_label_bounds_are_refused(
    api: docker.APIClient, make_service: ServiceFactory, replicas: int
) -> None:
    svc = make_service(replicas=2, labels=OPT_IN)
    ex = SwarmExecutor("swarm", bounds={svc: (0, 100)})  # labels override config bounds
    try:
        with pytest.raises(ExecutorError, match=r"outside its bounds \[1, 4\]") as err:
            await ex.execute(Scale(svc, replicas=replicas, current=2))
        assert not err.value.temporary
        assert replicas_of(api, svc) == 2
    finally:
        await ex.aclose()


async def test_rollback_without_a_previous_spec_is_a_permanent_error(
    api: docker.APIClient, make_service: ServiceFactory
) -> None:
    svc = make_service(replicas=1, labels=OPT_IN)
    ex = SwarmExecutor("swarm")
    try:
        with pytest.raises(ExecutorError, match="no previous spec") as err:
            await ex.execute(Rollback(svc))
        assert not err.value.temporary
        assert spec_of(api, svc).get("PreviousSpec") is None
    finally:
        await ex.aclose()


async def test_actions_the_swarm_does_not_handle_are_refused(swarm: None) -> None:
    ex = SwarmExecutor("swarm")
    with pytest.raises(ExecutorError, match="cannot carry out trip_breaker"):
        await ex.execute(TripBreaker("db", state="open"))
    await ex.aclose()


async def test_discovery_finds_opted_in_services_with_label_bounds_policy_and_settings(
    make_service: ServiceFactory,
) -> None:
    labelled = make_service(
        replicas=1,
        labels={
            "autoscaler.enable": "true",
            "autoscaler.max": "7",
            "autoscaler.policy": "queue",
            "autoscaler.startup_delay": "90s",
            "autoscaler.behavior.scale_down_window": "10m",
            "com.example.team": "search",
        },
    )
    bad_label = make_service(
        replicas=1, labels={"autoscaler.enable": "TRUE", "autoscaler.min": "two"}
    )
    plain = make_service(replicas=1)
    ex = SwarmExecutor("swarm", SwarmSpec(min_replicas=2, max_replicas=5))
    try:
        found = await ex.discover()
        assert found[labelled].min_replicas == 2  # config default
        assert found[labelled].max_replicas == 7  # label overrides
        assert found[labelled].policy == "queue"
        assert found[labelled].settings == {  # the rest of its own labels, as settings
            "startup_delay": "90s",
            "behavior.scale_down_window": "10m",
        }
        assert (found[bad_label].min_replicas, found[bad_label].max_replicas) == (2, 5)
        assert plain not in found
    finally:
        await ex.aclose()
