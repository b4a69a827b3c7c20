"""A scripted Bedrock runtime (Converse, ConverseStream, InvokeModel and
InvokeModelWithResponseStream for Claude) on loopback.

Point aiobotocore's `bedrock-runtime` client at `url` (dummy credentials; the fake checks no
signature). Converse answers JSON; ConverseStream answers `application/vnd.amazon.eventstream`
frames from the test encoder, written in small slices so the client's reassembly is exercised.
Errors carry `x-amzn-ErrorType` and the status Bedrock documents for each exception; a stream
can also end with an exception frame or be cut. InvokeModel answers an Anthropic Message; its
stream is `chunk` frames whose `bytes` (base64 on the wire) are Anthropic stream events,
`message_stop` carrying `amazon-bedrock-invocationMetrics`. Every request is recorded with its
model id, headers and body.
"""

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from fakes.eventstream import encode_event, encode_exception
from fakes.loopback import JsonBody, Loopback, lower_headers

JSON = dict[str, Any]

SIGNATURE = "sig-bedrock-fake"

ERROR_STATUS: dict[str, int] = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}


@dataclass
class Script:
    text: str = "Hello from the fake Bedrock."
    tool: tuple[str, JSON] | None = None  # (name, input) answered instead of text
    error: str | None = None  # an exception name from ERROR_STATUS, answered as an HTTP error
    # Streams: how they end after `after` content deltas.
    end: str = "done"  # done | exception | cut
    exception: str = "throttlingException"
    after: int = 10**9
    slice_bytes: int = 37
    delay_s: float = 0.0
    # How long the body's end lags behind the last frame (`metadata`).
    done_gap_s: float = 0.0
    usage: JSON = field(
        default_factory=lambda: {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13}
    )
    # Claude's reasoning, in block 0 before the answer (JSON: one `reasoningContent` block;
    # streams: one `reasoningContent.text` delta a word, then its `signature`).
    reasoning: str | None = None


@dataclass
class Seen(JsonBody):
    operation: str
    model_id: str
    headers: dict[str, str]
    body: bytes
    # The client's port: requests on one kept-alive connection share it.
    peer_port: int = 0


class FakeBedrock(Loopback[Script, Seen]):
    def __init__(self, default: Script | None = None) -> None:
        super().__init__(default or Script())
        # When a client hung up on a stream's tail (`done_gap_s`).
        self.cancelled: list[float] = []
        self.app.router.add_post("/model/{model_id:.+}/converse", self._converse)
        self.app.router.add_post("/model/{model_id:.+}/converse-stream", self._converse_stream)
        self.app.router.add_post("/model/{model_id:.+}/invoke", self._invoke)
        self.app.router.add_post(
            "/model/{model_id:.+}/invoke-with-response-stream", self._invoke_stream
        )
        self.app.router.add_post("/model/{model_id:.+}/count-tokens", self._count_tokens)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """One token per whitespace-separated word of the request's `input`."""
        s = await self._next(request, "count-tokens")
        if s.error is not None:
            return error_response(s.error)
        counted = orjson.loads(self.seen[-1].body)["input"]
        return web.json_response(
            {"inputTokens": len(orjson.dumps(counted).split())}, headers=_request_id()
        )

    async def _next(self, request: web.Request, operation: str) -> Script:
        body = await request.read()
        model_id = request.match_info["model_id"]
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen = Seen(operation, model_id, lower_headers(request), body, peer[1] if peer else 0)
        return await self.take(seen)

    async def _converse(self, request: web.Request) -> web.Response:
        s = await self._next(request, "converse")
        if s.error is not None:
            return error_response(s.error)
        return web.json_response(converse_body(s), headers=_request_id())

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        s = await self._next(request, "converse-stream")
        if s.error is not None:
            return error_response(s.error)
        resp = web.StreamResponse(
            headers={"Content-Type": "application/vnd.amazon.eventstream", **_request_id()}
        )
        await resp.prepare(request)
        frames = stream_frames(s)
        for frame in frames:
            for i in range(0, len(frame), s.slice_bytes):
                await resp.write(frame[i : i + s.slice_bytes])
        if s.end == "cut":
            assert request.transport is not None
            request.transport.abort()
        if s.done_gap_s:
            try:
                await asyncio.sleep(s.done_gap_s)
            except asyncio.CancelledError:
                self.cancelled.append(time.monotonic())
                raise
        return resp

    async def _invoke(self, request: web.Request) -> web.Response:
        s = await self._next(request, "invoke")
        if s.error is not None:
            return error_response(s.error)
        return web.json_response(anthropic_message(s), headers=_request_id())

    async def _invoke_stream(self, request: web.Request) -> web.StreamResponse:
        s = await self._next(request, "invoke-with-response-stream")
        if s.error is not None:
            return error_response(s.error)
        resp = web.StreamResponse(
            headers={"Content-Type": "application/vnd.amazon.eventstream", **_request_id()}
        )
        await resp.prepare(request)
        for frame in invoke_frames(s):
            for i in range(0, len(frame), s.slice_bytes):
                await resp.write(frame[i : i + s.slice_bytes])
        if s.end == "cut":
            assert request.transport is not None
            request.transport.abort()
        return resp


