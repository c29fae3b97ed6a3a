"""Combining votes: the largest wins, stabilisation windows, rate limits, bounds."""

from __future__ import annotations

import json

import policy_runbook
from policy_kit import Loop, one_sentence

from policies.base import Bounds
from policies.scaling import ScaleBehavior, combine_scale
from policies.types import Decision, Restart, Scale

BOUNDS = Bounds(2, 10, 60)
T0 = 1_000_000.0
FREE = ScaleBehavior(scale_down_window=0, max_scale_up=0, max_scale_down=0)


def _scale(policy: str, want: int, current: int, at: float = T0) -> Decision:
    return Decision(
        policy, "api", at, Scale("api", want, current), f"{policy} wants {want}", {}, want
    )


def _hold(policy: str, vote: int | None, at: float = T0) -> Decision:
    return Decision(policy, "api", at, None, f"{policy} holds", {}, vote)


def _replicas(d: Decision | None) -> int | None:
    return d.action.replicas if d is not None and isinstance(d.action, Scale) else None


def test_the_largest_vote_wins():
    d = combine_scale(
        "api",
        [_scale("a", 6, 4), _scale("b", 5, 4)],
        bounds=BOUNDS,
        current=4,
        now=T0,
        behavior=FREE,
    )
    assert _replicas(d) == 6
    assert d.policy == "a"
    assert d.inputs["votes"] == {"a": 6, "b": 5}


def test_a_hold_voting_for_the_current_count_blocks_scale_in():
    d = combine_scale(
        "api",
        [_scale("queue", 3, 4), _hold("latency", 4)],
        bounds=BOUNDS,
        current=4,
        now=T0,
        behavior=FREE,
    )
    assert d is not None
    assert d.is_hold
    assert d.reason.startswith("latency votes for 4")
    assert one_sentence(d.reason)


def test_scale_in_happens_when_every_rule_agrees():
    d = combine_scale(
        "api",
        [_scale("queue", 3, 4), _scale("latency", 3, 4), _hold("x", None)],
        bounds=BOUNDS,
        current=4,
        now=T0,
        behavior=FREE,
    )
    assert _replicas(d) == 3


def test_bounds_are_enforced_even_when_no_rule_votes():
    d = combine_scale("api", [], bounds=BOUNDS, current=14, now=T0)
    assert _replicas(d) == 10
    assert d.policy == "bounds"
    assert d.reason == "14 replicas is outside [2, 10]: scale to 10"


def test_nothing_to_decide_without_a_scale_request_or_a_replica_count():
    assert combine_scale("api", [_hold("a", 4)], bounds=BOUNDS, current=4, now=T0) is None
    assert combine_scale("api", [_hold("a", None)], bounds=BOUNDS, current=4, now=T0) is None
    assert combine_scale("api", [_scale("a", 6, 4)], bounds=BOUNDS, current=None, now=T0) is None
    other = Decision("r", "api", T0, Restart("api"), "restart")
    assert combine_scale("api", [other], bounds=BOUNDS, current=4, now=T0) is None


def test_results_are_clamped_to_bounds():
    assert (
        _replicas(
            combine_scale(
                "api", [_scale("a", 15, 8)], bounds=BOUNDS, current=8, now=T0, behavior=FREE
            )
        )
        == 10
    )
    assert (
        _replicas(
            combine_scale(
                "api", [_scale("a", 0, 3)], bounds=BOUNDS, current=3, now=T0, behavior=FREE
            )
        )
        == 2
    )


def test_a_target_outside_its_bounds_is_brought_back_even_without_a_request():
    d = combine_scale("api", [_hold("a", 12)], bounds=BOUNDS, current=12, now=T0)
    assert _replicas(d) == 10
    d = combine_scale("api", [_hold("a", 1)], bounds=BOUNDS, current=1, now=T0)
    assert _replicas(d) == 2


def test_scale_down_waits_for_the_highest_vote_of_the_window_to_fall():
    memory: dict[str, object] = {}
    how = ScaleBehavior(scale_down_window=300, max_scale_down=0)
    for i in range(20):  # 5 minutes of votes for 6
        combine_scale(
            "api",
            [_hold("a", 6, T0 + 15 * i)],
            bounds=BOUNDS,
            current=6,
            now=T0 + 15 * i,
            memory=memory,
            behavior=how,
        )
    start = T0 + 300
    outcomes = []
    for i in range(25):
        now = start + 15 * i
        d = combine_scale(
            "api",
            [_scale("a", 5, 6, now)],
            bounds=BOUNDS,
            current=6,
            now=now,
            memory=memory,
            behavior=how,
        )
        outcomes.append((now - start, _replicas(d)))
    first = next(t for t, r in outcomes if r == 5)
    assert first == 300  # the vote for 6 stood until the vote for 5 replaced it at start
    assert all(r is None for t, r in outcomes if t < first)
    held = combine_scale(
        "api",
        [_scale("a", 5, 6, start)],
        bounds=BOUNDS,
        current=6,
        now=start,
        memory={"votes": [[start - 10, 6]]},
        behavior=how,
    )
    assert held is not None and held.is_hold
    assert "highest vote of the last 300 s" in held.reason


def test_a_steady_vote_leaves_the_memory_unchanged():
    memory: dict[str, object] = {}
    snapshots = []
    for i in range(40):
        combine_scale(
            "api",
            [_hold("a", 4, T0 + 15 * i)],
            bounds=BOUNDS,
            current=4,
            now=T0 + 15 * i,
            memory=memory,
        )
        snapshots.append(json.dumps(memory, sort_keys=True))
    assert len(set(snapshots)) == 1  # nothing for the engine to persist after the first pass
    assert memory["votes"] == [[T0, 4]]


