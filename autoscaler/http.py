"""The HTTP server: health, readiness, metrics, the journal, and pause/resume.

``make_app`` receives everything it serves as arguments (client_python's
``make_aiohttp_handler(registry=)``); extra routes (webhook intake, breakers) are passed in
by the composition root. Mutating endpoints need a bearer token, compared in constant time;
with no token configured they answer 403.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from autoscaler.engine import Engine
from policies.markers import Secret

Clock = Callable[[], float]


def check_bearer(request: web.Request, token: Secret) -> web.Response | None:
    """``None`` when the request carries the token; otherwise the refusal to return."""
    if not token:
        return web.json_response({"error": "disabled: no token configured"}, status=403)
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # surrogatepass encodes every str: aiohttp turns undecodable header bytes into lone
    # surrogates (as os.environ does for a token), and a bad header is a 401, never a 500.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogatepass"),
        token.get().encode("utf-8", "surrogatepass"),
    ):
        return web.json_response(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


def make_app(
    *,
    engine: Engine,
    clock: Clock,
    token: Secret,
    healthz_max_age: float,
    extra_routes: Iterable[web.RouteDef] = (),
) -> web.Application:
    """The aiohttp application of the service."""
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        last = engine.last_tick
        age = None if last is None else clock() - last
        body = {"last_tick": last, "age": age, "max_age": healthz_max_age}
        ok = age is not None and age <= healthz_max_age
        return web.json_response({"ok": ok, **body}, status=200 if ok else 503)

    @routes.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        failing = sorted(n for n, up in engine.source_up.items() if not up)
        ok = engine.last_tick is not None and not failing
        body = {
            "ok": ok,
            "sources": engine.source_up,
            "failing": failing,
            "paused": engine.bus.paused,
        }
        return web.json_response(body, status=200 if ok else 503)

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        data = generate_latest(engine.metrics.registry)
        resp = web.Response(body=data)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    @routes.get("/v1/decisions")
    async def decisions(request: web.Request) -> web.Response:
        q = request.query
        try:
            since = float(q["since"]) if "since" in q else None
            limit = int(q.get("limit", "1000"))
            if since is not None and not math.isfinite(since):
                raise ValueError
            if not 0 < limit <= 10000:
                raise ValueError
        except ValueError:
            return web.json_response(
                {"error": "since must be epoch seconds; limit an integer in 1..10000"},
                status=400,
            )
        # off the loop: a large answer takes a while to decode, and the store's lock may be
        # held by a commit in a worker thread; the tick and the webhooks must not wait
        rows = await asyncio.to_thread(
            engine.state_store.query, since=since, target=q.get("target"), limit=limit
        )
        return web.json_response({"decisions": rows})

    async def set_paused(request: web.Request, paused: bool) -> web.Response:
        refused = check_bearer(request, token)
        if refused is not None:
            return refused
        engine.set_paused(paused)
        return web.json_response({"paused": paused})

    @routes.post("/v1/pause")
    async def pause(request: web.Request) -> web.Response:
        return await set_paused(request, True)

    @routes.post("/v1/resume")
    async def resume(request: web.Request) -> web.Response:
        return await set_paused(request, False)

    app = web.Application(client_max_size=1 << 20)
    app.add_routes(routes)
    app.add_routes(list(extra_routes))
    return app
