"""Pass-through streams (`/v1/…` paths the sidecar does not interpret): bytes, unread.

The first byte commits; a clean end of the upstream body is a complete answer, since nothing in
an unknown protocol says otherwise. A cut after commit still ends with an explicit error event,
in the generic SSE form (`event: error`) that OpenAI's Responses API and its SDK read.
"""

from typing import Any

import orjson

from sidecar.backends.base import StreamAdapter, StreamStep, Usage


class PassthroughStream(StreamAdapter):
    __slots__ = ("resume", "text", "text_only", "usage")

    def __init__(self) -> None:
        self.usage = Usage()
        self.text: list[str] = []
        self.text_only = False  # never recovered: its content is not known to be text
        self.resume = False

    def feed(self, data: Any) -> StreamStep:
        return StreamStep(out=data, content=bool(data))

    def end(self) -> StreamStep:
        return StreamStep(done=True)

    def terminal_error(self, message: str, error_type: str) -> bytes:
        error = {"type": "error", "error": {"type": error_type, "message": message}}
        return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"

    def terminator(self) -> bytes:
        return b""
