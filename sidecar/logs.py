"""Logging set-up: one JSON (or key=value) line per record, scrubbed of secrets."""

import logging
import sys
import time
from typing import Any

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
