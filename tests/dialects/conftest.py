"""Fixtures for the dialect tests that need a real client reading real bytes."""

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

Serve = Callable[[bytes], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serves the given bytes as the answer to POST /v1/responses, as an upstream would."""
    runners: list[web.AppRunner] = []

    async def start(body: bytes) -> str:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=body, content_type="text/event-stream")

        app = web.Application()
        app.router.add_post("/v1/responses", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()
