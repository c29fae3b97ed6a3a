"""The HTTP server: health, readiness, metrics, the journal, and pause/resume.

``make_app`` receives everything it serves as arguments (client_python's
``make_aiohttp_handler(registry=)``); extra routes (webhook intake, breakers) are passed in
by the composition root. Mutating endpoints need a bearer token, compared in constant time;
with no token configured they answer 403.

``serve`` bounds slow clients with ``request_timeout``: aiohttp's keep-alive timer runs from
the moment a connection opens until a request's headers are complete, so a client that sends
no complete headers in time (or stays idle that long) is disconnected; a handler that reads
a body does so through ``read_body``, under the same limit. (aiohttp itself has no header
timeout, and by default keeps such a connection an hour.)
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

REQUEST_TIMEOUT = web.AppKey("request_timeout", float)
"""Seconds a client has to send a request (``http.request_timeout``)."""


async def serve(
    app: web.Application, host: str, port: int, *, request_timeout: float
) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; returns its runner (``cleanup()`` stops it) and the bound
    port (``port`` 0: any free one)."""
    app[REQUEST_TIMEOUT] = request_timeout
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=request_timeout,
        # after an answer given before the body arrived (a 408, a 413), the rest of the
        # body is read and dropped for this long (aiohttp: 10 s) before the connection closes
        lingering_time=min(10.0, request_timeout),
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port


async def read_body(request: web.Request, cap: int) -> bytes | None:
    """The request's body, or ``None`` when it is longer than ``cap`` bytes. Raises
    ``TimeoutError`` when the client does not send it within the app's request timeout."""
    if request.content_length is not None and request.content_length > cap:
        return None
    body = bytearray()
    # read(n) returns what has arrived so far, not n bytes: loop until EOF, or until one
    # byte past the cap (a chunked body has no Content-Length to check up front).
    async with asyncio.timeout(request.config_dict.get(REQUEST_TIMEOUT)):
        while len(body) <= cap:
            chunk = await request.content.read(cap + 1 - len(body))
            if not chunk:
                break
            body += chunk
    return None if len(body) > cap else bytes(body)


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
