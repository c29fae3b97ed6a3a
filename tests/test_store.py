"""The window store: tick grid, staleness, dropped samples, counters, bounded memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.config import SignalSettings
from autoscaler.sources.base import Sample
from autoscaler.store import WindowStore
from policies.types import Observation


def test_history_is_on_the_tick_grid_with_nan_for_missing_ticks() -> None:
    store = WindowStore(interval=15, signals={"q": SignalSettings(max_age=20)})
    for k, v in [(1, 1.0), (2, 2.0), (4, 4.0)]:
        store.ingest([Sample("api", "q", v, k * 15.0)])
        store.advance(k * 15.0)
    store.advance(5 * 15.0 + 15)  # tick 6: sample at 60 is 30 s old, older than max_age
    times, values = store.window("api", "q", 90)
    assert list(times) == [0, 15, 30, 45, 60, 75, 90]
    assert np.isnan(values[0]) and list(values[1:3]) == [1.0, 2.0]
    assert np.isnan(values[5]) and np.isnan(values[6])


def test_observation_is_stale_after_max_age() -> None:
    store = WindowStore(interval=15, signals={"q": SignalSettings(max_age=60)})
    store.ingest([Sample("api", "q", 3.0, 100.0)])
    assert store.observation("api", "q", 160).usable
    assert store.observation("api", "q", 161).stale


def test_after_the_clock_steps_back_old_samples_are_not_fresh_and_new_ones_are_taken() -> None:
    store = WindowStore(
        interval=15,
        signals={"q": SignalSettings(max_age=60), "n": SignalSettings(kind="counter")},
    )
    for t, v in [(985.0, 50.0), (1000.0, 50.0)]:
        store.ingest([Sample("api", "q", v, t), Sample("api", "n", 10 * t, t)])
        store.advance(t)
    # an NTP step of five minutes back: the pass's samples look older than the stored ones
    store.ingest([Sample("api", "q", 0.0, 700.0), Sample("api", "n", 7020.0, 700.0)])
    store.advance(700.0)
    obs = store.observation("api", "q", 700.0)
    assert obs.stale  # the value of "the future" is not used as if fresh
    for t in (715.0, 730.0):  # the next passes are taken again (the counter needs two)
        store.ingest([Sample("api", "q", 0.0, t), Sample("api", "n", 10 * t, t)])
        store.advance(t)
    assert store.observation("api", "q", 730.0).usable
    assert store.observation("api", "q", 730.0).value == 0.0
    assert store.observation("api", "n", 730.0).value == 10.0


def test_missing_series_is_stale_nan() -> None:
    obs = WindowStore(interval=15).observation("api", "q", 0)
    assert obs.stale and math.isnan(obs.value)


def test_values_reads_each_targets_latest_value_as_its_observation_does() -> None:
    store = WindowStore(interval=15, signals={"q": SignalSettings(max_age=60)})
    store.ingest([Sample("api", "q", 3.0, 100.0), Sample("web", "q", 5.0, 10.0)])
    store.advance(105.0)  # web's sample is stale: its value is still the latest one
    targets = ["web", "db", "api"]
    got = store.values("q", targets)
    want = [store.observation(t, "q", 105.0).value for t in targets]
    assert got[0] == want[0] == 5.0 and got[2] == want[2] == 3.0
    assert math.isnan(got[1]) and math.isnan(want[1])
    assert all(math.isnan(v) for v in store.values("nothing", targets))


def test_a_non_finite_sample_is_counted_and_never_stored_as_a_value() -> None:
    store = WindowStore(interval=15)
    dropped = store.ingest(
        [
            Sample("api", "q", math.nan, 1),
            Sample("api", "q", math.inf, 1),
            Sample("api", "q", 2.0, 1),
            Sample("api", "q", 3.0, math.nan),  # no time to place it at: dropped
        ]
    )
    assert dropped == 3
    assert store.dropped["non_finite"] == 3
    assert store.observation("api", "q", 1) == Observation(2.0, 1.0, stale=False)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_sample_replaces_the_observation_and_leaves_a_gap(bad: float) -> None:
    # histogram_quantile with no traffic, a 0/0 error ratio: the old value is not current
    store = WindowStore(interval=15, signals={"error_rate": SignalSettings(max_age=60)})
    store.ingest([Sample("api", "error_rate", 0.2, 0.0)])
    store.advance(0.0)
    for t in (15.0, 30.0):
        store.ingest([Sample("api", "error_rate", bad, t)])
        store.advance(t)
    obs = store.observation("api", "error_rate", 30.0)
    assert not obs.stale and not obs.usable and obs.at == 30.0
    assert store.latest(30.0).of("api")["error_rate"].usable is False
    _, values = store.window("api", "error_rate", 30.0)
    assert values[0] == 0.2 and np.isnan(values[1:]).all()  # gaps, not the old value
    assert store.dropped["non_finite"] == 2
    store.ingest([Sample("api", "error_rate", 0.1, 45.0)])  # traffic again
    store.advance(45.0)
    assert store.observation("api", "error_rate", 45.0).usable


def test_a_non_finite_counter_reading_is_unusable_and_the_next_rate_spans_the_gap() -> None:
    store = WindowStore(interval=10, signals={"req": SignalSettings(kind="counter")})
    store.ingest([Sample("api", "req", 100, 0)])
    store.ingest([Sample("api", "req", 150, 10)])
    store.ingest([Sample("api", "req", math.nan, 20)])
    obs = store.observation("api", "req", 20)
    assert not obs.stale and not obs.usable
    store.ingest([Sample("api", "req", 250, 30)])
    assert store.observation("api", "req", 30).value == 5.0


def test_a_late_counter_reading_does_not_replace_a_newer_non_finite_one() -> None:
    """The non-finite reading at 20 is the counter's observation; a reading stamped 15
    arriving after it is late, as it would be after a finite one: it must not become the
    observation (a rate as of 15 replacing what is known as of 20)."""
    store = WindowStore(interval=10, signals={"req": SignalSettings(kind="counter")})
    store.ingest([Sample("api", "req", 100, 0), Sample("api", "req", 150, 10)])
    store.ingest([Sample("api", "req", math.nan, 20)])
    assert store.ingest([Sample("api", "req", 170, 15)]) == 1
    assert store.ingest([Sample("api", "req", math.nan, 15)]) == 1
    assert store.dropped == {"non_finite": 1, "out_of_order": 2}
    obs = store.observation("api", "req", 20)
    assert obs.at == 20 and not obs.usable
    store.ingest([Sample("api", "req", 250, 30)])  # the next rate still spans the gap
    assert store.observation("api", "req", 30).value == 5.0


def test_out_of_order_sample_does_not_replace_a_newer_one() -> None:
    store = WindowStore(interval=15)
    store.ingest([Sample("api", "q", 2.0, 10), Sample("api", "q", 1.0, 5)])
    assert store.observation("api", "q", 10).value == 2.0
    assert store.dropped["out_of_order"] == 1


def test_a_batch_keeps_newer_samples_and_drops_only_the_late_ones() -> None:
    store = WindowStore(interval=15, signals={"q": SignalSettings(max_age=60)})
    store.ingest([Sample("api", "q", 2.0, 10)])
    dropped = store.ingest([Sample("api", "q", 1.0, 5), Sample("web", "q", 7.0, 5)])
    assert dropped == 1 and store.dropped["out_of_order"] == 1
    latest = store.latest(20)
    assert latest.of("api")["q"].value == 2.0
    assert latest.of("web")["q"].value == 7.0
    assert latest.of("web", failed={("web", "q")})["q"].stale  # its source failed this pass
    assert latest.of("db").get("q") is None and "q" not in latest.of("db")


def test_counters_are_stored_as_rates_across_a_reset() -> None:
    store = WindowStore(interval=10, signals={"req": SignalSettings(kind="counter")})
    store.ingest([Sample("api", "req", 100, 0)])
    assert store.observation("api", "req", 0).stale  # a rate needs two samples
    store.ingest([Sample("api", "req", 150, 10)])
    assert store.observation("api", "req", 10).value == 5.0
    store.ingest([Sample("api", "req", 20, 20)])  # the counter restarted
    assert store.observation("api", "req", 20).value == 2.0


def test_matrix_aligns_targets_and_leaves_unknown_targets_nan() -> None:
    store = WindowStore(interval=1)
    for t in range(3):
        store.ingest([Sample("a", "q", t, t), Sample("b", "q", 10 + t, t)])
        store.advance(t)
    times, m = store.matrix("q", ["b", "zz", "a"], 2)
    assert list(times) == [0, 1, 2]
    assert list(m[0]) == [10, 11, 12] and np.isnan(m[1]).all() and list(m[2]) == [0, 1, 2]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=200))
def test_ring_memory_stays_bounded_whatever_the_ticks(ticks: list[int]) -> None:
    store = WindowStore(interval=1, signals={"q": SignalSettings(window=60)})
    for t in sorted(ticks):
        store.ingest([Sample("api", "q", 1.0, t)])
        store.advance(t)
    assert store.memory_bytes() <= 8 * 2 * 60 * 8  # 8 rows x a double-written ring of 60
    _, values = store.window("api", "q", 10_000)
    assert len(values) <= 60


def test_a_row_not_written_for_longer_than_its_window_is_forgotten() -> None:
    # task ids that come and go: each keeps its row only while it can matter
    store = WindowStore(interval=15, signals={"q": SignalSettings(window=600, max_age=60)})
    t = 0.0
    for tick in range(2000):
        deploy = tick // 100
        store.ingest([Sample(f"api.{deploy}.{i}", "q", 1.0, t) for i in range(20)])
        store.ingest([Sample("api", "q", 2.0, t)])
        store.advance(t)
        t += 15.0
    kept = store.targets("q")
    assert "api" in kept and "api.19.0" in kept and "api.0.0" not in kept
    assert len(kept) <= 1 + 20 * 3  # of 401 seen: the last deploys', within window + sweep
    assert store.observation("api", "q", t - 15.0).value == 2.0
    _, values = store.window("api", "q", 600)
    assert (values == 2.0).all()


def test_a_row_whose_samples_a_clock_step_forgot_is_forgotten_once_its_history_is() -> None:
    store = WindowStore(interval=15, signals={"q": SignalSettings(window=600, max_age=60)})
    store.ingest([Sample("task-a", "q", 1.0, 10_000.0)])
    store.advance(10_000.0)
    store.advance(9_000.0)  # an NTP step back: task-a's sample is in the future, forgotten
    store.advance(9_015.0)
    assert store.targets("q") == ["task-a"]  # its history still counts
    for k in range(2, 200):  # silence, for longer than the window
        store.advance(9_000.0 + 15.0 * k)
    assert store.targets("q") == []


def test_a_late_non_finite_sample_is_counted_once_as_late() -> None:
    store = WindowStore(interval=15)
    store.ingest([Sample("api", "p95", 100.0, 200.0)])
    assert store.ingest([Sample("api", "p95", math.nan, 100.0)]) == 1
    assert store.dropped == {"non_finite": 0, "out_of_order": 1}
    assert store.observation("api", "p95", 200.0).value == 100.0  # the late NaN changes nothing


class _NeverForgets(WindowStore):
    def _sweep(self, s: object, now: float) -> None:
        return None


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([1.0, math.nan]), st.booleans()),
        min_size=1,
        max_size=400,
    ),
)
def test_forgetting_rows_never_loses_history_or_a_usable_observation(
    steps: list[tuple[int, float, bool]],
) -> None:
    # (a counter seen again after that long needs two readings for a rate, as a new one does)
    sig = {"q": SignalSettings(window=60, max_age=30)}
    store, ref = WindowStore(interval=10, signals=sig), _NeverForgets(interval=10, signals=sig)
    t = 0.0
    for target, value, jump in steps:
        t += 200.0 if jump else 10.0  # now and then a long silence
        for s in (store, ref):
            s.ingest([Sample(f"t{target}", "q", t if value == 1.0 else value, t)])
            s.advance(t)
        for name in ref.targets("q"):
            _, want = ref.window(name, "q", 60)
            _, got = store.window(name, "q", 60)
            if name not in store.targets("q"):
                assert np.isnan(want).all() and ref.observation(name, "q", t).stale
            else:
                assert np.array_equal(want, got, equal_nan=True)
                got_obs, want_obs = store.observation(name, "q", t), ref.observation(name, "q", t)
                assert repr(got_obs) == repr(want_obs) or (got_obs.stale and want_obs.stale)