def _request_id() -> dict[str, str]:
    return {"x-amzn-RequestId": "fake-request-id"}


def error_response(code: str) -> web.Response:
    body = orjson.dumps({"message": f"fake {code}"})
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": f"{code}:", **_request_id()}
    return web.Response(status=ERROR_STATUS[code], body=body, headers=headers)


def converse_body(s: Script) -> JSON:
    if s.tool is not None:
        block: JSON = {
            "toolUse": {"toolUseId": "tooluse_fake", "name": s.tool[0], "input": s.tool[1]}
        }
        stop_reason = "tool_use"
    else:
        block, stop_reason = {"text": s.text}, "end_turn"
    content = [block]
    if s.reasoning is not None:
        reasoning = {"reasoningText": {"text": s.reasoning, "signature": SIGNATURE}}
        content.insert(0, {"reasoningContent": reasoning})
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": s.usage,
        "metrics": {"latencyMs": 1},
    }


def _deltas(s: Script) -> list[JSON]:
    if s.tool is not None:
        args = orjson.dumps(s.tool[1]).decode()
        return [{"toolUse": {"input": args[i : i + 5]}} for i in range(0, len(args), 5)]
    words = s.text.split(" ")
    return [{"text": w if i == 0 else " " + w} for i, w in enumerate(words)]


def _reasoning_frames(s: Script) -> list[bytes]:
    if s.reasoning is None:
        return []
    deltas: list[JSON] = [{"reasoningContent": {"text": w + " "}} for w in s.reasoning.split(" ")]
    deltas.append({"reasoningContent": {"signature": SIGNATURE}})
    frames = [
        encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": d}) for d in deltas
    ]
    return [*frames, encode_event("contentBlockStop", {"contentBlockIndex": 0})]


def stream_frames(s: Script) -> list[bytes]:
    frames = [encode_event("messageStart", {"role": "assistant"}), *_reasoning_frames(s)]
    at = 0 if s.reasoning is None else 1
    if s.tool is not None:
        start = {"toolUse": {"toolUseId": "tooluse_fake", "name": s.tool[0]}}
        frames.append(encode_event("contentBlockStart", {"contentBlockIndex": at, "start": start}))
    for i, delta in enumerate(_deltas(s)):
        if i == s.after:
            return frames + _bad_end(s)
        frames.append(encode_event("contentBlockDelta", {"contentBlockIndex": at, "delta": delta}))
    if s.after < 10**9 and s.end != "done":
        return frames + _bad_end(s)
    stop_reason = "tool_use" if s.tool is not None else "end_turn"
    return [
        *frames,
        encode_event("contentBlockStop", {"contentBlockIndex": at}),
        encode_event("messageStop", {"stopReason": stop_reason}),
        encode_event("metadata", {"usage": s.usage, "metrics": {"latencyMs": 1}}),
    ]


def _bad_end(s: Script) -> list[bytes]:
    if s.end == "exception":
        return [encode_exception(s.exception, {"message": f"fake {s.exception}"})]
    return []


def anthropic_message(s: Script) -> JSON:
    if s.tool is not None:
        content: list[JSON] = [
            {"type": "tool_use", "id": "toolu_bdrk", "name": s.tool[0], "input": s.tool[1]}
        ]
        stop_reason = "tool_use"
    else:
        content, stop_reason = [{"type": "text", "text": s.text}], "end_turn"
    return {
        "id": "msg_bdrk",
        "type": "message",
        "role": "assistant",
        "model": "claude-on-bedrock",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 4, "cache_read_input_tokens": 2},
    }


def _chunk(event: JSON) -> bytes:
    return encode_event("chunk", {"bytes": base64.b64encode(orjson.dumps(event)).decode()})


def invoke_frames(s: Script) -> list[bytes]:
    message = {**anthropic_message(s), "content": [], "stop_reason": None}
    message["usage"] = {"input_tokens": 9, "output_tokens": 1}
    frames = [_chunk({"type": "message_start", "message": message})]
    if s.tool is not None:
        block: JSON = {"type": "tool_use", "id": "toolu_bdrk", "name": s.tool[0], "input": {}}
        args = orjson.dumps(s.tool[1]).decode()
        deltas = [
            {"type": "input_json_delta", "partial_json": args[i : i + 5]}
            for i in range(0, len(args), 5)
        ]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": d["text"]} for d in _deltas(s)]
    frames.append(_chunk({"type": "content_block_start", "index": 0, "content_block": block}))
    for i, delta in enumerate(deltas):
        if i == s.after:
            return frames + _bad_end(s)
        frames.append(_chunk({"type": "content_block_delta", "index": 0, "delta": delta}))
    stop_reason = "tool_use" if s.tool is not None else "end_turn"
    metrics = {
        "inputTokenCount": 9,
        "outputTokenCount": 4,
        "invocationLatency": 5,
        "firstByteLatency": 1,
    }
    return [
        *frames,
        _chunk({"type": "content_block_stop", "index": 0}),
        _chunk(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 4},
            }
        ),
        _chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}),
    ]
