"""The bare relay: the in-run baseline that llm-sidecar is judged against.

Read the body, forward it with one pooled ClientSession, relay the answer as bytes (streams chunk
by chunk, one write per upstream read, the last read written with the end of the body). No
parsing, metrics, logging or fallback: the cost floor of an aiohttp proxy.

`--client http1` is the same relay on the sidecar's own HTTP client (`sidecar.http1`) instead of
aiohttp's `ClientSession`: what the sidecar's parsing, fallback and metrics cost on top of its
transport, measured against a relay that has the same transport.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator

from aiohttp import ClientSession, TCPConnector, web

from sidecar.http1 import Pool, request_head, target

SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)
POOL = web.AppKey("pool", Pool)


async def relay(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {
        "Content-Type": request.headers.get("Content-Type", "application/json"),
        "Authorization": "Bearer sk-bench",
    }
    url = request.app[UPSTREAM] + request.path
    async with request.app[SESSION].post(url, data=body, headers=headers) as upstream:
        content_type = upstream.headers.get("Content-Type", "application/octet-stream")
        if not content_type.startswith("text/event-stream"):
            payload = await upstream.read()
            return web.Response(
                status=upstream.status, body=payload, headers={"Content-Type": content_type}
            )
        response = web.StreamResponse(
            status=upstream.status, headers={"Content-Type": content_type}
        )
        try:
            await response.prepare(request)
            content = upstream.content
            while chunk := await content.readany():
                if content.is_eof():
                    # The read that ends the body goes out with the end of ours: one write.
                    break
                await response.write(chunk)
            await response.write_eof(chunk)
        except ConnectionResetError:
            # wrk drops its connections mid-stream when its time is up
            pass
        return response


async def relay_http1(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {
        "content-type": request.headers.get("Content-Type", "application/json"),
        "authorization": "Bearer sk-bench",
    }
    t = target(request.app[UPSTREAM] + request.path, False)
    conn = await request.app[POOL].connection(t)
    ex = conn.start(request_head("POST", t, headers, len(body)), body, head_only=False)
    try:
        while ex.headers is None:
            if ex.error is not None:
                raise ex.error
            await ex.wait()
        content_type = ex.headers.get("Content-Type", "application/octet-stream")
        if not content_type.startswith("text/event-stream"):
            while not ex.complete:
                await ex.wait()
            return web.Response(
                status=ex.status, body=ex.take(), headers={"Content-Type": content_type}
            )
        response = web.StreamResponse(status=ex.status, headers={"Content-Type": content_type})
        await response.prepare(request)
        while True:
            if ex.error is not None:
                raise ex.error
            if not ex.chunks and not ex.complete:
                await ex.wait()
                continue
            chunk = ex.take()
            conn.took(ex)
            if ex.complete:
                # The read that ends the body goes out with the end of ours: one write.
                await response.write_eof(chunk)
                return response
            await response.write(chunk)
    except ConnectionResetError:
        return web.Response(status=499)  # wrk drops its connections mid-stream at its end
    finally:
        conn.abandon(ex)


def create_app(upstream: str, max_connections: int, client: str = "aiohttp") -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    if client == "http1":
        app[POOL] = Pool(max_connections, connect_timeout_s=5)
        app.router.add_post("/{tail:.*}", relay_http1)
        return app

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = TCPConnector(limit=max_connections)
        async with ClientSession(connector=connector, auto_decompress=False) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", relay)
    return app


async def serve(host: str, port: int, upstream: str, max_connections: int, client: str) -> None:
    await serve_app(create_app(upstream, max_connections, client), host, port)


async def serve_app(app: web.Application, host: str, port: int) -> None:
    """Serves `app` until SIGTERM or SIGINT (the bench's aiohttp processes)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="bench bare relay (baseline)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="upstream root, e.g. http://127.0.0.1:9")
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument("--client", choices=("aiohttp", "http1"), default="aiohttp")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port, args.upstream, args.max_connections, args.client))


if __name__ == "__main__":
    main()
