"""Roll back a deploy that breaches its objectives, within a window, once per deploy."""

from __future__ import annotations

import policy_runbook as runbook
import pytest
from policy_kit import ctx, filled, journalable, one_sentence

from policies.types import Notify, Rollback, TargetState

DEPLOY = 1_000_000.0


def _state(
    deploy_id="d42", updated_at=DEPLOY, update_state="completed", image="api:2", previous="api:1"
):
    return TargetState(
        "api",
        4,
        4,
        image=image,
        previous_image=previous,
        updated_at=updated_at,
        update_state=update_state,
        deploy_id=deploy_id,
    )


def _judge(now, signal, value, held, *, state=None, memory=None, stale=()):
    history = filled(signal, value, now=now, seconds=held)
    decisions = runbook.rollback().evaluate(
        ctx(
            now,
            values={signal: value},
            stale=stale,
            history=history,
            state=state or _state(),
            memory=memory if memory is not None else {},
        )
    )
    for d in decisions:
        assert one_sentence(d.reason), d.reason
        assert journalable(d)
    return decisions


@pytest.mark.parametrize(
    ("signal", "value", "held", "after", "rolls_back"),
    [
        ("error_rate", 0.08, 120, 150, True),  # > 5 % for 2 minutes
        ("error_rate", 0.08, 90, 150, False),  # only 90 s
        ("error_rate", 0.05, 600, 700, False),  # not above 5 %
        ("p95_latency_ms", 620.0, 180, 200, True),  # > 500 ms for 3 minutes
        ("p95_latency_ms", 620.0, 120, 200, False),
        ("error_rate", 0.5, 120, 1900, False),  # deploy older than the 30-minute window
        ("error_rate", 0.5, 600, 60, False),  # trouble began before the deploy
    ],
)
def test_runbook_rollback_conditions(signal, value, held, after, rolls_back):
    decisions = _judge(DEPLOY + after, signal, value, held)
    if rolls_back:
        rollback, notify = decisions
        assert rollback.action == Rollback(target="api", deploy_id="d42")
        assert isinstance(notify.action, Notify)
        assert notify.action.severity == "P1"
        assert notify.action.dedup_key == "rollback:api:d42"
        assert "after deploy d42: roll back" in rollback.reason
    else:
        (d,) = decisions
        assert d.is_hold


def test_a_deploy_is_rolled_back_at_most_once():
    memory: dict[str, object] = {}
    first = _judge(DEPLOY + 150, "error_rate", 0.2, 150, memory=memory)
    again = _judge(DEPLOY + 165, "error_rate", 0.2, 165, memory=memory)
    assert isinstance(first[0].action, Rollback)
    (d,) = again
    assert d.is_hold
    assert "already rolled back once" in d.reason
    # a new deploy is judged afresh
    fresh = _judge(
        DEPLOY + 900,
        "error_rate",
        0.2,
        150,
        memory=memory,
        state=_state("d43", updated_at=DEPLOY + 700),
    )
    assert isinstance(fresh[0].action, Rollback)
    assert fresh[0].action.deploy_id == "d43"


def test_a_rollback_is_never_rolled_back():
    (d,) = _judge(
        DEPLOY + 150, "error_rate", 0.2, 150, state=_state(update_state="rollback_completed")
    )
    assert d.is_hold
    assert "itself a rollback" in d.reason


@pytest.mark.parametrize("state", [None, _state(deploy_id=""), _state(updated_at=0.0)])
def test_no_deploy_means_nothing_to_roll_back(state):
    decisions = runbook.rollback().evaluate(
        ctx(DEPLOY + 150, values={"error_rate": 0.5}, replicas=None, state=state)
    )
    (d,) = decisions
    assert d.is_hold


def test_stale_data_never_rolls_back():
    (d,) = _judge(DEPLOY + 150, "error_rate", 0.5, 150, stale=("error_rate",))
    assert d.is_hold
    assert d.reason.startswith("stale: error_rate is stale")


