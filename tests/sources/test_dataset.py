"""Reading and writing recorded datasets: round trips and clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.dataset import DatasetError, read_dataset, read_long_csv, write_long_csv
from autoscaler.sources.base import Sample


def test_long_csv_accepts_unix_seconds_and_iso_times(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text(
        "timestamp,target,signal,value\n"
        "1700000060,api,queue_length,3\n"
        "2023-11-14T22:13:20Z,api,queue_length,NaN\n"
        "\n"
        "2023-11-14T22:15:00,db,p95_latency_ms,+Inf\n"
    )
    rows = read_long_csv(p)
    assert [(s.at, s.target, s.signal) for s in rows] == [
        (1700000000.0, "api", "queue_length"),
        (1700000060.0, "api", "queue_length"),
        (1700000100.0, "db", "p95_latency_ms"),
    ]
    assert math.isnan(rows[0].value) and rows[1].value == 3.0 and rows[2].value == math.inf


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("time,target,signal,value\n", ":1: expected the header"),
        ("timestamp,target,signal,value\n1,api,q\n", ":2: expected 4 columns"),
        ("timestamp,target,signal,value\nsoon,api,q,1\n", ":2: timestamp not unix seconds"),
        ("timestamp,target,signal,value\n1,api,q,lots\n", ":2: value is not a number"),
        ("timestamp,target,signal,value\n1,,q,1\n", ":2: empty target or signal"),
    ],
)
def test_bad_csv_names_the_line_and_problem(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_long_csv(p)


def test_missing_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        read_dataset(tmp_path / "nope.csv")
    p = tmp_path / "other.json"
    p.write_text('{"status": "success"}')
    with pytest.raises(DatasetError, match="not an autoscaler record dump"):
        read_dataset(p)


names = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=8
)


@given(
    st.lists(
        st.builds(
            Sample,
            names,
            names,
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(min_value=0, max_value=4e9, allow_nan=False),
        ),
        max_size=20,
    )
)
def test_written_csv_reads_back_exactly(
    tmp_path_factory: pytest.TempPathFactory, rows: list[Sample]
) -> None:
    p = tmp_path_factory.mktemp("rt") / "d.csv"
    write_long_csv(p, rows)
    back = read_long_csv(p)
    key = lambda s: (s.at, s.target, s.signal)  # noqa: E731
    want = sorted(rows, key=key)
    got = sorted(back, key=key)
    assert [(s.at, s.target, s.signal) for s in got] == [(s.at, s.target, s.signal) for s in want]
    for a, b in zip(got, want, strict=True):
        assert a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))
