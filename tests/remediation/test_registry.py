"""Executor types are registered and the config.toml examples validate when uncommented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from autoscaler.config import config_warnings, from_mapping, load
from autoscaler.errors import ConfigError
from policies.markers import Secret
from remediation.board import BreakerBoard
from remediation.fly import FlyExecutor
from remediation.notify import PagerDutyNotifier, SlackNotifier, WebhookNotifier
from remediation.registry import EXECUTOR_TYPES
from remediation.swarm import SwarmExecutor

CONFIG = Path(__file__).resolve().parents[2] / "config.toml"
ENV = {
    "FLY_API_TOKEN": "FlyV1 fm2_x",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
    "PAGERDUTY_ROUTING_KEY": "k" * 32,
    "WEBHOOK_TOKEN": "t",
}


def uncommented_examples() -> str:
    text = CONFIG.read_text(encoding="utf-8")
    block = re.search(r"# --8<-- executor examples\n(.*?)# -->8--", text, re.S)
    assert block is not None
    return "\n".join(re.sub(r"^# ?", "", line) for line in block.group(1).splitlines())


def test_every_executor_type_is_registered() -> None:
    assert {"recording", "swarm", "fly", "slack", "pagerduty", "webhook", "breakers"} <= set(
        EXECUTOR_TYPES
    )


def test_the_reference_config_still_validates() -> None:
    assert "demo" in load(CONFIG).executors


def test_the_commented_executor_examples_validate_and_build() -> None:
    data = tomllib.loads(uncommented_examples())
    settings = from_mapping(data, env=ENV)
    built = {
        name: EXECUTOR_TYPES[c.type].build(name, c.spec) for name, c in settings.executors.items()
    }
    assert isinstance(built["swarm"], SwarmExecutor)
    assert built["swarm"].spec.services == {"api": "platform_api"}
    assert isinstance(built["fly"], FlyExecutor)
    assert built["fly"].spec.token == Secret("FlyV1 fm2_x")
    assert built["fly"].spec.timeout == 10.0
    assert isinstance(built["slack"], SlackNotifier)
    assert isinstance(built["pagerduty"], PagerDutyNotifier)
    assert built["pagerduty"].spec.routing_key.get() == "k" * 32
    assert isinstance(built["webhook"], WebhookNotifier)
    # as given, each notifier's tries end within the bus's executor_timeout (30 s)
    assert config_warnings(settings) == []
    assert isinstance(built["breakers"], BreakerBoard)
    assert built["breakers"].snapshot()["breakers"]["gpu_pool"]["state"] == "closed"


def test_a_secret_written_in_the_file_is_rejected_with_its_key_path() -> None:
    data = {"executors": {"pd": {"type": "pagerduty", "routing_key": "plain-text-key"}}}
    with pytest.raises(ConfigError, match=r"executors\.pd\.routing_key"):
        from_mapping(data, env={})
