"""Pass-through streams (`/v1/…` paths the sidecar does not interpret): bytes, unread.

The first byte commits; a clean end of the upstream body is a complete answer, since nothing in
an unknown protocol says otherwise. A cut after commit still ends with an explicit error event,
in the generic SSE form (`event: error`) that OpenAI's Responses API and its SDK read.
"""

from typing import Any

import orjson

from sidecar.call import StreamAdapter, StreamStep


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
