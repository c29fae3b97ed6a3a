"""Restart with exponential backoff, at most three attempts in a window, then escalate."""

from __future__ import annotations

import json
from dataclasses import replace

import policy_runbook as runbook
import pytest
from policy_kit import ctx, journalable, one_sentence

from policies.restart import RestartPolicy, RestartSpec
from policies.types import Event, Notify, Restart, TargetState

T0 = 1_000_000.0


def _run(policy, times, *, failing=lambda t: True, events=lambda t: ()):
    memory: dict[str, object] = {}
    out = []
    for t in times:
        value = 3.0 if failing(t) else 0.0
        (d,) = policy.evaluate(
            ctx(t, values={"probe_failures": value}, memory=memory, events=events(t))
        )
        assert one_sentence(d.reason), d.reason
        assert journalable(d)
        memory = json.loads(json.dumps(memory))  # persisted between ticks
        out.append((t - T0, d))
    return out


def _kinds(run):
    return [(t, type(d.action).__name__ if d.action else None) for t, d in run]


def test_runbook_backoff_is_2_4_then_escalation_p1_after_three_attempts():
    run = _run(runbook.restart(), [T0 + s for s in range(0, 40)])
    acted = [(t, d.action) for t, d in run if d.action is not None]
    assert [(t, type(a).__name__) for t, a in acted] == [
        (0, "Restart"),
        (2, "Restart"),
        (6, "Restart"),
        (14, "Notify"),
    ]
    assert [a.attempt for _, a in acted[:3]] == [1, 2, 3]
    notify = acted[3][1]
    assert isinstance(notify, Notify)
    assert notify.severity == "P1"
    assert notify.dedup_key == "restart-escalation:api"
    # between and after: holds that say why
    assert "backing off for 1 s" in run[1][1].reason
    assert "restarts paused" in run[20][1].reason


def test_restarts_resume_once_the_oldest_attempt_leaves_the_window():
    times = [T0 + s for s in (0, 2, 6, 14, 599, 600, 601, 620)]
    kinds = _kinds(_run(runbook.restart(), times))
    assert kinds == [
        (0, "Restart"),
        (2, "Restart"),
        (6, "Restart"),
        (14, "Notify"),
        (599, None),
        (600, "Restart"),
        (601, None),
        (620, "Restart"),
    ]


def test_backoff_continues_doubling_up_to_the_last_value():
    spec = RestartSpec(backoff=(2, 4, 8, 16), max_attempts=10, window=600)
    run = _run(RestartPolicy("restart", spec), [T0 + s for s in range(0, 80)])
    starts = [t for t, d in run if isinstance(d.action, Restart)]
    assert starts == [0, 2, 6, 14, 30, 46, 62, 78]


def test_a_healthy_probe_resets_the_backoff_growth_but_not_the_attempt_window():
    spec = RestartSpec(backoff=(2, 4, 8, 16), max_attempts=3, window=600)
    times = [T0 + s for s in (0, 1, 2, 3, 4, 5, 6)]
    failing = {T0, T0 + 2, T0 + 4, T0 + 5, T0 + 6}.__contains__
    run = _run(RestartPolicy("restart", spec), times, failing=failing)
    assert _kinds(run) == [
        (0, "Restart"),
        (1, None),
        (2, "Restart"),
        (3, None),
        (4, "Restart"),
        (5, None),
        (6, "Notify"),
    ]
    restarts = [d.action for _, d in run if isinstance(d.action, Restart)]
    assert [a.attempt for a in restarts] == [1, 1, 1]
    # each failure's first restart is a new intent: the bus's dedupe (same key within
    # its window) skipped the second and third as duplicates of the first
    assert [a.seq for a in restarts] == [1, 2, 3]
    assert len({a.key for a in restarts}) == 3


def test_probe_below_the_threshold_is_healthy():
    (d,) = runbook.restart().evaluate(ctx(T0, values={"probe_failures": 2.0}))
    assert d.is_hold
    assert d.reason == "api is healthy"


@pytest.mark.parametrize(
    ("values", "stale"), [({}, ()), ({"probe_failures": 9.0}, ("probe_failures",))]
)
def test_a_stale_or_missing_probe_never_restarts(values, stale):
    (d,) = runbook.restart().evaluate(ctx(T0, values=values, stale=stale))
    assert d.is_hold
    assert d.reason.startswith("stale:")


def test_a_firing_alert_triggers_until_it_resolves():
    spec = RestartSpec(signal="", alerts=("ApiDown",), backoff=(2,), max_attempts=5)
    policy = RestartPolicy("restart", spec)

    def events(t):
        if t == T0:
            return [Event("ApiDown", "firing", "api", t, fingerprint="f1")]
        if t == T0 + 10:
            return [Event("ApiDown", "resolved", "api", t, fingerprint="f1")]
        return [Event("Other", "firing", "api", t), Event("ApiDown", "firing", "db", t)]

    kinds = _kinds(_run(policy, [T0 + s for s in (0, 3, 6, 10, 13)], events=events))
    assert kinds == [(0, "Restart"), (3, "Restart"), (6, "Restart"), (10, None), (13, None)]


