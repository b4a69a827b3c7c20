"""A scripted Anthropic Messages upstream (`POST /v1/messages`) on loopback.

Each request takes the next `Script` from the queue (or the default): a text or tool_use answer,
as JSON or as SSE with `event:` lines (the anthropic SDK drops events without one), an error status
with an Anthropic error body (`overloaded(...)`, `rate_limited(...)`), an error event before any
content, or a stream cut after some deltas. Every request is recorded with its headers and body.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from fakes.loopback import JsonBody, Loopback, lower_headers

JSON = dict[str, Any]

SIGNATURE = "sig-anthropic-fake"


@dataclass
class Script:
    status: int = 200
    text: str = "Hello from the fake Anthropic."
    # A tool call answered instead of text: (name, input).
    tool: tuple[str, JSON] | None = None
    error_type: str = "api_error"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    # Streams: how they end after `after` content deltas.
    end: str = "done"  # done | error_first | error | cut
    after: int = 10**9
    usage: JSON = field(default_factory=lambda: {"input_tokens": 11, "output_tokens": 0})
    # The answer's text made from the request's JSON, as a model reading it would (replaces `text`).
    reply: Callable[[JSON], str] | None = None
    # A signed thinking block before the answer (streams: its deltas, then the signature's).
    thinking: str | None = None


def overloaded() -> Script:
    return Script(status=529, error_type="overloaded_error")


def rate_limited(retry_after_s: int = 1) -> Script:
    return Script(
        status=429, error_type="rate_limit_error", headers={"retry-after": str(retry_after_s)}
    )


@dataclass
class Seen(JsonBody):
    path: str
    headers: dict[str, str]
    body: bytes


class FakeAnthropic(Loopback[Script, Seen]):
    def __init__(self, default: Script | None = None) -> None:
        super().__init__(default or Script())
        self.app.router.add_post("/v1/messages", self._handle)
        self.app.router.add_post("/v1/messages/count_tokens", self._count)

    async def _count(self, request: web.Request) -> web.Response:
        """A token count: one per whitespace-separated word of the request's messages."""
        body = await request.read()
        s = await self.take(Seen(request.path, lower_headers(request), body))
        if s.status != 200:
            return error_response(s)
        words = len(orjson.dumps(orjson.loads(body).get("messages")).split())
        return web.json_response({"input_tokens": words}, headers={"request-id": "req_fake"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        s = await self.take(Seen(request.path, lower_headers(request), body))
        if s.status != 200:
            return error_response(s)
        req = orjson.loads(body) if body[:1] == b"{" else {}
        model = str(req.get("model", "claude-fake"))
        if s.reply is not None:
            s = dataclasses.replace(s, text=s.reply(req))
        if req.get("stream"):
            return await stream(request, s, model)
        return web.json_response(message(s, model), headers={"request-id": "req_fake", **s.headers})


def message(s: Script, model: str) -> JSON:
    if s.tool is not None:
        content: list[JSON] = [
            {"type": "tool_use", "id": "toolu_fake", "name": s.tool[0], "input": s.tool[1]}
        ]
        stop_reason = "tool_use"
    else:
        content, stop_reason = [{"type": "text", "text": s.text}], "end_turn"
    if s.thinking is not None:
        content.insert(0, {"type": "thinking", "thinking": s.thinking, "signature": SIGNATURE})
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {**s.usage, "output_tokens": len(s.text.split(" "))},
    }


def error_body(error_type: str, message: str) -> JSON:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_fake",
    }


def error_response(s: Script) -> web.Response:
    body = orjson.dumps(error_body(s.error_type, f"fake {s.status}"))
    headers = {"Content-Type": "application/json", "request-id": "req_fake", **s.headers}
    return web.Response(status=s.status, body=body, headers=headers)


def sse(event: str, data: JSON) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _start_events(s: Script, model: str) -> list[bytes]:
    msg = {**message(s, model), "content": [], "stop_reason": None, "usage": s.usage}
    return [sse("message_start", {"type": "message_start", "message": msg}), sse("ping", {})]


def _content_events(s: Script) -> tuple[JSON, list[JSON]]:
    if s.tool is not None:
        block = {"type": "tool_use", "id": "toolu_fake", "name": s.tool[0], "input": {}}
        args = orjson.dumps(s.tool[1]).decode()
        pieces = [args[i : i + 5] for i in range(0, len(args), 5)]
        return block, [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces]]
    words = s.text.split(" ")
    texts = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return {"type": "text", "text": ""}, [{"type": "text_delta", "text": t} for t in texts]


def _thinking_events(thinking: str) -> list[bytes]:
    block = {"type": "thinking", "thinking": "", "signature": ""}
    deltas: list[JSON] = [{"type": "thinking_delta", "thinking": w + " "} for w in thinking.split()]
    deltas.append({"type": "signature_delta", "signature": SIGNATURE})
    return [
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        *(
            sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
            for d in deltas
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]


async def stream(request: web.Request, s: Script, model: str) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "request-id": "req_fake", **s.headers}
    )
    await resp.prepare(request)
    for event in _start_events(s, model):
        await resp.write(event)
    if s.end == "error_first":
        await resp.write(sse("error", error_body("overloaded_error", "Overloaded")))
        return resp
    at = 0
    if s.thinking is not None:
        for event in _thinking_events(s.thinking):
            await resp.write(event)
        at = 1
    block, deltas = _content_events(s)
    start = {"type": "content_block_start", "index": at, "content_block": block}
    await resp.write(sse("content_block_start", start))
    for i, delta in enumerate(deltas):
        if i == s.after:
            return await _bad_end(request, resp, s)
        data = {"type": "content_block_delta", "index": at, "delta": delta}
        await resp.write(sse("content_block_delta", data))
    await resp.write(sse("content_block_stop", {"type": "content_block_stop", "index": at}))
    stop_reason = "tool_use" if s.tool is not None else "end_turn"
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": len(deltas)},
    }
    await resp.write(sse("message_delta", delta))
    await resp.write(sse("message_stop", {"type": "message_stop"}))
    return resp


async def _bad_end(request: web.Request, resp: web.StreamResponse, s: Script) -> web.StreamResponse:
    if s.end == "error":
        await resp.write(sse("error", error_body("overloaded_error", "Overloaded")))
        return resp
    assert request.transport is not None
    request.transport.abort()
    return resp
