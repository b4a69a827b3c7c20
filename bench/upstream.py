"""Fake OpenAI-compatible upstream for the benchmark.

A raw asyncio protocol rather than an aiohttp app: it must be several times faster than the
proxies under test, or the bench would measure the upstream. Paths:

  /v1/chat/completions        JSON completion, or a 50-chunk SSE stream when the body asks for one;
                              a body naming the model "bench-slow" gets the stream dripped one
                              chunk per --drip-ms (the memory check)
  /fail/v1/chat/completions   always 503 (the primary of the fallback scenarios)
  /cut/v1/chat/completions    half a stream, cleanly framed (to check the checker)
  /gap/v1/chat/completions    a whole stream but for one chunk in the middle (likewise)
  /v1/responses               a Responses stream (named events: response.created, 50
                              response.output_text.delta, response.completed), always streamed
  /cut/v1/responses           half of that stream (to check the checker)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import orjson

STREAM_CHUNKS = 50
MODEL = "bench-model"
SLOW_MODEL = "bench-slow"
_SLOW_MARK = SLOW_MODEL.encode()

_COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
)
_OVERLOADED = orjson.dumps(
    {"error": {"message": "bench: overloaded", "type": "server_error", "code": None}}
)
_NOT_FOUND = orjson.dumps({"error": {"message": "bench: no such path", "type": "not_found"}})


def _chunk_event(index: int) -> bytes:
    last = index == STREAM_CHUNKS - 1
    delta: dict[str, str] = {} if last else {"content": f"w{index} "}
    if index == 0:
        delta["role"] = "assistant"
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _named_event(data: dict[str, object]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (str(data["type"]).encode(), orjson.dumps(data))


def _responses_events() -> list[bytes]:
    """A Responses stream in the native shape: no [DONE], the end is response.completed."""
    text = "".join(f"w{i} " for i in range(STREAM_CHUNKS))
    base = {"id": "resp_bench", "object": "response", "created_at": 1700000000, "model": MODEL}
    deltas = [
        {
            "type": "response.output_text.delta",
            "sequence_number": i + 1,
            "item_id": "msg_bench",
            "output_index": 0,
            "content_index": 0,
            "delta": f"w{i} ",
        }
        for i in range(STREAM_CHUNKS)
    ]
    created = {"type": "response.created", "sequence_number": 0}
    created["response"] = {**base, "status": "in_progress", "output": []}
    message = {
        "type": "message",
        "id": "msg_bench",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    usage = {"input_tokens": 12, "output_tokens": STREAM_CHUNKS, "total_tokens": 12 + STREAM_CHUNKS}
    completed = {"type": "response.completed", "sequence_number": STREAM_CHUNKS + 1}
    completed["response"] = {**base, "status": "completed", "output": [message], "usage": usage}
    return [_named_event(e) for e in (created, *deltas, completed)]


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


# The fast stream goes out in one write: a fake that made 50 syscalls per stream would be slower
# than the proxies it is meant to feed, and the proxies still see 50 events to relay (the slow
# stream is the one that arrives event by event). Framing "stream" (the default) sends the whole
# stream as one HTTP chunk, as an nginx or a buffered server would send a body written at once;
# "events" makes each SSE event its own HTTP chunk, which costs any aiohttp client about 50 µs
# more per stream to de-chunk (51 parser callbacks and buffer appends instead of one): a cost of
# the upstream's framing, the same for every proxy, that would dilute the ratios (issue 15).
_EVENT_BYTES = [_chunk_event(i) for i in range(STREAM_CHUNKS)]
_DONE_EVENT = b"data: [DONE]\n\n"
_END = b"0\r\n\r\n"
_EVENTS = [_http_chunk(e) for e in _EVENT_BYTES]
_DONE = _http_chunk(_DONE_EVENT) + _END
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
FRAMINGS = ("stream", "events")


def _response(events: list[bytes], framing: str) -> bytes:
    if framing == "events":
        return _SSE_HEAD + b"".join(map(_http_chunk, events)) + _END
    return _SSE_HEAD + _http_chunk(b"".join(events)) + _END


_RESPONSES_EVENTS = _responses_events()


def _streams(framing: str) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """(intact, cut in half, missing one chunk, Responses intact, Responses cut), each a whole
    HTTP response."""
    intact = [*_EVENT_BYTES, _DONE_EVENT]
    cut = _EVENT_BYTES[: STREAM_CHUNKS // 2]
    gap = [*_EVENT_BYTES[:20], *_EVENT_BYTES[21:], _DONE_EVENT]
    responses_cut = _RESPONSES_EVENTS[: STREAM_CHUNKS // 2]
    return (
        _response(intact, framing),
        _response(cut, framing),
        _response(gap, framing),
        _response(_RESPONSES_EVENTS, framing),
        _response(responses_cut, framing),
    )


def _fixed(status: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % (status, len(body)) + body


_JSON_RESPONSE = _fixed(b"200 OK", _COMPLETION)
_FAIL_RESPONSE = _fixed(b"503 Service Unavailable", _OVERLOADED)
_NOT_FOUND_RESPONSE = _fixed(b"404 Not Found", _NOT_FOUND)


def _wants_stream(body: bytes) -> bool:
    # A substring test, not a parse: the bench controls every request body.
    return b'"stream":true' in body or b'"stream": true' in body


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    body = bytearray()
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            return None if trailer_end < 0 else (bytes(body), trailer_end + 2)
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, drip_s: float, framing: str = "stream") -> None:
        self._drip_s = drip_s
        self._stream, self._cut, self._gap, self._responses, self._responses_cut = _streams(framing)
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None and self._timer is None:
            request = self._next_request()
            if request is None:
                return
            self._respond(*request)

    def _next_request(self) -> tuple[bytes, bytes] | None:
        head_end = self._buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        lines = bytes(self._buf[:head_end]).split(b"\r\n")
        target = lines[0].split(b" ", 2)[1]
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self._close_after = b"close" in value.lower()
        start = head_end + 4
        if chunked:
            parsed = _dechunk(self._buf, start)
            if parsed is None:
                return None
            body, end = parsed
        else:
            if len(self._buf) < start + length:
                return None
            body, end = bytes(self._buf[start : start + length]), start + length
        del self._buf[:end]
        return target, body

    def _respond(self, target: bytes, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        path = target.split(b"?", 1)[0]
        if path == b"/v1/chat/completions":
            if _SLOW_MARK in body:
                transport.write(_SSE_HEAD)
                self._drip(0)
                return
            if _wants_stream(body):
                transport.write(self._stream)
            else:
                transport.write(_JSON_RESPONSE)
        elif path == b"/v1/responses":
            transport.write(self._responses)
        elif path == b"/cut/v1/responses":
            transport.write(self._responses_cut)
        elif path == b"/cut/v1/chat/completions":
            transport.write(self._cut)
        elif path == b"/gap/v1/chat/completions":
            transport.write(self._gap)
        elif path == b"/fail/v1/chat/completions":
            transport.write(_FAIL_RESPONSE)
        else:
            transport.write(_NOT_FOUND_RESPONSE)
        self._finish()

    def _drip(self, index: int) -> None:
        transport = self._transport
        if transport is None:
            return
        if index == STREAM_CHUNKS:
            transport.write(_DONE)
            self._timer = None
            self._finish()
            if self._buf:
                self.data_received(b"")
            return
        transport.write(_EVENTS[index])
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._drip_s, self._drip, index + 1)

    def _finish(self) -> None:
        if self._close_after and self._transport is not None:
            self._transport.close()


async def serve(host: str, port: int, drip_s: float, framing: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(drip_s, framing), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="bench fake upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--drip-ms", type=float, default=100.0)
    parser.add_argument("--framing", choices=FRAMINGS, default="stream")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port, args.drip_ms / 1000.0, args.framing))


if __name__ == "__main__":
    main()
