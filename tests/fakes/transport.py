"""A fake transport for the chain (no upstream server), as httpx's MockTransport is used: what
`create_app(upstream=)` is given in place of the HTTP one, answering each backend from its own
queue and recording what was sent and whether each response was closed. And `rehomed`: the real
HTTP transport with a public host answered by a loopback fake."""

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from multidict import CIMultiDict

from sidecar.call import UpstreamRequest
from sidecar.settings import Backend
from sidecar.upstream import HttpUpstream, Upstream, UpstreamResponse

ANSWER = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {}}]}


@dataclass
class FakeResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=CIMultiDict)
    closed: bool = False
    finished: bool = False

    @property
    def content_type(self) -> str:
        return "application/json"

    async def read(self) -> bytes:
        return self.body

    async def chunk(self) -> Any:
        body, self.body = self.body, b""
        return body

    def close(self) -> None:
        self.closed = True

    def finish(self) -> None:
        self.finished = True


class FakeTransport:
    """Answers each backend's requests from its own queue; an empty queue answers 200."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[FakeResponse]] = {}
        self.sent: list[tuple[str, UpstreamRequest]] = []
        self.responses: list[FakeResponse] = []

    def __call__(self, backend: Backend) -> "FakeUpstream":
        return FakeUpstream(self, backend.name)


@dataclass
class FakeUpstream:
    transport: FakeTransport
    name: str

    async def send(self, req: UpstreamRequest) -> FakeResponse:
        self.transport.sent.append((self.name, req))
        queue = self.transport.queues.get(self.name)
        resp = queue.popleft() if queue else FakeResponse(200, orjson.dumps(ANSWER))
        self.transport.responses.append(resp)
        return resp

    async def close(self) -> None:
        return None


@dataclass
class Rehomed:
    """The HTTP transport, with requests under `public` sent under `local` instead."""

    http: HttpUpstream
    public: str
    local: str

    async def send(self, req: UpstreamRequest) -> UpstreamResponse:
        if req.url.startswith(self.public):
            req = replace(req, url=self.local + req.url[len(self.public) :])
        return await self.http.send(req)

    async def close(self) -> None:
        await self.http.close()


def rehomed(public: str, local: str) -> Callable[[Backend], Upstream]:
    """For `create_app(upstream=)`: a backend keeps its public BASE_URL (api.openai.com, say),
    so every rule sees that host, while its requests reach a loopback fake at `local`."""
    return lambda backend: Rehomed(HttpUpstream(backend), public, local)
