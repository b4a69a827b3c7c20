"""The bare relay: the in-run baseline that llm-sidecar is judged against.

Read the body, forward it with one pooled ClientSession, relay the answer as bytes (streams chunk
by chunk, one write per upstream read, the last read written with the end of the body). No
parsing, metrics, logging or fallback: the cost floor of an aiohttp proxy.

`--client http1` is the same relay on the sidecar's own HTTP transport (`HttpUpstream` on
`sidecar.http1`) instead of aiohttp's `ClientSession`: what the sidecar's parsing, fallback and
metrics cost on top of its transport, measured against a relay that has the same transport.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator

from aiohttp import ClientSession, TCPConnector, web

from sidecar.call import UpstreamRequest
from sidecar.config import load_config
from sidecar.upstream import HttpUpstream

SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)
HTTP1 = web.AppKey("http1", HttpUpstream)


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
    url = request.app[UPSTREAM] + request.path
    upstream = await request.app[HTTP1].send(UpstreamRequest("POST", url, headers, body))
    try:
        content_type = upstream.headers.get("Content-Type", "application/octet-stream")
        if not content_type.startswith("text/event-stream"):
            payload = await upstream.read()
            upstream.finish()
            return web.Response(
                status=upstream.status, body=payload, headers={"Content-Type": content_type}
            )
        response = web.StreamResponse(
            status=upstream.status, headers={"Content-Type": content_type}
        )
        await response.prepare(request)
        # One read ahead, so that the read that ends the body goes out with the end of ours.
        chunk = await upstream.chunk()
        while chunk and (more := await upstream.chunk()):
            await response.write(chunk)
            chunk = more
        await response.write_eof(chunk)
        upstream.finish()
        return response
    except ConnectionResetError:
        upstream.close()
        return web.Response(status=499)  # wrk drops its connections mid-stream at its end
    except BaseException:
        upstream.close()
        raise


def create_app(upstream: str, max_connections: int, client: str = "aiohttp") -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    if client == "http1":
        env = {"SIDECAR_BACKENDS": "relay", "RELAY_BASE_URL": upstream}
        env["RELAY_MAX_CONNECTIONS"] = str(max_connections)
        app[HTTP1] = HttpUpstream(load_config(env).chains["default"][0])

        async def close(app: web.Application) -> None:
            await app[HTTP1].close()

        app.on_cleanup.append(close)
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
