"""What every fake upstream is: an app on 127.0.0.1, a queue of scripts, a record of requests.

Each request takes the next script from the queue (or the default one). The runner cancels a
handler whose client disconnects (`handler_cancellation`), as a real upstream's server would, so
tests can see the sidecar hang up.
"""

import asyncio
from collections import deque
from typing import Any, Generic, Protocol, Self, TypeVar

import orjson
from aiohttp import web


class Scripted(Protocol):
    delay_s: float


S = TypeVar("S", bound=Scripted)
R = TypeVar("R")


class JsonBody:
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


def lower_headers(request: web.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


class Loopback(Generic[S, R]):
    def __init__(self, default: S) -> None:
        self.default = default
        self.queue: deque[S] = deque()
        self.seen: list[R] = []
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *scripts: S) -> None:
        self.queue.extend(scripts)

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def take(self, seen: R) -> S:
        """Record a request and wait out its script's delay: the script it is answered by."""
        self.seen.append(seen)
        s = self.queue.popleft() if self.queue else self.default
        if s.delay_s:
            await asyncio.sleep(s.delay_s)
        return s
