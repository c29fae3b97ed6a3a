"""Action bus invariants over random action sequences (Hypothesis)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.bus import ActionBus
from autoscaler.config import BusSettings
from policies.types import Action, Notify, Restart, Rollback, Scale, TripBreaker
from remediation.base import ExecutorError, Outcome
from remediation.recording import RecordingExecutor

actions = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=120),  # seconds since the previous batch
        st.lists(
            st.one_of(
                st.builds(
                    Scale,
                    target=st.sampled_from(["a", "b"]),
                    replicas=st.integers(1, 10),
                    current=st.integers(1, 10),
                ),
                st.builds(Restart, target=st.sampled_from(["a", "b"]), attempt=st.integers(1, 3)),
            ),
            max_size=4,
        ),
    ),
    max_size=30,
)


def run(bus: ActionBus, batches: Sequence[tuple[float, list[Action]]]) -> list[tuple[float, str]]:
    async def go() -> list[tuple[float, str]]:
        now, out = 1000.0, []
        for dt, batch in batches:
            now += dt
            for o in await bus.submit(batch, now):
                out.append((now, o.status))
        return out

    return asyncio.run(go())


def make_bus(
    *,
    cooldown: float = 60,
    rate: int = 5,
    dry: bool = False,
    cooldowns: dict[str, float] | None = None,
) -> tuple[ActionBus, RecordingExecutor]:
    rec = RecordingExecutor("rec")
    settings = BusSettings(
        cooldown=cooldown, cooldowns=cooldowns or {}, rate_limit=rate, dedupe_window=30
    )
    bus = ActionBus(
        settings=settings,
        executors={"rec": rec},
        route=lambda a: ["rec"],
        dry_run=dry,
    )
    return bus, rec


@settings(max_examples=60, deadline=None)
@given(actions)
def test_cooldowns_and_rate_limit_hold_for_any_sequence(batches: list[Any]) -> None:
    bus, rec = make_bus(cooldowns={"restart": 45})
    executed: dict[str, list[float]] = {}
    times: list[float] = []

    async def execute(action: Action) -> str:
        executed.setdefault(f"{action.target}:{action.cooldown_kind}", []).append(now[0])
        times.append(now[0])
        return "ok"

    rec.execute = execute  # type: ignore[method-assign]
    now = [0.0]

    async def go() -> None:
        t = 1000.0
        for dt, batch in batches:
            t += dt
            now[0] = t
            await bus.submit(batch, t)

    asyncio.run(go())
    for key, stamps in executed.items():
        gap = 45 if key.endswith(":restart") else 60
        assert all(b - a >= gap for a, b in pairwise(stamps))
    for i, t in enumerate(times):
        assert sum(1 for u in times[: i + 1] if u > t - 60) <= 5


@settings(max_examples=40, deadline=None)
@given(actions)
def test_dry_run_gates_exactly_like_a_live_run(batches: list[Any]) -> None:
    live, _ = make_bus()
    dry, rec = make_bus(dry=True)
    live_statuses = run(live, batches)
    dry_statuses = run(dry, batches)
    assert [(t, "dry-run" if s == "done" else s) for t, s in live_statuses] == dry_statuses
    assert rec.calls == []


def test_notify_fans_out_to_every_notifier_and_breakers_need_a_publisher() -> None:
    a, b = RecordingExecutor("slack"), RecordingExecutor("pd")
    bus = ActionBus(
        settings=BusSettings(notify=("slack", "pd")),
        executors={"slack": a, "pd": b},
        route=lambda x: [],
    )
    outcomes = asyncio.run(
        bus.submit(
            [
                Notify(target="api", severity="P1", summary="restarts exhausted", dedup_key="k"),
                TripBreaker(target="vector-db", state="open"),
            ],
            0.0,
        )
    )
    assert [(o.executor, o.status) for o in outcomes] == [
        ("slack", "done"),
        ("pd", "done"),
        ("", "skipped-no-executor"),
    ]
    assert len(a.calls) == len(b.calls) == 1


class _Down(RecordingExecutor):
    """A notifier whose API refuses every call (a permanent error: no retries)."""

    down = True

    async def execute(self, action: Action) -> str:
        self.calls.append(action)
        if self.down:
            raise ExecutorError("401 unauthorized")
        return "sent"


def test_a_notice_that_reached_one_notifier_is_not_sent_to_all_again() -> None:
    slack, pd = RecordingExecutor("slack"), _Down("pd")
    bus = ActionBus(
        settings=BusSettings(notify=("slack", "pd"), dedupe_window=600),
        executors={"slack": slack, "pd": pd},
        route=lambda x: [],
    )
    page = Notify(target="api", severity="P1", summary="restarts exhausted", dedup_key="k")
    statuses = [
        [(o.executor, o.status) for o in asyncio.run(bus.submit([page], now))]
        for now in (0.0, 15.0, 30.0)
    ]
    assert statuses[0] == [("slack", "done"), ("pd", "failed")]
    assert statuses[1] == statuses[2] == [("", "skipped-cooldown")]
    assert len(slack.calls) == 1  # one message per alert, not one per pass


def test_an_action_that_failed_everywhere_is_tried_again_next_pass() -> None:
    pd = _Down("pd")
    bus = ActionBus(
        settings=BusSettings(notify=("pd",), dedupe_window=600),
        executors={"pd": pd},
        route=lambda x: [],
    )
    page = Notify(target="api", severity="P1", summary="restarts exhausted", dedup_key="k")
    first = asyncio.run(bus.submit([page], 0.0))
    pd.down = False
    second = asyncio.run(bus.submit([page], 15.0))
    assert [o.status for o in first + second] == ["failed", "done"]


def test_actions_held_by_an_open_breaker_take_no_rate_limit_slot_from_healthy_executors() -> None:
    """Fly is down (its breaker open) and its targets ask again every pass; swarm's target
    must still be scaled: the rate limit counts executed actions, and none reached Fly."""
    fly, swarm = _Down("fly"), RecordingExecutor("swarm")
    bus = ActionBus(
        settings=BusSettings(rate_limit=3, cooldown=0, dedupe_window=0),
        executors={"fly": fly, "swarm": swarm},
        route=lambda a: ["swarm" if a.target == "web" else "fly"],
    )
    for _ in range(5):  # earlier failures opened it
        bus.breakers["fly"].record_failure(0.0)
    held = [Scale(t, replicas=3, current=2) for t in ("a", "b", "c")]
    outcomes = asyncio.run(bus.submit([*held, Scale("web", replicas=3, current=2)], 1.0))
    assert [o.status for o in outcomes] == ["breaker-open"] * 3 + ["done"]
    assert fly.calls == [] and len(swarm.calls) == 1
    (again,) = asyncio.run(bus.submit([Scale("web", replicas=4, current=3)], 16.0))
    assert again.status == "done"
    # a dry run (on a state file a live run left a breaker open in) still calls nothing
    bus.dry_run = True
    assert [o.status for o in asyncio.run(bus.submit(held[:1], 17.0))] == ["dry-run"]


def test_duplicate_action_within_the_dedupe_window_is_skipped() -> None:
    bus, rec = make_bus(cooldown=0)
    action = Restart(target="a", attempt=1)
    first = asyncio.run(bus.submit([action], 0.0))
    second = asyncio.run(bus.submit([action], 10.0))
    third = asyncio.run(bus.submit([action], 31.0))
    assert [o.status for o in first + second + third] == ["done", "skipped-duplicate", "done"]
    assert len(rec.calls) == 2


def test_persisted_state_restores_cooldowns_in_a_new_bus() -> None:
    bus, _ = make_bus()
    asyncio.run(bus.submit([Scale(target="a", replicas=4, current=2)], 0.0))
    state = bus.drain_state(0.0)
    fresh, rec = make_bus()
    fresh.restore({k: v for k, v in state.items() if v is not None})
    out = asyncio.run(fresh.submit([Scale(target="a", replicas=5, current=2)], 30.0))
    assert [o.status for o in out] == ["skipped-cooldown"] and rec.calls == []
    assert fresh.drain_state(61.0)["cooldown:a:scale_up"] is None  # expired keys are pruned


def test_a_resolve_is_not_held_by_its_triggers_cooldown_nor_the_next_trigger_by_it() -> None:
    """A breaker that opens and closes within the notify cooldown: the incident is
    resolved, and opened again when the breaker opens again."""
    pd = RecordingExecutor("pd")
    bus = ActionBus(
        settings=BusSettings(notify=("pd",), cooldown=300, dedupe_window=600),
        executors={"pd": pd},
        route=lambda x: [],
    )

    def notice(state: str) -> Notify:
        return Notify("db", summary=f"breaker {state}", dedup_key="breaker:db",
                      resolve=state == "closed")  # fmt: skip

    statuses = [
        (o.status for o in asyncio.run(bus.submit([notice(state)], now)))
        for now, state in [(0, "open"), (40, "half_open"), (60, "closed"), (90, "open")]
    ]
    assert [list(s) for s in statuses] == [
        ["done"],
        ["skipped-cooldown"],  # the same incident, still open: no second page
        ["done"],  # the resolve
        ["done"],  # open again: a new page
    ]
    other = Notify("db", summary="restarts exhausted", dedup_key="restart:db")
    assert [o.status for o in asyncio.run(bus.submit([other], 100))] == ["done"]


def test_breaker_state_is_saved_once_and_again_only_when_it_changes() -> None:
    bus, _ = make_bus()
    assert bus.drain_state(0.0)["breaker:rec"]["state"] == "closed"  # the first drain
    assert "breaker:rec" not in bus.drain_state(15.0)  # nothing changed: nothing to write
    for _ in range(bus.breakers["rec"].failure_threshold):
        bus.breakers["rec"].record_failure(20.0)
    assert bus.drain_state(30.0)["breaker:rec"]["state"] == "open"
    assert "breaker:rec" not in bus.drain_state(45.0)


def test_permanent_failures_do_not_open_the_executors_breaker() -> None:
    """A bad request for one target says nothing about the executor: other targets keep
    being served. Temporary failures (the API down) do open it."""
    pd = _Down("pd")
    bus = ActionBus(
        settings=BusSettings(notify=("pd",), cooldown=0, dedupe_window=0),
        executors={"pd": pd},
        route=lambda x: [],
    )
    for now in range(10):
        asyncio.run(bus.submit([Notify("api", summary=f"n{now}")], float(now)))
    assert bus.breakers["pd"].state == "closed" and len(pd.calls) == 10

    async def unreachable(action: Action) -> str:
        raise ExecutorError("connection refused", temporary=True, retried=True)

    pd.execute = unreachable  # type: ignore[method-assign]
    for now in range(10, 20):
        asyncio.run(bus.submit([Notify("api", summary=f"n{now}")], float(now)))
    assert bus.breakers["pd"].state == "open"


def test_an_action_held_by_a_retry_after_takes_no_rate_limit_slot() -> None:
    """A rule asks again on every pass for an action held by a Retry-After: those passes
    must not use up bus.rate_limit and starve the actions of other targets."""
    slow, fast = RecordingExecutor("slow"), RecordingExecutor("fast")

    async def execute(action: Action) -> str:
        raise ExecutorError("HTTP 429", temporary=True, delay=600.0, retried=True)

    slow.execute = execute  # type: ignore[method-assign]
    bus = ActionBus(
        settings=BusSettings(rate_limit=2, cooldown=0),
        executors={"slow": slow, "fast": fast},
        route=lambda a: ["slow" if a.target == "a" else "fast"],
    )

    def submit(now: float, *batch: Action) -> list[str]:
        return [o.status for o in asyncio.run(bus.submit(list(batch), now))]

    assert submit(0.0, Scale("a", replicas=2, current=1)) == ["failed"]
    for now in (15.0, 30.0, 45.0):
        assert submit(now, Scale("a", replicas=2, current=1)) == ["skipped-retry-after"]
    assert submit(50.0, Scale("b", replicas=2, current=1)) == ["done"]
    assert [a.target for a in fast.calls] == ["b"]


def test_a_retry_after_of_years_is_waited_out_for_an_hour_at_most() -> None:
    hook = RecordingExecutor("hook")
    answer = [ExecutorError("HTTP 503", temporary=True, delay=1e300, retried=True)]
    called: list[float] = []

    async def execute(action: Action) -> str:
        called.append(now)
        if answer:
            raise answer.pop()
        return "ok"

    hook.execute = execute  # type: ignore[method-assign]
    bus = ActionBus(
        settings=BusSettings(cooldown=0), executors={"hook": hook}, route=lambda a: ["hook"]
    )
    statuses = []
    for now in (0.0, 3599.0, 3600.0):
        (o,) = asyncio.run(bus.submit([Scale("api", replicas=2, current=1)], now))
        statuses.append(o.status)
    assert statuses == ["failed", "skipped-retry-after", "done"] and called == [0.0, 3600.0]


def test_a_clock_set_back_holds_neither_the_rate_limit_nor_a_cooldown_for_the_step() -> None:
    """An NTP step back of an hour: the actions of the last minute and the cooldowns were
    dated an hour ahead, and would have held the rate limit full and every cooldown an hour
    longer than configured."""
    bus, rec = make_bus(cooldown=300, rate=2)

    def submit(now: float, *batch: Action) -> list[str]:
        return [o.status for o in asyncio.run(bus.submit(list(batch), now))]

    later = 10_000.0
    assert submit(later, Scale("a", 2, 1), Scale("b", 2, 1)) == ["done", "done"]
    back = later - 3600  # the clock is set back an hour
    assert submit(back, Scale("c", 2, 1)) == ["skipped-rate-limit"]  # the same minute
    assert submit(back + 61, Scale("c", 2, 1)) == ["done"]  # not an hour later
    assert submit(back + 100, Scale("a", 3, 2)) == ["skipped-cooldown"]
    # its 5 minutes from the first pass that asked after the step, not an hour and 5 minutes
    assert submit(back + 401, Scale("a", 3, 2)) == ["done"]
    assert [a.target for a in rec.calls] == ["a", "b", "c", "a"]

    bus, rec = make_bus(cooldown=0)  # the dedupe window (30 s) likewise
    assert submit(later, Scale("a", 2, 1)) == ["done"]
    assert submit(back, Scale("a", 2, 1)) == ["skipped-duplicate"]
    assert submit(back + 31, Scale("a", 2, 1)) == ["done"]


def test_the_bus_waits_out_a_retry_after_and_does_not_retry_what_was_retried() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    calls: list[float] = []
    answer = [ExecutorError("HTTP 429", temporary=True, delay=30.0, retried=True)]
    slack = RecordingExecutor("slack")

    async def execute(action: Action) -> str:
        calls.append(now[0])
        if answer:
            raise answer.pop()
        return "sent"

    slack.execute = execute  # type: ignore[method-assign]
    bus = ActionBus(
        settings=BusSettings(notify=("slack",)),
        executors={"slack": slack},
        route=lambda x: [],
        sleep=sleep,
    )
    page = Notify("api", summary="p95 over SLO")
    now = [0.0]
    statuses = []
    for t in (0.0, 15.0, 31.0):
        now[0] = t
        statuses += [(o.status, o.detail) for o in asyncio.run(bus.submit([page], t))]
    assert calls == [0.0, 31.0] and sleeps == []  # no retry at 1-3 s, no call at 15 s
    assert [s for s, _ in statuses] == ["failed", "skipped-retry-after", "done"]
    assert "Retry-After" in statuses[1][1]

    answer.append(ExecutorError("HTTP 503", temporary=True, retried=True))
    asyncio.run(bus.submit([Notify("api", summary="other")], 40.0))
    assert len(calls) == 3 and sleeps == []  # the notifier retried: the bus does not again


class _Stuck(RecordingExecutor):
    """Works in a thread, as the swarm executor does (docker-py in ``asyncio.to_thread``),
    and each call blocks until ``release`` is set: a timeout cannot stop it."""

    cancellable = False

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.finished: list[Action] = []

    async def execute(self, action: Action) -> str:
        self.calls.append(action)

        def work() -> str:
            self.release.wait(timeout=60)  # bounded: a broken test must not hang the run
            self.finished.append(action)
            return "done late"

        return await asyncio.to_thread(work)


async def _no_sleep(seconds: float) -> None:
    pass


@pytest.mark.parametrize("action", [Restart("api", attempt=1), Rollback("api", deploy_id="d1")])
def test_a_timed_out_restart_or_rollback_is_never_started_again_while_it_may_still_run(
    action: Action,
) -> None:
    swarm = _Stuck("swarm")
    bus = ActionBus(
        settings=BusSettings(executor_timeout=0.05, retries=2, cooldown=0, dedupe_window=0),
        executors={"swarm": swarm},
        route=lambda a: ["swarm"],
        sleep=_no_sleep,
    )

    async def go() -> list[tuple[str, str]]:
        out = []
        try:
            (first,) = await bus.submit([action], 0.0)
            out.append((first.status, first.detail))
            assert len(swarm.calls) == 1  # not retried: the first may still be carried out
            (second,) = await bus.submit([action], 15.0)  # the next pass asks again
            out.append((second.status, second.detail))
            assert len(swarm.calls) == 1
            # a scale of the same target is idempotent: it is not held back
            bus.executors["swarm"] = RecordingExecutor("swarm")
            (scale,) = await bus.submit([Scale("api", replicas=3, current=2)], 16.0)
            out.append((scale.status, scale.detail))
            bus.executors["swarm"] = swarm
        finally:
            swarm.release.set()
        await asyncio.wait(set(bus.abandoned[("swarm", "api")]))
        assert bus.abandoned == {} and swarm.finished == [action]
        (third,) = await bus.submit([action], 30.0)  # the earlier call is over: go ahead
        out.append((third.status, third.detail))
        return out

    first, second, scale, third = asyncio.run(go())
    assert first[0] == "failed" and first[1].startswith("temporary: timed out after 0.05 s")
    assert f"not retried, the {action.kind} may still be carried out" in first[1]
    assert second[0] == "skipped-running" and "timed out and is still running" in second[1]
    assert scale[0] == "done"
    assert third == ("done", "done late") and len(swarm.calls) == 2


def test_a_timed_out_scale_is_retried() -> None:
    swarm = _Stuck("swarm")
    bus = ActionBus(
        settings=BusSettings(executor_timeout=0.05, retries=2),
        executors={"swarm": swarm},
        route=lambda a: ["swarm"],
        sleep=_no_sleep,
    )

    async def go() -> str:
        try:
            (outcome,) = await bus.submit([Scale("api", replicas=3, current=2)], 0.0)
        finally:
            swarm.release.set()
        await asyncio.wait(set(bus.abandoned[("swarm", "api")]))
        return outcome.status

    assert asyncio.run(go()) == "failed"
    assert len(swarm.calls) == 3 and len(swarm.finished) == 3  # absolute replicas: harmless


def test_a_timed_out_restart_keeps_its_cooldown_and_is_reported_at_shutdown() -> None:
    """It may well have restarted the target: the next pass must not restart it again
    within the cooldown, and a shutdown while it runs names it (to be journalled)."""
    swarm = _Stuck("swarm")
    bus = ActionBus(
        settings=BusSettings(executor_timeout=0.05, cooldowns={"restart": 300}),
        executors={"swarm": swarm},
        route=lambda a: ["swarm"],
        sleep=_no_sleep,
    )
    restart = Restart("api", attempt=1)

    async def go() -> tuple[Outcome, Outcome, list[tuple[Action, str]], list[tuple[Action, str]]]:
        try:
            (first,) = await bus.submit([restart], 0.0)
            (again,) = await bus.submit([Restart("api", attempt=2)], 15.0)
            running = await bus.wait_abandoned(0.05)
        finally:
            swarm.release.set()
        return first, again, running, await bus.wait_abandoned(10.0)

    first, again, running, after = asyncio.run(go())
    assert first.status == "failed" and first.uncertain
    assert again.status == "skipped-cooldown"
    assert "cooldown:api:restart" in bus.drain_state(15.0)
    assert running == [(restart, "swarm")] and after == []
    assert swarm.finished == [restart]


class _Hanging(RecordingExecutor):
    """Awaits asyncio I/O only (an HTTP call that never answers): cancellable."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.cancelled = 0

    async def execute(self, action: Action) -> str:
        self.calls.append(action)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "never"


