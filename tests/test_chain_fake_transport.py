"""The chain and its circuits on a fake transport and a fake clock (no upstream server): the
`Upstream` protocol and `create_app(upstream=, clock=)`, as httpx's MockTransport is used.
The wire itself is the loopback tests' business."""

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from conftest import FakeClock, SidecarFactory, chat, post
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


ENV = {
    "SIDECAR_BACKENDS": "a,b",
    "A_BASE_URL": "http://a.invalid/v1",
    "B_BASE_URL": "http://b.invalid/v1",
    "SIDECAR_CIRCUIT_FAILURES": "1",
    "SIDECAR_CIRCUIT_COOLDOWN_S": "10",
}


def overloaded() -> FakeResponse:
    return FakeResponse(503, b'{"error": {"message": "busy"}}')


async def test_a_503_falls_back_and_every_response_is_closed_once_read(
    sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    transport = FakeTransport()
    transport.queues["a"] = deque([overloaded()])
    sc = await sidecar(ENV, upstream=transport, clock=FakeClock())
    r = await post(http, sc.url, chat())
    assert (r.status, r.headers["x-sidecar-backend"]) == (200, "b")
    assert r.headers["x-sidecar-failures"] == "a=overloaded"
    assert [name for name, _ in transport.sent] == ["a", "b"]
    assert all(resp.closed for resp in transport.responses)


async def test_an_open_circuit_skips_the_backend_until_the_clock_passes_its_cooldown(
    sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    transport, clock = FakeTransport(), FakeClock()
    transport.queues["a"] = deque([overloaded()])
    sc = await sidecar(ENV, upstream=transport, clock=clock)
    await post(http, sc.url, chat())
    skipped = await post(http, sc.url, chat())
    assert skipped.headers["x-sidecar-failures"] == "a=circuit_open"
    clock.advance(10 * 1.2)  # the longest jittered cooldown
    probe = await post(http, sc.url, chat())
    assert probe.headers["x-sidecar-backend"] == "a"
    assert [name for name, _ in transport.sent] == ["a", "b", "b", "a"]


async def test_each_attempt_carries_the_backends_own_credential_and_the_request_id(
    sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    transport = FakeTransport()
    sc = await sidecar({**ENV, "A_API_KEY": "sk-a-0123456789"}, upstream=transport)
    await post(http, sc.url, chat(), headers={"x-request-id": "rid-7", "authorization": "x"})
    _, req = transport.sent[0]
    assert req.headers["authorization"] == "Bearer sk-a-0123456789"
    assert req.headers["x-request-id"] == "rid-7"
    assert req.url == "http://a.invalid/v1/chat/completions"
