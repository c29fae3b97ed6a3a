"""Parsing Prometheus API responses: any body gives samples or a SourceError, nothing else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.errors import SourceError
from autoscaler.sources.promql import (
    describe_body,
    matrix_samples,
    parse_envelope,
    vector_samples,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=15,
)
series = st.fixed_dictionaries(
    {},
    optional={
        "metric": st.dictionaries(
            st.sampled_from(["service", "app"]), st.text(max_size=3) | json_values
        )
        | json_values,
        "value": st.tuples(st.floats() | st.integers(), st.sampled_from(["1", "NaN", "+Inf", "x"]))
        | json_values,
        "values": st.lists(st.tuples(st.integers(), st.sampled_from(["1", "-Inf"])), max_size=3)
        | json_values,
    },
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(
        lambda rt, result, status: json.dumps(
            {"status": status, "data": {"resultType": rt, "result": result}}
        ).encode(),
        st.sampled_from(["vector", "matrix", "scalar"]) | json_values,
        st.lists(series, max_size=4) | json_values,
        st.sampled_from(["success", "error"]),
    )
)


@given(body=bodies, status=st.sampled_from([200, 400, 422, 500, 503]))
def test_any_body_parses_to_samples_or_a_source_error(body: bytes, status: int) -> None:
    try:
        data, _ = parse_envelope(body, status=status)
        samples, _ = vector_samples(data, signal="s", label="service", targets={})
        samples += matrix_samples(data, signal="s", label="service", targets={})
    except SourceError:
        return
    assert all(isinstance(s.target, str) and isinstance(s.value, float) for s in samples)


def test_describe_body_names_html_titles_and_truncates_text() -> None:
    assert describe_body(b"<!DOCTYPE html><title>Bad Gateway</title>") == (
        "HTML error page ('Bad Gateway')"
    )
    assert describe_body(b"x" * 500) == repr("x" * 120)
    assert describe_body(b"") == "empty body"


def test_a_scalar_result_is_refused_with_the_reason() -> None:
    data = {"resultType": "scalar", "result": [1.0, "2"]}
    with pytest.raises(SourceError, match="expected a vector result, got 'scalar'"):
        vector_samples(data, signal="s", label="service", targets={})


def test_series_without_the_label_are_skipped_and_counted() -> None:
    data = {
        "resultType": "vector",
        "result": [
            {"metric": {"service": "api"}, "value": [1.5, "2"]},
            {"metric": {"job": "x"}, "value": [1.5, "3"]},
        ],
    }
    samples, skipped = vector_samples(data, signal="s", label="service", targets={})
    assert [(s.target, s.value, s.at) for s in samples] == [("api", 2.0, 1.5)]
    assert skipped == 1


def test_json_nested_too_deep_for_the_parser_is_malformed_not_a_crash() -> None:
    with pytest.raises(SourceError, match="malformed JSON"):
        parse_envelope(b"[" * 100_000)


def test_a_number_beyond_any_float_is_a_malformed_sample_not_a_crash() -> None:
    # JSON integers have no limit: a broken exporter or proxy can send one
    huge = "9" * 400
    vector = {"resultType": "vector", "result": [{"metric": {"service": "a"}, "value": [1, 0]}]}
    vector["result"][0]["value"] = [json.loads(huge), "1"]  # type: ignore[index]
    with pytest.raises(SourceError, match="malformed vector sample: OverflowError"):
        vector_samples(vector, signal="s", label="service", targets={})
    matrix = {"resultType": "matrix", "result": [{"metric": {"service": "a"}, "values": []}]}
    matrix["result"][0]["values"] = [[1, json.loads(huge)]]  # type: ignore[index]
    with pytest.raises(SourceError, match="malformed matrix sample: OverflowError"):
        matrix_samples(matrix, signal="s", label="service", targets={})
