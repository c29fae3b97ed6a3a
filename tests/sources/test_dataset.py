"""Recorded datasets: what ``write_long_csv`` writes, ``read_metrics`` reads back exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.dataset import parse_timestamp, write_long_csv
from autoscaler.replay import InputError, read_metrics
from autoscaler.sources.base import Sample


def test_special_values_and_both_time_spellings_read_back(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text(
        "timestamp,target,signal,value\n"
        "2023-11-14T22:13:20Z,api,queue_length,NaN\n"
        "1700000060,api,queue_length,3\n"
        "\n"
        "2023-11-14T22:15:00,db,p95_latency_ms,+Inf\n"
    )
    series = {(s.target, s.signal): s for s in read_metrics([p])}
    api = series[("api", "queue_length")]
    assert api.times.tolist() == [1700000000.0, 1700000060.0]
    assert math.isnan(api.values[0]) and api.values[1] == 3.0
    db = series[("db", "p95_latency_ms")]
    assert db.times.tolist() == [1700000100.0] and db.values[0] == math.inf


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1700000000.5", 1700000000.5),
        (" 2023-11-14T22:13:20Z ", 1700000000.0),
        ("2023-11-14 22:13:20", 1700000000.0),  # NAB's spelling: no offset is UTC
        ("2023-11-15T00:13:20+02:00", 1700000000.0),
    ],
)
def test_timestamps_are_unix_seconds_or_iso_8601(text: str, seconds: float) -> None:
    assert parse_timestamp(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "inf", "NaN"])
def test_other_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_a_foreign_json_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "other.json"
    p.write_text('{"status": "success"}')
    with pytest.raises(InputError, match=r"other\.json: expected a query_range response"):
        read_metrics([p])


names = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=8
).filter(lambda s: s.strip() == s)  # the reader strips names


@given(
    st.dictionaries(
        st.tuples(names, names),
        st.lists(
            st.tuples(
                st.floats(min_value=0, max_value=4e9, allow_nan=False),
                st.floats(allow_nan=True, allow_infinity=True),
            ),
            min_size=1,
            max_size=5,
            unique_by=lambda r: r[0],
        ),
        min_size=1,
        max_size=4,
    )
)
def test_written_csv_reads_back_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    data: dict[tuple[str, str], list[tuple[float, float]]],
) -> None:
    rows = [Sample(t, s, v, at) for (t, s), points in data.items() for at, v in points]
    p = tmp_path_factory.mktemp("rt") / "d.csv"
    assert write_long_csv(p, sorted(rows, key=lambda r: r.at)) == len(rows)
    back = {(s.target, s.signal): s for s in read_metrics([p])}
    assert set(back) == set(data)
    for key, points in data.items():
        points = sorted(points)
        assert back[key].times.tolist() == [at for at, _ in points]
        for got, (_, want) in zip(back[key].values.tolist(), points, strict=True):
            assert got == want or (math.isnan(got) and math.isnan(want))