def test_a_timed_out_call_of_a_cancellable_executor_is_cancelled_before_the_retry() -> None:
    """A scale POSTed to a webhook that hangs: cancelled at the timeout, so the retry is the
    only post in flight, not a second one beside it."""
    hook = _Hanging("hook")
    bus = ActionBus(
        settings=BusSettings(executor_timeout=0.05, retries=1),
        executors={"hook": hook},
        route=lambda a: ["hook"],
        sleep=_no_sleep,
    )

    async def go() -> tuple[Outcome, int, int]:
        (outcome,) = await bus.submit([Scale("api", replicas=3, current=2)], 0.0)
        await asyncio.sleep(0)  # a cancellation would have been delivered by now
        return outcome, hook.cancelled, len(bus.abandoned)

    outcome, cancelled, abandoned = asyncio.run(go())
    assert outcome.status == "failed" and not outcome.uncertain
    assert outcome.detail == "temporary: timed out after 0.05 s"
    assert len(hook.calls) == 2 and cancelled == 2 and abandoned == 0


def test_a_notice_that_timed_out_is_cancelled_and_not_retried_within_the_pass() -> None:
    """A notifier retries within its call; the bus cancels it at the timeout and does not
    retry it again (a second post beside one that may have arrived, another timeout)."""
    slack = _Hanging("slack")
    bus = ActionBus(
        settings=BusSettings(executor_timeout=0.05, retries=1, notify=("slack",)),
        executors={"slack": slack},
        route=lambda a: [],
        sleep=_no_sleep,
    )

    async def go() -> tuple[Outcome, int, int]:
        (outcome,) = await bus.submit([Notify("api", "P2", "queue long")], 0.0)
        await asyncio.sleep(0)  # a cancellation would have been delivered by now
        return outcome, slack.cancelled, len(bus.abandoned)

    outcome, cancelled, abandoned = asyncio.run(go())
    assert (outcome.status, outcome.detail) == ("failed", "temporary: timed out after 0.05 s")
    assert len(slack.calls) == 1 and cancelled == 1 and abandoned == 0


