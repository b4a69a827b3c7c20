"""A scripted OpenAI Responses upstream (`POST /v1/responses`) on loopback.

Its events are written here, independently of the sidecar's own Responses writer, in the shape
OpenAI sends: named SSE events whose data's `type` is the event name, numbered from 0. Each
request takes the next `Script`: a text answer or a function call, JSON or streamed, and for
streams how they end after `after` deltas (`done`, `cut`, `stall`, `malformed`, `error`,
`failed`, `no_final`; `error_first` / `failed_first` fail before any output).
"""

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from fakes.loopback import JsonBody, Loopback, lower_headers

JSON = dict[str, Any]


@dataclass
class Script:
    status: int = 200
    text: str = "Hello from the fake."
    # A function call instead of text: (name, arguments JSON string).
    call: tuple[str, str] | None = None
    body: Any = None  # a JSON value or bytes, replacing the generated answer
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    end: str = "done"
    after: int = 10**9
    error_code: str = "server_error"
    reasoning: str | None = None
    # The answer's text made from the request's JSON, as a model reading it would (replaces `text`).
    reply: Callable[[JSON], str] | None = None
    # The answer's `usage`; None: USAGE.
    usage: JSON | None = None


@dataclass
class Seen(JsonBody):
    path: str
    headers: dict[str, str]
    body: bytes


def event(name: str, data: JSON, seq: int) -> bytes:
    body = {"type": name, **data, "sequence_number": seq}
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


def response(rid: str, model: str, status: str, output: list[JSON], usage: Any = None) -> JSON:
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "error": None,
        "incomplete_details": None,
        "usage": usage,
    }


USAGE: JSON = {
    "input_tokens": 11,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 4,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 15,
}


def pieces(s: Script) -> list[str]:
    if s.call is not None:
        arguments = s.call[1]
        return [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
    words = s.text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def answer(s: Script, model: str) -> JSON:
    return response("resp_fake", model, "completed", [_item(s, "completed")], s.usage or USAGE)


def _item(s: Script, status: str, content: str | None = None) -> JSON:
    if s.call is not None:
        arguments = s.call[1] if content is None else content
        return {
            "id": "fc_fake",
            "type": "function_call",
            "status": status,
            "call_id": "call_fake",
            "name": s.call[0],
            "arguments": arguments,
        }
    text = s.text if content is None else content
    parts = [{"type": "output_text", "text": text, "annotations": []}] if content != "" else []
    return {
        "id": "msg_fake",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def stream_events(s: Script, model: str) -> Iterator[bytes | None]:
    """The events of a streamed answer; None where the script breaks the stream."""
    seq = iter(range(10**6))
    rid = "resp_fake"
    if s.end in ("error_first", "failed_first"):
        yield from _failure(s, rid, model, next(seq), "first")
        return
    yield event(
        "response.created", {"response": response(rid, model, "in_progress", [])}, next(seq)
    )
    yield event(
        "response.in_progress", {"response": response(rid, model, "in_progress", [])}, next(seq)
    )
    index = 0
    if s.reasoning is not None:
        yield from _reasoning(s.reasoning, seq)
        index = 1
    yield event(
        "response.output_item.added",
        {"output_index": index, "item": _item(s, "in_progress", "")},
        next(seq),
    )
    ids = {"item_id": "fc_fake" if s.call else "msg_fake", "output_index": index}
    if s.call is None:
        part = {"type": "output_text", "text": "", "annotations": []}
        yield event(
            "response.content_part.added", {**ids, "content_index": 0, "part": part}, next(seq)
        )
    delta = "response.function_call_arguments.delta" if s.call else "response.output_text.delta"
    sent = pieces(s)
    for i, piece in enumerate(sent):
        if i == s.after:
            yield from _failure(s, rid, model, next(seq), "late")
            return
        data = {**ids, "delta": piece} if s.call else {**ids, "content_index": 0, "delta": piece}
        yield event(delta, data, next(seq))
    if s.after >= len(sent) and s.end not in ("done", "no_final"):
        yield from _failure(s, rid, model, next(seq), "late")
        return
    whole = "".join(sent)
    if s.call:
        yield event("response.function_call_arguments.done", {**ids, "arguments": whole}, next(seq))
    else:
        yield event(
            "response.output_text.done", {**ids, "content_index": 0, "text": whole}, next(seq)
        )
        part = {"type": "output_text", "text": whole, "annotations": []}
        yield event(
            "response.content_part.done", {**ids, "content_index": 0, "part": part}, next(seq)
        )
    item = _item(s, "completed")
    yield event("response.output_item.done", {"output_index": index, "item": item}, next(seq))
    if s.end == "no_final":
        return
    done = response(rid, model, "completed", [item], s.usage or USAGE)
    yield event("response.completed", {"response": done}, next(seq))


def _reasoning(text: str, seq: Iterator[int]) -> Iterator[bytes]:
    ids = {"item_id": "rs_fake", "output_index": 0}
    added = {"id": "rs_fake", "type": "reasoning", "summary": []}
    yield event("response.output_item.added", {"output_index": 0, "item": added}, next(seq))
    part = {"type": "summary_text", "text": ""}
    yield event(
        "response.reasoning_summary_part.added",
        {**ids, "summary_index": 0, "part": part},
        next(seq),
    )
    yield event(
        "response.reasoning_summary_text.delta",
        {**ids, "summary_index": 0, "delta": text},
        next(seq),
    )
    yield event(
        "response.reasoning_summary_text.done", {**ids, "summary_index": 0, "text": text}, next(seq)
    )
    done = {
        **added,
        "summary": [{"type": "summary_text", "text": text}],
        "encrypted_content": "gAAAA-fake",
    }
    yield event("response.output_item.done", {"output_index": 0, "item": done}, next(seq))


def _failure(s: Script, rid: str, model: str, seq: int, when: str) -> Iterator[bytes | None]:
    match s.end:
        case "malformed":
            yield b"event: response.output_text.delta\ndata: {not json\n\n"
        case "error" | "error_first":
            data = {"code": s.error_code, "message": "upstream died", "param": None}
            yield event("error", data, seq)
        case "failed" | "failed_first":
            failed = response(rid, model, "failed", [])
            failed["error"] = {"code": s.error_code, "message": "upstream died"}
            yield event("response.failed", {"response": failed}, seq)
        case _:  # cut, stall
            yield None


class FakeResponses(Loopback[Script, Seen]):
    def __init__(self, default: Script | None = None) -> None:
        super().__init__(default or Script())
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    @property
    def url(self) -> str:
        return super().url + "/v1"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        s = await self.take(Seen(request.path, lower_headers(request), body))
        if s.status != 200 or s.body is not None:
            return _raw(s)
        if not request.path.endswith("/responses"):
            return web.json_response({"error": {"message": "no such route"}}, status=404)
        parsed = orjson.loads(body)
        model = parsed.get("model") or "fake"
        if s.reply is not None:
            s = dataclasses.replace(s, text=s.reply(parsed))
        if not parsed.get("stream"):
            return web.json_response(answer(s, model), headers=s.headers)
        return await self._stream(request, s, model)

    async def _stream(self, request: web.Request, s: Script, model: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **s.headers})
        await resp.prepare(request)
        for data in stream_events(s, model):
            if data is None:
                if s.end == "stall":
                    await asyncio.sleep(3600)
                assert request.transport is not None
                request.transport.abort()
                return resp
            if s.chunk_delay_s:
                await asyncio.sleep(s.chunk_delay_s)
            await resp.write(data)
        return resp


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
