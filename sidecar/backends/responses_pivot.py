"""Responses callers on translated backends: the pivot's chat chunks written as Responses events.

Any `Source` of the pivot (OpenAI chat SSE, Anthropic SSE, Bedrock ConverseStream) composes with
`ResponsesSink` into a `PivotStream`, so each vendor's stream mapping exists once, to chat, and
Responses is one more writer of chat chunks.
"""

from typing import Any

from sidecar.backends.pivot import InBandError, Sink
from sidecar.dialects.responses_request import ToolNames
from sidecar.dialects.responses_response import Cursor, ResponsesEvents


class ResponsesSink(Sink):
    def __init__(self, *, request: dict[str, Any], names: ToolNames, model: str) -> None:
        self.events = ResponsesEvents(request=request, names=names, model=model)

    def write(self, chunk: dict[str, Any]) -> bytes:
        return self._closing(self.events.feed(chunk))

    def close(self) -> bytes:
        return self._closing(self.events.close())

    def error(self, e: InBandError) -> bytes:
        return self._closing(self.events.error_from_envelope(e.envelope))

    def terminal_error(self, message: str, error_type: str) -> bytes:
        return self._closing(self.events.error(error_type, message or error_type))

    def _closing(self, out: bytes) -> bytes:
        self.closed = self.events.closed
        return out

    def cursor(self) -> Cursor:
        return self.events.cursor()

    def resume_from(self, cursor: Cursor) -> None:
        self.events.resume_from(cursor)
