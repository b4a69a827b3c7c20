"""Responses callers (`/v1/responses`) on any backend that serves chat completions.

A Responses call becomes the chat call that asks the same (`sidecar.dialects.responses_request`),
which the backend builds, reads and streams with its own chat path; the chat answer is then
written as a Response, the chat stream as Responses events. So each kind's mapping to its vendor
exists once, for chat, and Responses costs no kind any code of its own beyond dispatching here.

Requests that only the issuing backend can serve (`previous_response_id`, stored prompts, …)
are `Untranslatable` here: the chain skips the backend as `unsupported`.
"""

import dataclasses
from typing import Any

import orjson

from sidecar.backends.base import BackendAdapter, InvalidResponse, Untranslatable, json_object_body
from sidecar.call import Answer, Call, Route, StreamAdapter, StreamStep, UpstreamRequest
from sidecar.dialects.errors import TranslationError
from sidecar.dialects.openai_response import reasoning_text
from sidecar.dialects.responses_request import ToolNames, native_only, to_chat
from sidecar.dialects.responses_response import chat_to_response
from sidecar.dialects.responses_stream import ResponsesSink
from sidecar.dialects.sse import SSEDecoder, SSEEvent, json_object

JSON = dict[str, Any]


def chat_call(call: Call, *, token_limit: str = "max_tokens") -> tuple[Call, ToolNames]:
    """`token_limit`: where the backend's chat operation reads the output limit."""
    assert call.body is not None
    reason = native_only(call.body)
    if reason is not None:
        raise Untranslatable(reason.message, reason.param)
    try:
        body, names = to_chat(call.body, token_limit=token_limit)
    except TranslationError as e:
        raise Untranslatable(e.message, e.param) from None
    chat = dataclasses.replace(
        call, route=Route.CHAT_COMPLETIONS, body=body, raw=orjson.dumps(body)
    )
    return chat, names


def build(backend: BackendAdapter, call: Call) -> UpstreamRequest:
    return backend.build(chat_call(call)[0])


def answer(backend: BackendAdapter, call: Call, body: bytes, *, model: str) -> Answer:
    chat, names = chat_call(call)
    got = backend.answer(chat, body)
    parsed = json_object_body(got.body)
    if not isinstance(parsed.get("choices"), list):
        raise InvalidResponse("upstream answered 2xx without choices")
    assert call.body is not None
    response = chat_to_response(parsed, request=call.body, names=names, model=model)
    return Answer(orjson.dumps(response), got.usage)


def error_body(backend: BackendAdapter, call: Call, status: int, body: bytes) -> bytes:
    # Responses errors have the chat error shape.
    return backend.error_body(chat_call(call)[0], status, body)


def stream(backend: BackendAdapter, call: Call, *, model: str) -> StreamAdapter:
    chat, names = chat_call(call)
    assert call.body is not None
    sink = ResponsesSink(request=call.body, names=names, model=model)
    if call.resume_from is not None:
        sink.resume_from(call.resume_from)
    return ChatToResponses(backend.stream(chat), sink)


class ChatToResponses(StreamAdapter):
    """A backend's chat stream adapter, its OpenAI chat events written as Responses events.

    The inner adapter keeps its own reading of the upstream (its commit signals, usage and
    in-band error classes); this one re-writes what it relays, and adds the one signal the chat
    rules lack: reasoning, which the caller gets as `response.reasoning_summary_text.delta`, is
    content for a Responses stream (README "Reasoning across vendors"), as it is on the pivot's
    streams."""

    __slots__ = ("_decoder", "_inner", "_sink")

    def __init__(self, inner: StreamAdapter, sink: ResponsesSink) -> None:
        super().__init__()
        self._inner = inner
        self._sink = sink
        self._decoder = SSEDecoder()

    def feed(self, data: Any) -> StreamStep:
        return self._step(self._inner.feed(data))

    def end(self) -> StreamStep:
        return self._step(self._inner.end())

    def _step(self, step: StreamStep) -> StreamStep:
        self.usage, self.text, self.text_only = (
            self._inner.usage,
            self._inner.text,
            self._inner.text_only,
        )
        self.finish_reasons = self._inner.finish_reasons
        step.out = self._write(self._decoder.feed(step.out) if step.out else [], step)
        if step.done:
            step.out += self._sink.close()
        if step.error is not None:
            cls, raw = step.error
            step.error = (cls, self._sink.error_event(_envelope(raw)))
        return step

    def _write(self, events: list[SSEEvent], step: StreamStep) -> bytes:
        out: list[bytes] = []
        for ev in events:
            chunk = json_object(ev.data) if ev.data != "[DONE]" else None
            if chunk is not None and "error" not in chunk:
                if _reasons(chunk):
                    step.content = True
                out.append(self._sink.write(chunk))
        return b"".join(out)

    def cursor(self) -> Any:
        return self._sink.cursor()

    def terminal_error(self, message: str, error_type: str) -> bytes:
        return self._sink.terminal_error(message, error_type)

    def terminator(self) -> bytes:
        owed = self._write(self._decoder.feed(self._inner.terminator()), StreamStep())
        return owed + self._sink.close()


def _reasons(chunk: JSON) -> bool:
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and isinstance(d := c.get("delta"), dict) and bool(reasoning_text(d))
        for c in choices
    )


def _envelope(raw: bytes) -> JSON:
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            found = json_object(line[5:].decode("utf-8", "replace").strip())
            if found is not None:
                return found
    return {"error": {"message": "upstream error", "code": "server_error"}}
