"""deploy/config.swarm.toml loads with the real config loader once its components exist."""

from __future__ import annotations

from pathlib import Path

from autoscaler.config import config_warnings, load
from tests.deploy.helpers import DEPLOY

SECRET = "/run/secrets/autoscaler_token"


def test_swarm_config_loads_and_binds_all_interfaces(tmp_path: Path) -> None:
    # The secret exists only inside the swarm task: stand in a file for it.
    token = tmp_path / "token"
    token.write_text("t0ken")
    text = (DEPLOY / "config.swarm.toml").read_text()
    assert SECRET in text
    config = tmp_path / "config.toml"
    config.write_text(text.replace(SECRET, str(token)))
    settings = load(config, env={})
    # every signal a rule reads is queried, and the swarm target has a rollback rule
    assert config_warnings(settings) == []
    assert settings.http.host == "0.0.0.0"
    assert settings.executors["swarm"].type == "swarm"
    assert settings.service.state_path.startswith("/var/lib/autoscaler/")
