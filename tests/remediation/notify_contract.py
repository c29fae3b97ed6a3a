"""Local servers that follow the documented Slack, PagerDuty and webhook contracts.

Slack incoming webhook: JSON body with a non-empty ``text`` → 200 ``ok``; otherwise
400 ``invalid_payload``/``no_text``. PagerDuty Events API v2: validates ``routing_key``,
``event_action``, ``dedup_key`` rules and the trigger ``payload`` fields, answers 202
``{"status":"success","message":"Event processed","dedup_key":…}`` or 400 with an error
body. Both can be told to answer the next requests with scripted failures (429, 5xx), or
to hang (never answer, as a stuck proxy does).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass
class Scripted:
    """Forced answers for the next requests: (status, body, headers)."""

    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class ContractServer:
    """Common parts: received requests and scripted failures."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.failures: deque[Scripted] = deque()
        self.hang = False
        """Never answer (the request is still counted in ``headers``)."""
        self.app = web.Application()

    def fail_next(self, *answers: Scripted) -> None:
        self.failures.extend(answers)

    async def _read(self, request: web.Request) -> dict[str, Any] | web.Response:
        self.headers.append(dict(request.headers))
        if self.hang:
            await asyncio.Event().wait()  # cancelled when the client gives up
        if self.failures:
            f = self.failures.popleft()
            return web.Response(status=f.status, text=f.body, headers=f.headers)
        if request.content_type != "application/json":
            return web.Response(status=400, text="invalid_payload")
        try:
            body = json.loads(await request.text())
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict):
            return web.Response(status=400, text="invalid_payload")
        self.received.append(body)
        return body


class SlackServer(ContractServer):
    """``POST /services/T000/B000/XXXX``: 200 ``ok`` for a valid message."""

    path = "/services/T000/B000/XXXX"

    def __init__(self) -> None:
        super().__init__()
        self.app.router.add_post(self.path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body.get("text"), str) or not body["text"]:
            return web.Response(status=400, text="no_text")
        blocks = body.get("blocks", [])
        if not isinstance(blocks, list) or any("type" not in b for b in blocks):
            return web.Response(status=400, text="invalid_blocks")
        return web.Response(status=200, text="ok", content_type="text/html")


class PagerDutyServer(ContractServer):
    """``POST /v2/enqueue``; keeps open incidents by dedup key, like PagerDuty does."""

    path = "/v2/enqueue"

    def __init__(self, routing_key: str) -> None:
        super().__init__()
        self.routing_key = routing_key
        self.open: dict[str, dict[str, Any]] = {}
        self.resolved: list[str] = []
        self.app.router.add_post(self.path, self.handle)

    @staticmethod
    def _invalid(*errors: str) -> web.Response:
        return web.json_response(
            {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
            status=400,
        )

    async def handle(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        errors: list[str] = []
        if body.get("routing_key") != self.routing_key or len(self.routing_key) != 32:
            errors.append("'routing_key' is invalid")
        action = body.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        key = body.get("dedup_key")
        if key is not None and (not isinstance(key, str) or len(key) > 255):
            errors.append("'dedup_key' is invalid")
        if action in ("acknowledge", "resolve") and not key:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if action == "trigger":
            p = body.get("payload")
            if not isinstance(p, dict):
                errors.append("'payload' is missing")
            else:
                if not p.get("summary") or len(p["summary"]) > 1024:
                    errors.append("'payload.summary' is invalid")
                if not p.get("source"):
                    errors.append("'payload.source' is missing")
                if p.get("severity") not in SEVERITIES:
                    errors.append("'payload.severity' is invalid")
                details = p.get("custom_details", {})
                if not isinstance(details, dict):
                    errors.append("'payload.custom_details' must be an object")
        if errors:
            return self._invalid(*errors)
        key = key or uuid.uuid4().hex
        if action == "trigger":
            self.open[key] = body
        elif action == "resolve" and key in self.open:
            del self.open[key]
            self.resolved.append(key)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": key}, status=202
        )


class WebhookServer(ContractServer):
    """``POST /hook``: 204 for any JSON object."""

    path = "/hook"

    def __init__(self) -> None:
        super().__init__()
        self.app.router.add_post(self.path, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        return web.Response(status=204)
