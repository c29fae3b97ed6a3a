"""The journal and state store: every decision with its outcome, and all state that
changes behaviour (cooldowns, dedupe keys, breaker states, policy memory).

``StateStore`` is the protocol; ``SQLiteStore`` (embedded, WAL) is the default and
``MemoryStore`` backs replays and tests. A server database can implement the same protocol.
Each tick is committed in one transaction, so a killed service restarts from the last
complete tick and never repeats an action still in cooldown.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One journal line: a decision and, for an action, what became of it."""

    at: float
    policy: str
    target: str
    kind: str
    """Action kind (scale, restart, rollback, trip_breaker, notify) or ``hold``."""
    params: Mapping[str, Any]
    reason: str
    inputs: Mapping[str, Any]
    status: str = ""
    """Outcome status (done, dry-run, failed, skipped-cooldown, ...); empty for holds."""
    detail: str = ""
    executor: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StateStore(Protocol):
    """Durable journal and key/value state."""

    def load_state(self) -> dict[str, Any]:
        """Every persisted state key and its JSON value."""
        ...

    def commit(self, records: Sequence[JournalRecord], state: Mapping[str, Any]) -> None:
        """Append journal records and upsert state keys (``None`` deletes) atomically."""
        ...

    def query(
        self, *, since: float | None = None, target: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Journal records at or after ``since`` (newest ``limit``), oldest first."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    policy TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    reason TEXT NOT NULL,
    inputs TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    executor TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_at ON journal (at);
CREATE INDEX IF NOT EXISTS journal_target_at ON journal (target, at);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


_COLUMNS = {
    "journal": (
        "id",
        "at",
        "policy",
        "target",
        "kind",
        "params",
        "reason",
        "inputs",
        "status",
        "detail",
        "executor",
    ),
    "state": ("key", "value"),
}
"""The columns of each table of ``_SCHEMA``, in order."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=True)
"""One encoder for every write: ``json.dumps`` with options builds a new one per call."""


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


_PRUNE_EVERY = 3600.0
"""Seconds of journal time between two deletions of rows past the retention."""


class SQLiteStore:
    """Journal and state in one SQLite file (WAL, one transaction per tick).

    Calls may come from a worker thread (``asyncio.to_thread``); a lock serialises them.
    With ``retention`` (seconds, 0: keep everything) journal rows older than that, counted
    from the newest row committed, are deleted in the commit that first passes each
    ``_PRUNE_EVERY`` seconds of journal time (forwards or, after a clock set back,
    backwards), so the file stops growing.
    """

    def __init__(self, path: str | Path, *, retention: float = 0.0) -> None:
        self.path = Path(path)
        self.retention = retention
        self._pruned_at = -math.inf
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        try:
            self._check_columns()
        except sqlite3.Error:
            self._db.close()
            raise

    def _check_columns(self) -> None:
        """``sqlite3.DatabaseError`` when a table has other columns than ours (a file of
        another program, or of another version): every commit would fail, and a restart
        repeat what the lost state held back."""
        for table, columns in _COLUMNS.items():
            found = tuple(row[1] for row in self._db.execute(f"PRAGMA table_info({table})"))
            if found != columns:
                raise sqlite3.DatabaseError(
                    f"its {table} table has the columns ({', '.join(found)}), not"
                    f" ({', '.join(columns)}): not a state file of this version"
                )

    def load_state(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM state").fetchall()
        out: dict[str, Any] = {}
        for key, value in rows:
            try:
                out[key] = json.loads(value)
            except ValueError:
                continue  # a corrupt value is dropped rather than crashing the service
        return out

    def commit(self, records: Sequence[JournalRecord], state: Mapping[str, Any]) -> None:
        rows = [
            (
                r.at,
                r.policy,
                r.target,
                r.kind,
                _dumps(r.params),
                r.reason,
                _dumps(r.inputs),
                r.status,
                r.detail,
                r.executor,
            )
            for r in records
        ]
        upserts = [(k, _dumps(v)) for k, v in state.items() if v is not None]
        deletes = [(k,) for k, v in state.items() if v is None]
        if not rows and not upserts and not deletes:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO journal (at, policy, target, kind, params, reason, inputs,"
                    " status, detail, executor) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                self._db.executemany(
                    "INSERT INTO state (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    upserts,
                )
                self._db.executemany("DELETE FROM state WHERE key = ?", deletes)
                newest = max((r.at for r in records), default=-math.inf)
                # either way: after a clock set back, pruning goes on from the new time
                if rows and self.retention > 0 and abs(newest - self._pruned_at) >= _PRUNE_EVERY:
                    self._db.execute("DELETE FROM journal WHERE at < ?", (newest - self.retention,))
                    self._pruned_at = newest
                self._db.execute("COMMIT")
            except BaseException:
                # a failed COMMIT (SQLITE_BUSY) leaves the transaction open: without the
                # rollback every later BEGIN would fail; some errors roll back by themselves
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def query(
        self, *, since: float | None = None, target: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        keys = _COLUMNS["journal"][1:]  # every column but the id
        sql = f"SELECT {', '.join(keys)} FROM journal WHERE 1=1"
        args: list[Any] = []
        if since is not None:
            sql += " AND at >= ?"
            args.append(since)
        if target is not None:
            sql += " AND target = ?"
            args.append(target)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        out = []
        for row in reversed(rows):
            rec = dict(zip(keys, row, strict=True))
            rec["params"] = json.loads(rec["params"])
            rec["inputs"] = json.loads(rec["inputs"])
            out.append(rec)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


class MemoryStore:
    """The same protocol in memory: for replays and tests."""

    def __init__(self) -> None:
        self.records: list[JournalRecord] = []
        self.state: dict[str, Any] = {}

    def load_state(self) -> dict[str, Any]:
        return json.loads(_dumps(self.state))  # type: ignore[no-any-return]

    def commit(self, records: Sequence[JournalRecord], state: Mapping[str, Any]) -> None:
        self.records.extend(records)
        for k, v in state.items():
            if v is None:
                self.state.pop(k, None)
            else:
                self.state[k] = json.loads(_dumps(v))

    def query(
        self, *, since: float | None = None, target: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        out = [
            r.to_dict()
            for r in self.records
            if (since is None or r.at >= since) and (target is None or r.target == target)
        ]
        return out[-limit:] if limit else []

    def close(self) -> None:
        return None
