"""aiohttp's low-level server, for both listeners, with JSON answers to what it rejects itself.

aiohttp answers a request head it cannot parse (a bare CR or LF in a header, a NUL byte, a line
over 8190 bytes, `Content-Length` with `Transfer-Encoding`, `Content-Length: abc`) with plain
text that quotes the offending line: the caller's `Authorization` value included, and its log
line quotes it too. Here that answer is an OpenAI-shaped JSON error with a fixed message (no
byte of the request is echoed, in the answer or the log) and the connection is closed, since
what follows the bad head cannot be trusted to start a request.
"""

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler

from sidecar.dialects import openai

log = logging.getLogger("sidecar.listener")


def _reason(exc: BaseException | None) -> tuple[str, str]:
    if isinstance(exc, LineTooLong):
        return "the request line or a header is too long", "header_too_long"
    if isinstance(exc, BadHttpMethod):
        return "malformed request line", "bad_request"
    return "malformed HTTP request head", "bad_request"


class _JsonErrors(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("a response is already under way")
        if status >= 500:
            text, code = "internal error", "internal_error"
            log.error("internal error", exc_info=exc)
        else:
            text, code = _reason(exc)
            # The exception's own text quotes the bad line: only its type is logged.
            log.debug("rejected a request head: %s", type(exc).__name__)
        body = openai.error_body(text, status=status, code=code)
        resp = web.Response(status=status, body=body, content_type="application/json")
        resp.force_close()
        return resp


class Server(web.Server):
    """`web.Server` whose connections answer their own errors as JSON."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        # What RequestHandler takes; Server consumes the rest itself.
        self._protocol_kwargs = {
            k: v
            for k, v in kwargs.items()
            if k not in ("request_factory", "handler_cancellation", "loop")
        }

    def __call__(self) -> RequestHandler:
        return _JsonErrors(self, loop=asyncio.get_running_loop(), **self._protocol_kwargs)
