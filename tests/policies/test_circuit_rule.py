"""Circuit-breaker rule: closed -> open -> half-open -> closed, TripBreaker on transitions."""

from __future__ import annotations

import json

import policy_runbook as runbook
from policy_kit import ctx, journalable, one_sentence

from policies.circuit import CircuitPolicy, CircuitSpec
from policies.types import TripBreaker

T0 = 1_000_000.0


def _run(policy, samples, *, step=10.0, published=None):
    """``samples``: health values (None = no fresh sample) at T0, T0 + step, ...

    Every TripBreaker is published, as the engine does when the bus carries it out;
    ``published`` (a set of indices) restricts that to those passes."""
    memory: dict[str, object] = {}
    breakers: dict[str, str] = {}
    out = []
    for i, v in enumerate(samples):
        now = T0 + step * i
        values = {} if v is None else {"vector_store_up": v}
        (d,) = policy.evaluate(ctx(now, values=values, memory=memory, breakers=dict(breakers)))
        assert one_sentence(d.reason), d.reason
        assert journalable(d)
        if isinstance(d.action, TripBreaker) and (published is None or i in published):
            breakers[d.action.target] = d.action.state
        memory = json.loads(json.dumps(memory))
        out.append(d)
    return out


def _moves(decisions):
    return [
        (i, d.action.state) for i, d in enumerate(decisions) if isinstance(d.action, TripBreaker)
    ]


def test_runbook_breaker_opens_after_five_consecutive_failures():
    run = _run(runbook.vector_store(), [0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    assert _moves(run) == [(9, "open")]
    action = run[9].action
    assert action == TripBreaker(target="vector_store", state="open")
    assert "makes 5 failures in a row" in run[9].reason


def test_open_breaker_goes_half_open_after_the_reset_timeout_and_closes_after_k_trials():
    samples = [0] * 5 + [1] * 12
    run = _run(runbook.vector_store(), samples)
    # opened at index 4 (t=40); 30 s later (t=70, index 7) half-open; then 3 good samples
    assert _moves(run) == [(4, "open"), (7, "half_open"), (10, "closed")]


def test_a_failed_half_open_trial_reopens_the_breaker():
    samples = [0] * 5 + [1, 1, 1, 1, 0] + [1] * 8
    run = _run(runbook.vector_store(), samples)
    assert _moves(run) == [
        (4, "open"),
        (7, "half_open"),
        (9, "open"),
        (12, "half_open"),
        (15, "closed"),
    ]


def test_a_state_that_was_not_published_is_sent_again_until_it_is():
    # the opening at index 4 is skipped by the bus (cooldown, a failing publisher); it is
    # sent again on the next passes until one is carried out (index 6)
    run = _run(runbook.vector_store(), [0] * 7 + [1], step=5.0, published={6, 7})
    assert _moves(run) == [(4, "open"), (5, "open"), (6, "open")]
    assert "is open but closed is published" in run[5].reason
    assert "stays open" in run[7].reason  # published: back to holding


def test_missing_samples_count_as_neither_success_nor_failure():
    run = _run(runbook.vector_store(), [0, 0, None, 0, None, 0, 0])
    assert _moves(run) == [(6, "open")]
    assert run[2].reason.startswith("stale: vector_store_up is missing")


def test_the_same_sample_is_counted_once():
    policy = runbook.vector_store()
    memory: dict[str, object] = {}
    for i in range(8):  # the source keeps serving the sample taken at T0
        c = ctx(T0 + 10 * i, values={"vector_store_up": 0.0}, memory=memory)
        c.observations = {"vector_store_up": type(c.observations["vector_store_up"])(0.0, T0)}
        (d,) = policy.evaluate(c)
        assert d.action is None
    assert memory["failures"] == 1


def test_an_error_ratio_signal_fails_above_its_threshold():
    spec = CircuitSpec(
        breaker="gpu",
        signal="vector_store_up",
        fail_below=float("-inf"),
        fail_above=0.2,
        failure_threshold=2,
    )
    run = _run(CircuitPolicy("gpu_breaker", spec), [0.1, 0.5, 0.6])
    assert _moves(run) == [(2, "open")]
    assert run[2].action.target == "gpu"


def test_a_clock_step_back_neither_holds_the_breaker_open_nor_ignores_samples():
    # an NTP step of an hour back: the open timeout and the last sample time lie ahead
    policy = runbook.vector_store()
    memory: dict[str, object] = {}
    breakers: dict[str, str] = {}

    def at(now, value):
        (d,) = policy.evaluate(
            ctx(now, values={"vector_store_up": value}, memory=memory, breakers=dict(breakers))
        )
        if isinstance(d.action, TripBreaker):
            breakers[d.action.target] = d.action.state
        return d

    for i in range(5):
        at(T0 + 10 * i, 0.0)
    assert breakers == {"vector_store": "open"}
    back = T0 + 40 - 3600
    assert at(back, 1.0).is_hold  # open: the 30 s start over
    assert at(back + 30, 1.0).action == TripBreaker("vector_store", "half_open")
    assert [at(back + 40 + 10 * i, 1.0).action for i in range(3)][-1] == TripBreaker(
        "vector_store", "closed"
    )
    # closed, a failing dependency opens it again: its samples count
    for i in range(5):
        d = at(back + 100 + 10 * i, 0.0)
    assert d.action == TripBreaker("vector_store", "open")
