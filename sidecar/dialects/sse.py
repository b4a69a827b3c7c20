"""Incremental Server-Sent Events decoding (WHATWG HTML §9.2.6), tolerant of any byte split.

Lines end with CRLF, LF or CR; `data:` may omit its space; comment lines (`:`) are ignored; an
event is dispatched at a blank line. A CR at the end of a chunk is held back until the next byte
shows whether it starts a CRLF.
"""

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEDecoder:
    __slots__ = ("_buf", "_data", "_event", "_has_data")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._has_data = False

    @property
    def idle(self) -> bool:
        """Nothing buffered: the next byte starts a new line of a new event."""
        return not self._buf and not self._has_data and self._event is None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        events: list[SSEEvent] = []
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                if cr + 1 == n:
                    break
                end, nxt = cr, cr + 2 if buf[cr + 1] == 10 else cr + 1
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            self._line(buf[start:end].decode("utf-8", "replace"), events)
            start = nxt
        self._buf = buf[start:]
        return events

    def flush(self) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._buf:
            line, self._buf = self._buf.rstrip(b"\r"), b""
            self._line(line.decode("utf-8", "replace"), events)
        self._line("", events)
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            if self._has_data:
                events.append(SSEEvent(self._event, "\n".join(self._data)))
            self._event, self._data, self._has_data = None, [], False
            return
        if line[0] == ":":
            return
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "event":
            self._event = value


def valid_utf8(data: bytes) -> bool:
    # The stream fast paths relay bytes msgspec has not checked (it skips the fields it does not
    # read), where the SSE decoder would replace invalid UTF-8.
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def json_object(data: str | bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
