"""A scripted OpenAI-compatible upstream on loopback, for tests and the demo's cousins.

Each request takes the next `Script` from the queue (or the default one): an answer, a status,
a delay, a stream that is cut, stalls, turns malformed or errors. Every request is recorded with
its headers and body; a handler cancelled by a disconnect records when.
"""

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from fakes.loopback import JsonBody, Loopback, lower_headers

# The fakes write their own wire shapes: a test of the sidecar's reading must not share code
# with what it reads (the demo's fakes are product code with their own tests).
PROMPT_TOKENS = 7


def _usage(completion_tokens: int) -> dict[str, int]:
    total = PROMPT_TOKENS + completion_tokens
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }


def _chat(kind: str, model: str, **fields: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": kind, "created": 1, "model": model, **fields}


def completion(text: str, model: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return _chat("chat.completion", model, choices=[choice], usage=_usage(5))


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return _chat("chat.completion.chunk", model, choices=[choice])


def usage_chunk(model: str, completion_tokens: int) -> dict[str, Any]:
    return _chat("chat.completion.chunk", model, choices=[], usage=_usage(completion_tokens))


# What api.openai.com answers a reasoning model's (o-series, gpt-5) request with `max_tokens`.
MAX_TOKENS_REFUSED = {
    "error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
}


@dataclass
class Script:
    status: int = 200
    text: str = "Hello from the fake."
    body: Any = None  # a JSON value or bytes, replacing the generated answer
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the status line
    chunk_delay_s: float = 0.0
    # Streams: how they end after `after` content chunks.
    end: str = "done"  # done | no_done | cut | stall | malformed | error | error_first | role_only
    after: int = 10**9
    error: dict[str, Any] = field(
        default_factory=lambda: {"message": "upstream died", "type": "server_error"}
    )
    usage: bool = True
    # Merged into the answer's (or the usage chunk's) `usage`: token details, for instance.
    usage_extra: dict[str, Any] = field(default_factory=dict)
    # Stream recovery: answer with the rest of this text after the prefill it was sent.
    continues: str | None = None
    # Streams: how long the body's end (the last HTTP chunk) lags behind `data: [DONE]` (or an
    # in-band error event).
    done_gap_s: float = 0.0
    # A function call instead of text: (name, arguments JSON string).
    call: tuple[str, str] | None = None
    # The answer's text made from the request's JSON, as a model reading it would (replaces `text`).
    reply: Callable[[dict[str, Any]], str] | None = None
    # Reasoning before the text, under the key a server of that family uses (`reasoning_content`
    # for vLLM and DeepSeek, `reasoning` for Ollama and OpenRouter); streamed one word a delta.
    reasoning: str | None = None
    reasoning_key: str = "reasoning_content"


@dataclass
class Seen(JsonBody):
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    raw_path: str = ""
    # The client's port: requests on one kept-alive connection share it.
    peer_port: int = 0


class FakeOpenAI(Loopback[Script, Seen]):
    """`reasoning_model`: chat completions refuse `max_tokens` with a 400, as api.openai.com's
    reasoning models do."""

    def __init__(self, default: Script | None = None, *, reasoning_model: bool = False) -> None:
        super().__init__(default or Script())
        self.reasoning_model = reasoning_model
        self.cancelled: list[float] = []
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    @property
    def url(self) -> str:
        return super().url + "/v1"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen = Seen(
            request.path,
            request.query_string,
            lower_headers(request),
            body,
            request.raw_path,
            peer[1] if peer else 0,
        )
        try:
            s = await self.take(seen)
            parsed = orjson.loads(body) if body[:1] == b"{" else {}
            if self.reasoning_model and "max_tokens" in parsed:
                return web.json_response(MAX_TOKENS_REFUSED, status=400)
            if s.status != 200 or s.body is not None:
                return _raw(s)
            if s.reply is not None:
                s = dataclasses.replace(s, text=s.reply(parsed))
            if s.call is not None:
                return await self._call(request, s, parsed)
            if parsed.get("stream"):
                return await self._stream(request, s, parsed)
            if request.path.endswith("/embeddings"):
                return web.json_response(_embedding(parsed))
            answer = completion(s.text, parsed.get("model", "fake"))
            answer["usage"].update(s.usage_extra)
            if s.reasoning is not None:
                answer["choices"][0]["message"][s.reasoning_key] = s.reasoning
            return web.json_response(answer, headers=s.headers)
        except asyncio.CancelledError:
            self.cancelled.append(time.monotonic())
            raise

    async def _stream(
        self, request: web.Request, s: Script, req: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **s.headers})
        await resp.prepare(request)
        model = req.get("model", "fake")
        if s.end == "error_first":
            await resp.write(_event({"error": s.error}))
            return resp
        await resp.write(_event(chunk(model, {"role": "assistant", "content": ""})))
        if s.end == "role_only":
            return resp
        for thought in s.reasoning.split(" ") if s.reasoning is not None else []:
            await resp.write(_event(chunk(model, {s.reasoning_key: thought + " "})))
        words = _pieces(s, req)
        for i, word in enumerate(words):
            if i == s.after:
                return await self._bad_end(request, resp, s)
            if s.chunk_delay_s:
                await asyncio.sleep(s.chunk_delay_s)
            await resp.write(_event(chunk(model, {"content": word})))
        if s.after >= len(words) and s.end in ("cut", "stall", "malformed", "error"):
            return await self._bad_end(request, resp, s)
        await resp.write(_event(chunk(model, {}, finish="stop")))
        include = isinstance(req.get("stream_options"), dict) and req["stream_options"].get(
            "include_usage"
        )
        if include and s.usage:
            last = usage_chunk(model, len(words))
            last["usage"].update(s.usage_extra)
            await resp.write(_event(last))
        if s.end == "done":
            await resp.write(b"data: [DONE]\n\n")
        if s.done_gap_s:
            await asyncio.sleep(s.done_gap_s)
        return resp

    async def _call(
        self, request: web.Request, s: Script, req: dict[str, Any]
    ) -> web.StreamResponse:
        assert s.call is not None
        model, (name, arguments) = req.get("model", "fake"), s.call
        call = {"id": "call_fake", "type": "function", "function": {"name": name}}
        if not req.get("stream"):
            answer = completion("", model)
            calls = [{**call, "function": {"name": name, "arguments": arguments}}]
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            answer["choices"][0].update(message=message, finish_reason="tool_calls")
            return web.json_response(answer, headers=s.headers)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **s.headers})
        await resp.prepare(request)
        first = {"index": 0, **call, "function": {"name": name, "arguments": ""}}
        await resp.write(_event(chunk(model, {"role": "assistant", "tool_calls": [first]})))
        for i in range(0, len(arguments), 8):
            piece = {"index": 0, "function": {"arguments": arguments[i : i + 8]}}
            await resp.write(_event(chunk(model, {"tool_calls": [piece]})))
        await resp.write(_event(chunk(model, {}, finish="tool_calls")))
        await resp.write(_event(usage_chunk(model, 5)))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _bad_end(
        self, request: web.Request, resp: web.StreamResponse, s: Script
    ) -> web.StreamResponse:
        match s.end:
            case "stall":
                await asyncio.sleep(3600)
            case "malformed":
                await resp.write(b"data: {not json\n\n")
            case "error":
                await resp.write(_event({"error": s.error}))
                if s.done_gap_s:  # and keep the body open, as if still generating
                    await asyncio.sleep(s.done_gap_s)
            case _:
                assert request.transport is not None
                request.transport.abort()
        return resp


def _pieces(s: Script, req: dict[str, Any]) -> list[str]:
    if s.continues is not None:
        last = req["messages"][-1]
        assert last["role"] == "assistant", "a continuation needs a trailing assistant message"
        rest = s.continues[len(last["content"]) :]
        return [rest[i : i + 5] for i in range(0, len(rest), 5)]
    words = s.text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _embedding(req: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        "model": req.get("model", "fake"),
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }


def _event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _raw(s: Script) -> web.Response:
    if isinstance(s.body, bytes):
        body = s.body
    elif s.body is not None:
        body = orjson.dumps(s.body)
    else:
        body = orjson.dumps(
            {"error": {"message": f"fake {s.status}", "type": "fake", "code": None}}
        )
    return web.Response(
        status=s.status, body=body, headers={"Content-Type": "application/json", **s.headers}
    )
