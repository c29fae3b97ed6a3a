"""A real Alertmanager 0.25 for tests, delivering to a webhook URL with a bearer token.

Clustering is off (``--cluster.listen-address=``), storage is a temporary directory, the
port is free, readiness is polled on ``/-/ready``. Group waits are short so a firing
alert reaches the webhook within seconds.
"""

from __future__ import annotations

import json

from tests.harness.prometheus import ManagedProcess, ensure_binary

ALERTMANAGER = "prometheus-alertmanager"


class AlertmanagerServer(ManagedProcess):
    """A real Alertmanager whose only receiver is ``webhook_url``."""

    name = "alertmanager"

    def __init__(self, *, webhook_url: str, token: str = "") -> None:
        super().__init__()
        self.binary = ensure_binary(ALERTMANAGER, "prometheus-alertmanager")
        receiver: dict[str, object] = {"url": webhook_url, "send_resolved": True}
        if token:
            receiver["http_config"] = {"authorization": {"type": "Bearer", "credentials": token}}
        cfg = {
            "route": {
                "receiver": "autoscaler",
                "group_by": ["alertname", "service"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "autoscaler", "webhook_configs": [receiver]}],
        }
        (self.dir / "alertmanager.yml").write_text(json.dumps(cfg, indent=1))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.dir / 'alertmanager.yml'}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
        ]
