"""Logging set-up: one JSON (or key=value) line per record, scrubbed of secrets."""

import asyncio
import logging
import sys
import time
from typing import Any, BinaryIO

import orjson

from sidecar.redact import Redactor


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str, redactor: Redactor) -> None:
        super().__init__()
        self._json = fmt == "json"
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            fields.update(extra)
        if record.exc_info and record.levelno >= logging.ERROR:
            fields["error"] = repr(record.exc_info[1])
        if self._json:
            line = orjson.dumps(fields, default=str).decode()
        else:
            line = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        return self._redactor.text(line)


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v if v and " " not in v else orjson.dumps(v).decode()
    return orjson.dumps(v, default=str).decode()


def configure(level: str, fmt: str, redactor: Redactor) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt, redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log would be a second line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class AccessLog:
    """One line per request, written without the logging machinery: it is on every request's
    path. Lines are buffered and flushed at least every `FLUSH_S` (and at shutdown), so a
    request costs a dict, one orjson call and one redaction pass, not a write syscall."""

    FLUSH_S = 0.25
    _LIMIT = 64 * 1024

    def __init__(self, stream: BinaryIO | None, level: str, fmt: str, redactor: Redactor) -> None:
        self.enabled = logging.getLevelName(level) <= logging.INFO
        self._stream = stream
        self._json = fmt == "json"
        self._redact = redactor.bytes
        self._buf = bytearray()
        self._second = -1
        self._stamp = ""

    def write(self, fields: dict[str, Any]) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        head = {"ts": f"{self._stamp}.{int(now * 1000) % 1000:03d}Z", "level": "info"}
        record = {**head, "logger": "sidecar.access", "msg": "request", **fields}
        if self._json:
            line = orjson.dumps(record)
        else:
            line = " ".join(f"{k}={_text(v)}" for k, v in record.items()).encode()
        self._buf += self._redact(line) + b"\n"
        if len(self._buf) >= self._LIMIT:
            self.flush()

    def flush(self) -> None:
        if self._buf and self._stream is not None:
            self._stream.write(self._buf)
            self._stream.flush()
        self._buf.clear()

    async def flusher(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.FLUSH_S)
                self.flush()
        finally:
            self.flush()