def test_scale_up_is_immediate_by_default():
    memory: dict[str, object] = {"votes": [[T0 - 15 * i, 4] for i in range(1, 20)]}
    d = combine_scale("api", [_scale("a", 6, 4)], bounds=BOUNDS, current=4, now=T0, memory=memory)
    assert _replicas(d) == 6


def test_a_scale_up_window_takes_the_lowest_vote():
    how = ScaleBehavior(scale_up_window=60, max_scale_up=0)
    memory: dict[str, object] = {"votes": [[T0 - 45, 4], [T0 - 30, 7]]}
    d = combine_scale(
        "api", [_scale("a", 8, 4)], bounds=BOUNDS, current=4, now=T0, memory=memory, behavior=how
    )
    assert d is not None and d.is_hold  # lowest vote of the last 60 s is 4
    memory = {"votes": [[T0 - 45, 6], [T0 - 30, 7]]}
    d = combine_scale(
        "api", [_scale("a", 8, 4)], bounds=BOUNDS, current=4, now=T0, memory=memory, behavior=how
    )
    assert _replicas(d) == 6


def test_max_scale_up_per_period_limits_a_burst():
    how = ScaleBehavior(max_scale_up=4, scale_up_period=60)
    memory: dict[str, object] = {}
    current, seen = 2, []
    for i in range(6):
        now = T0 + 15 * i
        d = combine_scale(
            "api",
            [_scale("a", 10, current, now)],
            bounds=BOUNDS,
            current=current,
            now=now,
            memory=memory,
            behavior=how,
        )
        current = _replicas(d) or current
        seen.append(current)
        memory = json.loads(json.dumps(memory))  # persisted between ticks
    assert seen == [6, 6, 6, 6, 10, 10]


def test_max_scale_down_per_period_steps_down_gradually():
    how = ScaleBehavior(scale_down_window=0, max_scale_down=1, scale_down_period=60)
    memory: dict[str, object] = {}
    current, seen = 8, []
    for i in range(9):
        now = T0 + 15 * i
        d = combine_scale(
            "api",
            [_scale("a", 2, current, now)],
            bounds=BOUNDS,
            current=current,
            now=now,
            memory=memory,
            behavior=how,
        )
        current = _replicas(d) or current
        seen.append(current)
    assert seen == [7, 7, 7, 7, 6, 6, 6, 6, 5]


def test_a_vote_hovering_at_a_threshold_does_not_flap():
    memory: dict[str, object] = {}
    current, history = 4, []
    for i in range(40):
        now = T0 + 15 * i
        want = 6 if i % 2 == 0 else 4
        d = combine_scale(
            "api",
            [_scale("a", want, current, now)],
            bounds=BOUNDS,
            current=current,
            now=now,
            memory=memory,
        )
        current = _replicas(d) or current
        history.append(current)
    assert history == [6] * 40


def test_votes_from_the_future_do_not_pin_the_window_after_a_clock_step_back():
    memory: dict[str, object] = {"votes": [[T0 + 3600, 9]]}
    how = ScaleBehavior(scale_down_window=300, max_scale_up=0, max_scale_down=0)
    kw = {"bounds": BOUNDS, "current": 4, "memory": memory, "behavior": how}
    d = combine_scale("api", [_scale("a", 3, 4)], now=T0, **kw)
    # the vote of 9 "from the future" does not hold it up: the window starts afresh, with
    # the current count, and the scale-in to 3 waits it out
    assert d is None or d.action is None
    assert memory["votes"] == [[T0, 4], [T0, 3]]
    d = combine_scale("api", [_scale("a", 3, 4)], now=T0 + 315, **kw)
    assert _replicas(d) == 3


def test_a_first_vote_opens_the_window_with_the_current_count_as_the_hpa_does():
    # a start with no saved memory, a newly discovered target: one quiet sample must not
    # scale in at once; the 300 s scale-down window holds the current count first
    memory: dict[str, object] = {}
    how = ScaleBehavior(scale_down_window=300, max_scale_up=0, max_scale_down=0)
    kw = {"bounds": BOUNDS, "current": 8, "memory": memory, "behavior": how}
    held = combine_scale("api", [_scale("a", 3, 8)], now=T0, **kw)
    assert held is not None and held.action is None
    assert "held at 8 by the highest vote of the last 300 s" in held.reason
    assert _replicas(combine_scale("api", [_scale("a", 3, 8)], now=T0 + 290, **kw)) is None
    assert _replicas(combine_scale("api", [_scale("a", 3, 8)], now=T0 + 301, **kw)) == 3


def test_a_queue_hovering_at_its_thresholds_never_flaps():
    loop = Loop([policy_runbook.queue(), policy_runbook.latency()], replicas=4)
    for i in range(200):  # 50 minutes at 15 s: the queue hovers around 5, then around 1
        q = (5.2 if i % 2 else 4.8) if i < 100 else (1.1 if i % 2 else 0.9)
        loop.tick(T0 + 15 * i, {"queue_length": q, "p95_latency_ms": 120.0})
    path = [d.action.replicas for _, d in loop.actions]
    assert path == sorted(path)  # only ever up: neither band edge makes it flap
    assert path[-1] == 10
