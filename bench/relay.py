"""The bare relay: the in-run baseline that llm-sidecar is judged against.

Read the body, forward it with one pooled ClientSession, relay the answer as bytes (streams chunk
by chunk, one write per upstream read, the last read written with the end of the body). No
parsing, metrics, logging or fallback: the cost floor of an aiohttp proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator

from aiohttp import ClientSession, TCPConnector, web

SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)


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


def create_app(upstream: str, max_connections: int) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = TCPConnector(limit=max_connections)
        async with ClientSession(connector=connector, auto_decompress=False) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", relay)
    return app


async def serve(host: str, port: int, upstream: str, max_connections: int) -> None:
    await serve_app(create_app(upstream, max_connections), host, port)


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
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port, args.upstream, args.max_connections))


if __name__ == "__main__":
    main()
