"""The platform's degradation level from breaker states."""

from __future__ import annotations

import pytest
from policy_kit import ctx, journalable, one_sentence

from policies.degradation import (
    DEFAULT_MAPPING,
    DegradationPolicy,
    DegradationSpec,
    degradation_level,
)
from policies.types import Notify


@pytest.mark.parametrize(
    ("states", "emergency_at", "level"),
    [
        ({}, 0, 1),
        ({"gpu": "closed", "vector_store": "closed"}, 2, 1),
        ({"gpu": "open"}, 2, 2),  # GPU degraded: CPU only
        ({"gpu": "half_open", "vector_store": "closed"}, 2, 2),  # not yet trusted
        ({"vector_store": "open"}, 2, 3),  # cached embeddings
        ({"gpu": "open", "vector_store": "open"}, 0, 3),
        ({"gpu": "open", "vector_store": "open"}, 2, 4),  # emergency
        ({"redis": "open"}, 1, 1),  # not in the mapping
    ],
)
def test_degradation_level_from_breaker_states(states, emergency_at, level):
    assert degradation_level(states, mapping=DEFAULT_MAPPING, emergency_at=emergency_at) == level


def test_the_mapping_is_configurable():
    assert degradation_level({"db": "open"}, mapping={"db": 4}) == 4
    assert degradation_level({"gpu": "open"}, mapping={"gpu": 3}) == 3


def test_the_degradation_policy_notifies_on_change_only():
    policy = DegradationPolicy("degradation", DegradationSpec())
    memory: dict[str, object] = {}
    seen = []
    for breakers in (
        {},
        {"gpu": "open"},
        {"gpu": "open"},
        {"gpu": "open", "vector_store": "open"},
        {"gpu": "closed"},
    ):
        (d,) = policy.evaluate(ctx(breakers=breakers, memory=memory))
        assert one_sentence(d.reason), d.reason
        assert journalable(d)
        seen.append((d.inputs["level"], d.action))
    assert [lvl for lvl, _ in seen] == [1, 2, 2, 4, 1]
    notes = [a for _, a in seen]
    assert notes[0] is None and notes[2] is None
    assert isinstance(notes[1], Notify) and notes[1].severity == "P3"
    assert isinstance(notes[3], Notify) and notes[3].severity == "P1"
    assert isinstance(notes[4], Notify) and notes[4].resolve


def test_invalid_levels_are_rejected():
    with pytest.raises(ValueError):
        DegradationSpec(levels={"gpu": 7})


def test_a_change_whose_notice_was_not_sent_is_told_again_unless_the_level_went_back():
    policy = DegradationPolicy("degradation", DegradationSpec())
    memory: dict[str, object] = {}

    def notice(breakers):
        (d,) = policy.evaluate(ctx(breakers=breakers, memory=memory))
        return d.action

    told = notice({"vector_store": "open"})
    assert isinstance(told, Notify) and told.summary.startswith("degradation level 1 -> 3")
    both = {"vector_store": "open", "gpu": "open"}
    held = notice(both)
    assert isinstance(held, Notify) and held.summary.startswith("degradation level 3 -> 4")
    policy.not_carried_out(memory, held, failed=False)  # the bus held it back: notify cooldown
    again = notice(both)
    assert isinstance(again, Notify) and again.summary == held.summary
    policy.not_carried_out(memory, again, failed=False)
    assert notice({"vector_store": "open"}) is None  # back at 3, what humans were told
