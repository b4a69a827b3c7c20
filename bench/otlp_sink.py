"""A loopback OTLP/HTTP trace sink: the collector the tracing-on sidecar exports to.

Answers every `POST /v1/traces` with 200 and an empty protobuf body (an ExportTraceServiceResponse
with nothing rejected) without decoding it; `GET /stats` says how many exports and bytes arrived,
so the report can show that spans were sent at all.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from bench.relay import serve_app

EXPORTS = web.AppKey("exports", list[int])


async def traces(request: web.Request) -> web.Response:
    request.app[EXPORTS].append(len(await request.read()))
    return web.Response(body=b"", content_type="application/x-protobuf")


async def stats(request: web.Request) -> web.Response:
    sizes = request.app[EXPORTS]
    return web.json_response({"exports": len(sizes), "bytes": sum(sizes)})


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[EXPORTS] = []
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    return app


async def serve(host: str, port: int) -> None:
    await serve_app(create_app(), host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description="bench OTLP/HTTP trace sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
