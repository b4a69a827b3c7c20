"""The normalised inbound request that routes hand to a chain, and the shapes every layer shares.

`Call` goes in; an `UpstreamRequest` goes out to a backend; a complete answer comes back as an
`Answer`, a stream as `StreamStep`s from a `StreamAdapter`. These sit here, below backends,
dialects and upstreams alike, so that no lower layer imports a higher one for a type.
"""

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar.failure import FailureClass
from sidecar.tracing import NO_REQUEST_SPAN, RequestSpan


class Route(enum.StrEnum):
    CHAT_COMPLETIONS = "chat_completions"
    MESSAGES = "messages"
    RESPONSES = "responses"
    COUNT_TOKENS = "count_tokens"
    EMBEDDINGS = "embeddings"
    MODELS = "models"
    PASSTHROUGH = "passthrough"
    OTHER = "other"


class Dialect(enum.StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


@dataclass(slots=True)
class Call:
    route: Route
    dialect: Dialect
    method: str
    # The path after `/v1/` and the raw query string, for pass-through.
    path: str
    query: str
    raw: bytes
    # Parsed JSON for the routes the sidecar understands; None for pass-through.
    body: dict[str, Any] | None
    stream: bool
    model: str | None
    # Caller headers that may go upstream (already filtered), lower-case names.
    headers: Mapping[str, str]
    request_id: str
    chain: str
    # A stream-recovery continuation of a Responses stream: where the caller's stream stands
    # (`sidecar.dialects.responses_response.Cursor`), so that the continuation goes on in it.
    resume_from: Any = None
    # This request's SERVER span; each attempt opens its CLIENT span under it.
    trace: RequestSpan = NO_REQUEST_SPAN

    @property
    def include_usage(self) -> bool:
        opts = self.body.get("stream_options") if self.body else None
        return isinstance(opts, dict) and bool(opts.get("include_usage"))


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
    # Parts of `prompt` (README "Metrics reference"): read from, and written to, the prompt cache.
    cache_read: int = 0
    cache_write: int = 0
    # Part of `completion`: the model's hidden reasoning.
    reasoning: int = 0


@dataclass(slots=True)
class Answer:
    """A complete 2xx answer, already in the caller's dialect."""

    body: bytes
    usage: Usage = field(default_factory=Usage)
    content_type: str = "application/json"
    # For traces: the model that answered, and why the answer ended.
    model: str | None = None
    finish_reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class StreamStep:
    out: bytes = b""
    # A content event was seen: the commit point (README "How a request travels").
    content: bool = False
    # The upstream said how the answer ended (finish_reason / stop_reason).
    finished: bool = False
    # The upstream's terminator ([DONE] / message_stop) was seen.
    done: bool = False
    # An in-band error event, or a malformed one: (class, caller-dialect error body).
    error: tuple[FailureClass, bytes] | None = None
    # The wait that error event asked for, where the kind reads one in it (as
    # `BackendAdapter.retry_after_s` does in an error answer); None when it did not say.
    retry_after_s: float | None = None


class StreamAdapter(ABC):
    """Reads one upstream stream and writes the caller's dialect."""

    __slots__ = ("finish_reasons", "resume", "text", "text_only", "usage")

    def __init__(self, *, text_only: bool = True) -> None:
        self.usage = Usage()
        # The assistant text relayed so far, and whether the stream is plain text in one
        # choice: what stream recovery needs to continue it elsewhere.
        self.text: list[str] = []
        self.text_only = text_only
        # Set on a stream-recovery continuation: the caller's stream is already open, so the
        # adapter drops its opening events (OpenAI's role chunk; Anthropic's message_start and
        # the first content_block_start) and relays only the continued content.
        self.resume = False
        # How each choice ended, as the upstream said it (traces).
        self.finish_reasons: list[str] = []

    @abstractmethod
    def feed(self, data: Any) -> StreamStep: ...

    @abstractmethod
    def end(self) -> StreamStep: ...

    @abstractmethod
    def terminal_error(self, message: str, error_type: str) -> bytes: ...

    @abstractmethod
    def terminator(self) -> bytes:
        """What closes a stream that finished but lacked its terminator."""

    def cursor(self) -> Any:
        """Where the caller's stream stands, for a recovery continuation that must go on in it
        (Responses: the response id, sequence numbers and open message); None elsewhere."""
        return None
