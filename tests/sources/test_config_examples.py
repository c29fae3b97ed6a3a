"""The commented source examples in config.toml are valid configuration."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from autoscaler.cli import main
from autoscaler.config import from_mapping

CONFIG = Path(__file__).resolve().parents[2] / "config.toml"
ENV = {
    "FLY_METRICS_TOKEN": "FlyV1 fm2_example",
    "ALERTMANAGER_WEBHOOK_TOKEN": "t",
    "PROMETHEUS_TOKEN": "t",
}


def examples() -> dict[str, str]:
    text = CONFIG.read_text()
    blocks = re.findall(r"^# >>> example: (\w+)\n(.*?)^# <<<", text, flags=re.M | re.S)
    return {name: "\n".join(line[2:] for line in body.splitlines()) for name, body in blocks}


def test_the_reference_config_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(CONFIG)]) == 0


def test_every_source_type_has_an_example() -> None:
    assert set(examples()) == {"prometheus", "fly", "dcgm", "nvml", "probe", "alertmanager"}


@pytest.mark.parametrize("name", sorted(examples()))
def test_each_commented_example_validates(name: str) -> None:
    base = tomllib.loads(CONFIG.read_text())
    extra = tomllib.loads(examples()[name])
    base["sources"].update(extra["sources"])
    settings = from_mapping(base, env=ENV)
    (added,) = extra["sources"]
    assert settings.sources[added].type == extra["sources"][added]["type"]
