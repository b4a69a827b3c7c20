"""A fake transport for the chain (no upstream server), as httpx's MockTransport is used: what
`create_app(upstream=)` is given in place of the HTTP one, answering each backend from its own
queue and recording what was sent and whether each response was closed."""

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from multidict import CIMultiDict

from sidecar.call import UpstreamRequest
from sidecar.settings import Backend

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
