"""The state store contract, run on every implementation (SQLite file and memory)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoscaler.journal import JournalRecord, MemoryStore, SQLiteStore, StateStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    s: StateStore = (
        SQLiteStore(tmp_path / "state.db") if request.param == "sqlite" else MemoryStore()
    )
    yield s
    s.close()


def rec(at: float, target: str = "api", kind: str = "scale") -> JournalRecord:
    return JournalRecord(
        at, "queue", target, kind, {"replicas": 4}, "why", {"v": 1.0}, "done", "ok", "rec"
    )


def test_state_keys_round_trip_and_none_deletes(store: StateStore) -> None:
    store.commit([], {"cooldown:api:scale_up": 123.5, "memory:q:api": {"since": 1}})
    assert store.load_state() == {"cooldown:api:scale_up": 123.5, "memory:q:api": {"since": 1}}
    store.commit([], {"cooldown:api:scale_up": None})
    assert store.load_state() == {"memory:q:api": {"since": 1}}


def test_query_filters_by_since_and_target_oldest_first(store: StateStore) -> None:
    store.commit([rec(1), rec(2, "web"), rec(3), rec(4)], {})
    rows = store.query(since=2, target="api")
    assert [r["at"] for r in rows] == [3, 4]
    assert rows[0]["params"] == {"replicas": 4} and rows[0]["status"] == "done"


def test_query_limit_keeps_the_newest(store: StateStore) -> None:
    store.commit([rec(t) for t in range(10)], {})
    assert [r["at"] for r in store.query(limit=3)] == [7, 8, 9]


def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "s.db")
    first.commit([rec(1)], {"k": [1, 2]})
    first.close()
    again = SQLiteStore(tmp_path / "s.db")
    assert again.load_state() == {"k": [1, 2]}
    assert len(again.query()) == 1
    again.close()


def test_sqlite_journal_rows_past_the_retention_are_deleted_hourly(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db", retention=100.0)
    store.commit([rec(0)], {"cooldown:api:scale_up": 1.0})
    store.commit([rec(50)], {})
    store.commit([rec(3000)], {})  # past the retention, but within the hour since the last prune
    assert [r["at"] for r in store.query()] == [0, 50, 3000]
    store.commit([rec(4000)], {})  # an hour of journal time on: rows before 3900 go
    assert [r["at"] for r in store.query()] == [4000]
    assert store.load_state() == {"cooldown:api:scale_up": 1.0}  # state is never pruned
    store.close()
    keep = SQLiteStore(tmp_path / "keep.db")  # retention 0: everything stays
    keep.commit([rec(0)], {})
    keep.commit([rec(10_000_000)], {})
    assert len(keep.query()) == 2
    keep.close()


def test_sqlite_journal_pruning_goes_on_after_the_clock_is_set_back(tmp_path: Path) -> None:
    """A pass ran on a clock days ahead (a host booted with a wrong RTC, then NTP stepped
    it back): pruning waited for the clock to pass that time again plus an hour, and the
    journal grew without bound until a restart."""
    day = 86_400.0
    store = SQLiteStore(tmp_path / "state.db", retention=day)
    store.commit([rec(100 * day)], {})  # the wrong clock
    store.commit([rec(10 * day)], {})  # set back
    store.commit([rec(12 * day)], {})  # two days on: the row of day 10 is past the retention
    assert [r["at"] for r in store.query()] == [100 * day, 12 * day]
    store.close()


class _BusyOnCommit:
    """The store's connection, whose next COMMIT fails as SQLITE_BUSY does (sqlite3 raises
    "database is locked" and leaves the transaction open)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.busy = db, True

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.busy:
            self.busy = False
            raise sqlite3.OperationalError("database is locked")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_commit_that_fails_is_rolled_back_and_the_next_one_succeeds(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "j.db")
    real = store._db
    store._db = _BusyOnCommit(real)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        store.commit([rec(1.0)], {"cooldown:api": 1.0})
    assert not real.in_transaction  # else every later BEGIN fails
    store.commit([rec(2.0)], {"cooldown:api": 2.0})
    assert [r["at"] for r in store.query()] == [2.0]
    assert store.load_state() == {"cooldown:api": 2.0}
    store.close()


def test_a_file_whose_tables_have_other_columns_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB, version INTEGER)")
        db.execute("INSERT INTO state VALUES ('k', 'v', 7)")
        db.commit()
    with pytest.raises(
        sqlite3.DatabaseError, match=r"its state table has the columns \(key, value, version\)"
    ):
        SQLiteStore(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT * FROM state").fetchall() == [("k", "v", 7)]
    SQLiteStore(tmp_path / "new.db").close()  # a new file gets our tables
    SQLiteStore(tmp_path / "new.db").close()  # and is ours when opened again
