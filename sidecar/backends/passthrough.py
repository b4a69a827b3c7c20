"""Pass-through: the `/v1/…` paths the sidecar does not interpret, a capability of the kinds that
speak OpenAI's API (`openai`, `azure`), which route those calls here.

Bytes go through both ways, unread: the caller's body and query, every header but the ones the
header table keeps back (`sidecar.headers`), the upstream's answer with its own content type.
A `text/event-stream` answer is relayed as a stream: the first byte commits; a clean end of the
upstream body is a complete answer, since nothing in an unknown protocol says otherwise. A cut
after commit still ends with an explicit error event, in the generic SSE form (`event: error`)
that OpenAI's Responses API and its SDK read. Such a stream is never recovered.
"""

from collections.abc import Mapping
from typing import Any

import orjson

from sidecar import headers as h
from sidecar.call import Answer, Call, StreamAdapter, StreamStep, UpstreamRequest

# aiohttp's own reading of an answer without a content type.
_UNTYPED = "application/octet-stream"


def build(call: Call, url: str, static: Mapping[str, str]) -> UpstreamRequest:
    headers = dict(call.headers)
    headers.update(static)
    headers["x-request-id"] = call.request_id
    # The body is the caller's, whatever it is; the URL carries the caller's own encoding.
    return UpstreamRequest(call.method, url, headers, call.raw, encoded=True)


def answer(body: bytes) -> Answer:
    return Answer(body, content_type=_UNTYPED)


def reads_stream(content_type: str) -> bool:
    return content_type == "text/event-stream"


def response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream's headers, with its content type (the caller gets the answer as it came)."""
    out = h.passed_through(headers)
    out["content-type"] = out.get("content-type") or _UNTYPED
    return out


class PassthroughStream(StreamAdapter):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(text_only=False)  # never recovered: its content is not known to be text

    def feed(self, data: Any) -> StreamStep:
        return StreamStep(out=data, content=bool(data))

    def end(self) -> StreamStep:
        return StreamStep(done=True)

    def terminal_error(self, message: str, error_type: str) -> bytes:
        error = {"type": "error", "error": {"type": error_type, "message": message}}
        return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"

    def terminator(self) -> bytes:
        return b""