def test_restarts_have_no_cooldown_unless_one_is_set() -> None:
    """The restart rule paces restarts (backoff 2, 4, 8 s, then escalation): the default
    5-minute cooldown skipped its second and third attempts, which it counted, so it
    escalated "3 restarts did not help" after one restart."""
    assert BusSettings().cooldown_of("restart") == 0.0
    assert BusSettings().cooldown_of("scale_up") == 300.0
    assert BusSettings(cooldown=60).cooldown_of("rollback") == 60.0
    assert BusSettings(cooldowns={"restart": 30}).cooldown_of("restart") == 30.0
    bus, rec = make_bus(cooldown=300)
    got = run(bus, [(0.0, [Restart("a", 1)]), (2.0, [Restart("a", 2)])])
    assert [status for _, status in got] == ["done", "done"]
    assert [a.attempt for a in rec.calls if isinstance(a, Restart)] == [1, 2]


def test_a_notice_goes_out_again_once_its_cooldown_ends_however_long_the_dedupe_window() -> None:
    """``bus.cooldowns.notify`` is how often the same notice may go out (Alertmanager's
    repeat_interval): a dedupe window longer than it must not hold the notice longer. A
    restart escalation of the same incident (its dedup key) a minute later goes out."""
    pd = RecordingExecutor("pd")
    bus = ActionBus(
        settings=BusSettings(notify=("pd",), cooldowns={"notify": 60}, dedupe_window=300),
        executors={"pd": pd},
        route=lambda x: [],
    )
    page = Notify("api", "P1", "3 restarts did not help", dedup_key="restart-escalation:api")
    statuses = [
        [o.status for o in asyncio.run(bus.submit([page], now))] for now in (0.0, 30.0, 61.0)
    ]
    assert statuses == [["done"], ["skipped-cooldown"], ["done"]]
    assert len(pd.calls) == 2


def test_a_resolve_that_failed_everywhere_does_not_let_its_trigger_be_sent_again() -> None:
    """Slack is down when the incident resolves: humans were not told, so for them it is
    still open, and the same trigger asked for again within its cooldown must not post a
    second message. The resolve, asked for again, goes out, and then a new trigger does."""
    slack = _Down("slack")
    bus = ActionBus(
        settings=BusSettings(notify=("slack",), cooldown=300, dedupe_window=300),
        executors={"slack": slack},
        route=lambda x: [],
    )

    def notice(resolve: bool) -> Notify:
        return Notify("db", summary=f"resolve={resolve}", dedup_key="degradation:db",
                      resolve=resolve)  # fmt: skip

    statuses = []
    for now, resolve, down in [
        (0, False, False), (60, True, True), (90, False, False), (120, True, False),
        (150, False, False),
    ]:  # fmt: skip
        slack.down = down
        statuses += [o.status for o in asyncio.run(bus.submit([notice(resolve)], now))]
    assert statuses == ["done", "failed", "skipped-cooldown", "done", "done"]
    assert [a.resolve for a in slack.calls if isinstance(a, Notify)] == [
        False, True, True, False
    ]  # fmt: skip