def test_a_new_deploy_of_the_image_a_rollback_restored_is_not_rolled_back():
    # Fly reports no rollback state: after rolling back d42 (api:2 -> api:1) the machines
    # show a new deploy running api:1; if the breach goes on, that must not be undone
    memory: dict[str, object] = {}
    first = _judge(DEPLOY + 150, "error_rate", 0.2, 150, memory=memory)
    assert isinstance(first[0].action, Rollback)
    restored = _state("api@api:1", DEPLOY + 160, "", image="api:1", previous="api:2")
    (d,) = _judge(DEPLOY + 400, "error_rate", 0.2, 200, memory=memory, state=restored)
    assert d.is_hold and "the image a rollback restored" in d.reason
    # a genuinely new image is judged afresh
    fresh = _state("d44", DEPLOY + 700, image="api:3", previous="api:1")
    later = _judge(DEPLOY + 900, "error_rate", 0.2, 150, memory=memory, state=fresh)
    assert isinstance(later[0].action, Rollback)


def test_an_update_the_orchestrator_paused_is_rolled_back_once_without_a_breach():
    # swarm pauses a rollout whose tasks fail: its verdict, even while the metrics look fine
    memory: dict[str, object] = {}
    paused = _state(update_state="paused")
    first = _judge(DEPLOY + 30, "error_rate", 0.0, 30, state=paused, memory=memory)
    rollback, notify = first
    assert rollback.action == Rollback(target="api", deploy_id="d42")
    assert "paused the update" in rollback.reason
    assert isinstance(notify.action, Notify) and notify.action.dedup_key == "rollback:api:d42"
    (again,) = _judge(DEPLOY + 45, "error_rate", 0.0, 45, state=paused, memory=memory)
    assert again.is_hold and "already rolled back once" in again.reason


def test_an_update_paused_outside_the_window_is_left_to_humans_who_are_told_once():
    # scaling holds while an update is paused: nobody rolling it back stops scaling for good
    memory: dict[str, object] = {}
    paused = _state(update_state="paused")
    (tell,) = _judge(DEPLOY + 1900, "error_rate", 0.0, 60, state=paused, memory=memory)
    assert isinstance(tell.action, Notify)  # no rollback
    assert tell.action.dedup_key == "update-paused:api:d42"
    assert tell.action.severity == "P1" and "needs a human" in tell.action.summary
    assert "paused" in tell.action.summary and "scaling waits" in tell.action.summary
    (again,) = _judge(DEPLOY + 86400, "error_rate", 0.0, 60, state=paused, memory=memory)
    assert again.is_hold and "humans were told" in again.reason
    # a notice the bus did not send goes out on the next pass
    runbook.rollback().not_carried_out(memory, tell.action, failed=False)
    (retry,) = _judge(DEPLOY + 86415, "error_rate", 0.0, 60, state=paused, memory=memory)
    assert isinstance(retry.action, Notify) and retry.action.dedup_key == tell.action.dedup_key
    # the next paused update is a notice of its own
    later = _state("d43", DEPLOY + 90000, "paused")
    (other,) = _judge(DEPLOY + 99000, "error_rate", 0.0, 60, state=later, memory=memory)
    assert isinstance(other.action, Notify) and other.action.dedup_key == "update-paused:api:d43"
    # a completed deploy outside the window is only held, as before
    (done,) = _judge(DEPLOY + 1900, "error_rate", 0.0, 60, state=_state(), memory={})
    assert done.is_hold and "outside" in done.reason


def test_a_rollback_that_failed_is_never_rolled_back_and_humans_are_told_once():
    memory: dict[str, object] = {}
    failed = _state("d43", DEPLOY + 200, "rollback_paused", image="api:1", previous="api:2")
    (tell,) = _judge(DEPLOY + 400, "error_rate", 0.5, 200, state=failed, memory=memory)
    assert isinstance(tell.action, Notify)
    assert tell.action.dedup_key == "rollback-failed:api:d43"
    assert tell.action.severity == "P1" and "needs a human" in tell.action.summary
    (again,) = _judge(DEPLOY + 415, "error_rate", 0.5, 215, state=failed, memory=memory)
    assert again.is_hold and "humans were told" in again.reason
    # a notice the bus did not send goes out on the next pass
    runbook.rollback().not_carried_out(memory, tell.action, failed=False)
    (retry,) = _judge(DEPLOY + 430, "error_rate", 0.5, 230, state=failed, memory=memory)
    assert isinstance(retry.action, Notify)