def test_a_firing_alert_whose_resolve_was_lost_is_forgotten_when_none_is_firing():
    # the resolve never arrives (the service stopped before reading it); the Alertmanager
    # source's alerts_firing count says 0 from T0 + 10 on
    spec = RestartSpec(signal="", alerts=("ApiDown",), backoff=(2,), max_attempts=5)
    policy = RestartPolicy("restart", spec)
    memory: dict[str, object] = {}
    kinds = []
    for s in (0, 3, 6, 10, 13, 16):
        t = T0 + s
        fired = [Event("ApiDown", "firing", "api", t, fingerprint="f1")] if s == 0 else []
        values = {"alerts_firing": 1.0 if s < 10 else 0.0}
        (d,) = policy.evaluate(ctx(t, values=values, memory=memory, events=fired))
        memory = json.loads(json.dumps(memory))
        kinds.append((s, type(d.action).__name__ if d.action else None))
    assert kinds == [
        (0, "Restart"),
        (3, "Restart"),
        (6, "Restart"),
        (10, None),
        (13, None),
        (16, None),
    ]
    assert memory["firing"] == {}


def test_restart_specs_need_a_trigger():
    with pytest.raises(ValueError):
        RestartSpec(signal="", alerts=())


def test_no_restart_while_a_deploy_is_in_progress_or_paused_and_no_attempt_is_counted():
    # a rollout fails probes while it replaces the tasks; the executors would refuse a
    # restart (a failure counted as an attempt: three of them escalated "restarts did not
    # help" when none had run), and one during a paused update would resume it
    policy, memory = runbook.restart(), {}
    seen = []
    for s, update_state in [(0, "updating"), (15, "updating"), (30, "paused"), (45, "paused")]:
        state = TargetState("api", 2, 2, updated_at=T0, deploy_id="B", update_state=update_state)
        (d,) = policy.evaluate(
            ctx(T0 + s, values={"probe_failures": 6.0}, state=state, memory=memory)
        )
        assert one_sentence(d.reason) and journalable(d)
        seen.append((d.action, d.reason))
    assert [a for a, _ in seen] == [None] * 4
    assert seen[0][1] == (
        "probe_failures 6 >= 3 but a deploy is in progress (updating), not restarting"
    )
    assert "attempts" not in memory
    # once the rollout is over, a target still failing is restarted: attempt 1
    done = TargetState("api", 2, 2, updated_at=T0, deploy_id="B", update_state="completed")
    (d,) = policy.evaluate(ctx(T0 + 60, values={"probe_failures": 7.0}, state=done, memory=memory))
    assert isinstance(d.action, Restart) and d.action.attempt == 1


def test_a_restart_gets_its_own_rollout_before_the_next_attempt():
    # swarm shows our rolling restart as an update in progress: attempt 2 waits for it
    policy, memory = runbook.restart(), {}
    kinds = []
    for s, update_state in [(0, ""), (15, "updating"), (30, "updating"), (45, "completed")]:
        state = TargetState("api", 2, 2, updated_at=T0 - 3600, deploy_id="A")
        state = replace(state, update_state=update_state)
        (d,) = policy.evaluate(
            ctx(T0 + s, values={"probe_failures": 3.0 + s}, state=state, memory=memory)
        )
        kinds.append(d.action.attempt if isinstance(d.action, Restart) else None)
    assert kinds == [1, None, None, 2]


def test_a_clock_step_back_does_not_hold_restarts_back_for_as_long_as_the_step():
    # three attempts and the escalation, then an NTP step of an hour back: the attempts,
    # the backoff and the escalation lie ahead and must not count for the next hour
    policy, memory = runbook.restart(), {}

    def at(now):
        (d,) = policy.evaluate(ctx(now, values={"probe_failures": 3.0}, memory=memory))
        return d.action

    assert [type(at(T0 + s)).__name__ for s in (0, 2, 6, 14)] == [
        "Restart", "Restart", "Restart", "Notify"
    ]  # fmt: skip
    back = T0 + 20 - 3600
    assert isinstance(at(back), Restart)
    # still failing: the backoff goes on growing (16 s), three attempts, then escalation
    assert [type(at(back + s)).__name__ for s in (15, 16, 32, 48)] == [
        "NoneType", "Restart", "Restart", "Notify"
    ]  # fmt: skip


def test_a_restart_the_bus_skipped_is_asked_for_again_and_a_failed_one_counts():
    policy, memory = runbook.restart(), {}

    def at(s):
        (d,) = policy.evaluate(ctx(T0 + s, values={"probe_failures": 3.0}, memory=memory))
        return d.action

    first = at(0)
    assert isinstance(first, Restart) and first.attempt == 1
    policy.not_carried_out(memory, first, failed=False)  # a pause: no restart ran
    again = at(1)  # no backoff: nothing ran to take effect
    assert isinstance(again, Restart) and again.attempt == 1
    assert again.seq == first.seq + 1  # a new key: not taken for a duplicate
    policy.not_carried_out(memory, again, failed=True)  # the executor ran and failed
    assert at(2) is None  # backing off after a real attempt
    assert [a.attempt for a in (at(3), at(7))] == [2, 3]
    escalation = at(15)
    assert isinstance(escalation, Notify) and "3 restarts" in escalation.summary
