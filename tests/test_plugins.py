"""Third-party executors load from the ``autoscaler.executors`` entry-point group."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoscaler.config import from_mapping
from autoscaler.errors import ConfigError
from autoscaler.plugins import executor_type
from autoscaler.service import build_executors
from remediation.recording import RecordingExecutor

PLUGIN = """
from remediation.recording import RecordingExecutor, RecordingSpec
from remediation.registry import ExecutorType

EXECUTOR = ExecutorType(RecordingSpec, lambda name, spec: RecordingExecutor(name, spec))
NOT_A_TYPE = object()
"""


@pytest.fixture
def plugin_dist(tmp_path: Path) -> Iterator[None]:
    """A real installed distribution on sys.path with an entry point, as pip would lay it."""
    (tmp_path / "acme_exec.py").write_text(PLUGIN)
    info = tmp_path / "acme_exec-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-exec\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[autoscaler.executors]\nacme = acme_exec:EXECUTOR\nbroken = acme_exec:NOT_A_TYPE\n"
        "missing = acme_missing_module:EXECUTOR\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield
    sys.path.remove(str(tmp_path))
    sys.modules.pop("acme_exec", None)


@pytest.mark.usefixtures("plugin_dist")
def test_an_entry_point_executor_is_built_from_its_config_table() -> None:
    settings = from_mapping({"executors": {"x": {"type": "acme", "initial_replicas": 3}}})
    assert executor_type("acme").spec.__name__ == "RecordingSpec"
    built = build_executors(settings)
    assert isinstance(built["x"], RecordingExecutor)
    assert built["x"].spec.initial_replicas == 3


@pytest.mark.usefixtures("plugin_dist")
def test_an_entry_point_that_is_not_an_executor_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="is not an ExecutorType"):
        executor_type("broken")


def test_an_unknown_executor_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown executor type 'nope'"):
        executor_type("nope")


@pytest.mark.usefixtures("plugin_dist")
@pytest.mark.parametrize(
    ("type_", "why"),
    [
        ("missing", "cannot be loaded: ModuleNotFoundError: No module named 'acme_missing_module'"),
        ("broken", "is not an ExecutorType"),
    ],
)
def test_a_plugin_that_cannot_be_used_is_a_config_problem_at_its_key(type_: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"executors": {"x": {"type": type_}}})
    assert err.value.problems[0].startswith("executors.x.type: entry point")
    assert why in err.value.problems[0]


@pytest.mark.parametrize("kind", ["executors", "sources", "policies"])
def test_a_type_that_is_not_a_string_is_a_config_problem(kind: str) -> None:
    with pytest.raises(ConfigError, match=rf"{kind}\.x\.type: expected one of .*, got \["):
        from_mapping({kind: {"x": {"type": ["recording"]}}})
