"""What every backend kind provides to the chain: pure request building and answer reading.

A backend never does I/O. It turns a `Call` into an `UpstreamRequest`, a complete upstream body
into the caller's dialect, and an upstream byte stream into caller events plus the signals the
commit point needs (`StreamStep`).
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.call import Call, Route
from sidecar.failure import FailureClass
from sidecar.settings import Backend


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    # Bedrock's transport needs the parsed request; the HTTP transport ignores it.
    payload: Any = None
    # The URL is already percent-encoded as it must go out (pass-through: the caller's bytes).
    encoded: bool = False


@dataclass(slots=True)
class Usage:
    prompt: int = 0
    completion: int = 0


@dataclass(slots=True)
class Answer:
    """A complete 2xx answer, already in the caller's dialect."""

    body: bytes
    usage: Usage = field(default_factory=Usage)
    content_type: str = "application/json"


class InvalidResponse(Exception):
    """A 2xx upstream body that cannot be read."""


def json_object_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidResponse("upstream answered 2xx with a body that is not JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidResponse("upstream answered 2xx with a body that is not a JSON object")
    return parsed


class Untranslatable(Exception):
    """The request cannot be expressed for this backend without losing meaning (400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class StreamStep:
    out: bytes = b""
    # A content event was seen: the commit point (CONTRACT §5).
    content: bool = False
    # The upstream said how the answer ended (finish_reason / stop_reason).
    finished: bool = False
    # The upstream's terminator ([DONE] / message_stop) was seen.
    done: bool = False
    # An in-band error event, or a malformed one: (class, caller-dialect error body).
    error: tuple[FailureClass, bytes] | None = None


class StreamAdapter(ABC):
    """Reads one upstream stream and writes the caller's dialect."""

    usage: Usage
    # The assistant text relayed so far, and whether the stream is plain text in one choice:
    # what stream recovery needs to continue it elsewhere.
    text: list[str]
    text_only: bool
    # Set on a stream-recovery continuation: the caller's stream is already open, so the
    # adapter drops its opening events (OpenAI's role chunk; Anthropic's message_start and
    # the first content_block_start) and relays only the continued content.
    resume: bool = False

    @abstractmethod
    def feed(self, data: Any) -> StreamStep: ...

    @abstractmethod
    def end(self) -> StreamStep: ...

    @abstractmethod
    def terminal_error(self, message: str, error_type: str) -> bytes: ...

    @abstractmethod
    def terminator(self) -> bytes:
        """What closes a stream that finished but lacked its terminator."""


class BackendAdapter(ABC):
    routes: frozenset[Route] = frozenset()

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.kind = backend.settings.kind

    def supports(self, route: Route) -> bool:
        return route in self.routes

    def model_for(self, requested: str | None) -> str | None:
        s = self.backend.settings
        if s.model:
            return s.model
        if requested is not None:
            return self.backend.model_map.get(requested, requested)
        return None

    @abstractmethod
    def build(self, call: Call) -> UpstreamRequest: ...

    @abstractmethod
    def answer(self, call: Call, body: bytes) -> Answer: ...

    @abstractmethod
    def error_body(self, call: Call, status: int, body: bytes) -> bytes:
        """An upstream error body, in the caller's dialect."""

    @abstractmethod
    def stream(self, call: Call) -> StreamAdapter: ...

    def response_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {}
