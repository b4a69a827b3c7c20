"""Anthropic Messages streams: relayed event by event to Anthropic callers (`AnthropicStream`),
translated to and from OpenAI chunks, and the SSE writers for Anthropic callers.

Stream rules (README "How a request travels", "Errors and streams across dialects"):
- content: a `text_delta` with text, a `tool_use` `content_block_start`, an `input_json_delta`, or
  a `thinking_delta` (model output the caller sees; holding it back would make a long think trip
  `FIRST_TOKEN_TIMEOUT_S`); `message_start` and `ping` are not content;
- finished: `message_delta` with a `stop_reason`; done: `message_stop`;
- `event: error` is an in-band error, classified by `classify_error_event`; data that is not a JSON
  object is malformed (`invalid_response`).

Lossy points:

| where   | input                                        | policy                                  |
|---------|----------------------------------------------|-----------------------------------------|
| streams | OpenAI input usage                           | known only at the end: `message_start`  |
|         |                                              | says 0, `message_delta` carries it      |
| streams | OpenAI `reasoning_content` / `reasoning`     | a `thinking` block (empty `signature`,  |
|         | deltas                                       | no `signature_delta`) of `thinking_     |
|         |                                              | delta`s, before the text it precedes;   |
|         |                                              | `thinking_delta` → `reasoning_content`  |
|         |                                              | (`signature_delta` dropped)             |
"""

from typing import Any, Final

import orjson

from sidecar.call import StreamAdapter, StreamStep, Usage
from sidecar.dialects import openai_response
from sidecar.dialects.anthropic_response import (
    STOP_REASON_TO_FINISH,
    anthropic_usage_to_openai,
    fallback_id,
    openai_usage_to_anthropic,
    stop_reason,
    thinking_block,
)
from sidecar.dialects.openai import usage_of
from sidecar.dialects.sse import SSEDecoder, SSEEvent, json_object
from sidecar.dialects.thought_signatures import signature_of, tool_use_id
from sidecar.failure import FailureClass, classify_error_event

JSON = dict[str, Any]


def sse_event(name: str, data: bytes) -> bytes:
    # Always named: the anthropic SDK drops events without an `event:` line.
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def anthropic_error_event(error_type: str, message: str) -> bytes:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return sse_event("error", orjson.dumps(body))


def anthropic_stream_error_type(sidecar_class: str) -> str:
    # Anthropic error objects have a closed set of types; the sidecar's class is in the message.
    return "timeout_error" if sidecar_class == FailureClass.STREAM_TIMEOUT else "api_error"


_MESSAGE_STOP: Final = sse_event("message_stop", b'{"type":"message_stop"}')


class AnthropicStream(StreamAdapter):
    """An Anthropic upstream stream relayed to an Anthropic caller, event by event."""

    __slots__ = ("_decoder", "_reopened")

    def __init__(self) -> None:
        super().__init__()
        self._decoder = SSEDecoder()
        self._reopened = False

    def feed(self, data: Any) -> StreamStep:
        return self._events(self._decoder.feed(data))

    def end(self) -> StreamStep:
        return self._events(self._decoder.flush())

    def _events(self, events: list[SSEEvent]) -> StreamStep:
        step = StreamStep()
        out: list[bytes] = []
        for ev in events:
            obj = json_object(ev.data)
            if obj is None:
                step.error = (FailureClass.INVALID_RESPONSE, self._malformed())
                break
            name = ev.event or str(obj.get("type"))
            if name == "error":
                step.error = (classify_error_event(obj), sse_event("error", ev.data.encode()))
                break
            self._inspect(name, obj, step)
            if not (self.resume and self._opening(name)):
                out.append(sse_event(name, ev.data.encode()))
            if step.done:
                break
        step.out = b"".join(out)
        return step

    def _opening(self, name: str) -> bool:
        # A continuation goes on in the caller's open message and text block.
        if name == "message_start":
            return True
        if name == "content_block_start" and not self._reopened:
            self._reopened = True
            return True
        return False

    def _inspect(self, name: str, obj: dict[str, Any], step: StreamStep) -> None:
        match name:
            case "message_start":
                self._count((obj.get("message") or {}).get("usage"))
            case "content_block_start":
                block = obj.get("content_block") or {}
                if block.get("type") == "tool_use":
                    step.content, self.text_only = True, False
                elif block.get("type") == "text" and block.get("text"):
                    step.content = True
                    self.text.append(block["text"])
            case "content_block_delta":
                self._delta(obj.get("delta") or {}, step)
            case "message_delta":
                self._count(obj.get("usage"))
                reason = (obj.get("delta") or {}).get("stop_reason")
                step.finished = bool(reason)
                if reason:
                    self.finish_reasons.append(str(reason))
            case "message_stop":
                step.done = True

    def _delta(self, delta: dict[str, Any], step: StreamStep) -> None:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            step.content = True
            self.text.append(delta["text"])
        elif kind in ("input_json_delta", "thinking_delta"):
            step.content, self.text_only = True, False

    def _count(self, usage: Any) -> None:
        # message_delta counts are cumulative: they replace the earlier ones.
        if not isinstance(usage, dict):
            return
        counted = usage_of({"usage": anthropic_usage_to_openai(usage)}) or Usage()
        u = self.usage
        if "input_tokens" in usage:
            u.prompt, u.cache_read, u.cache_write = (
                counted.prompt,
                counted.cache_read,
                counted.cache_write,
            )
        if isinstance(usage.get("output_tokens"), int):
            u.completion, u.reasoning = counted.completion, counted.reasoning

    def _malformed(self) -> bytes:
        return anthropic_error_event("api_error", "upstream sent a malformed stream event")

    def terminal_error(self, message: str, error_type: str) -> bytes:
        return anthropic_error_event(anthropic_stream_error_type(error_type), message or error_type)

    def terminator(self) -> bytes:
        return _MESSAGE_STOP


# ---------------------------------------------------------------------------------------------
# Streams: Anthropic events → OpenAI chunks


class AnthropicToOpenAIStream:
    def __init__(self, *, model: str, include_usage: bool, created: int | None = None) -> None:
        self._include_usage = include_usage
        self._out = openai_response.OpenAIChunks(model=model, created=created, chunk_id="")
        self._usage: JSON = {}
        self._saw_start = False
        self._saw_delta = False

    @property
    def prompt_tokens(self) -> int | None:
        if not self._saw_start:
            return None
        return int(anthropic_usage_to_openai(self._usage)["prompt_tokens"])

    @property
    def completion_tokens(self) -> int | None:
        if not (self._saw_start or self._saw_delta):
            return None
        return int(self._usage.get("output_tokens") or 0)

    @property
    def usage(self) -> Usage:
        return usage_of({"usage": anthropic_usage_to_openai(self._usage)}) or Usage()

    def feed(self, event: str, data: JSON) -> list[JSON]:
        match event:
            case "message_start":
                return self._message_start(data.get("message") or {})
            case "content_block_start":
                return self._block_start(data)
            case "content_block_delta":
                return self._block_delta(data)
            case "message_delta":
                return self._message_delta(data)
            case "message_stop":
                return [self._usage_chunk()] if self._include_usage else []
            case _:
                # ping, content_block_stop and unknown events carry nothing for OpenAI; `error`
                # is the caller's to classify before it reaches this translator.
                return []

    def _message_start(self, message: JSON) -> list[JSON]:
        self._out.id = message.get("id") or fallback_id("chatcmpl-")
        self._usage.update({k: v for k, v in (message.get("usage") or {}).items() if v is not None})
        self._saw_start = True
        return [self._out.chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: JSON) -> list[JSON]:
        block = data.get("content_block") or {}
        if block.get("type") == "text" and block.get("text"):
            return [self._out.chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return []
        return self._out.tool_start(int(data.get("index", 0)), block.get("id"), block.get("name"))

    def _block_delta(self, data: JSON) -> list[JSON]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._out.chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [self._out.chunk({"reasoning_content": delta["thinking"]})]
        fragment = delta.get("partial_json") if kind == "input_json_delta" else None
        return self._out.tool_arguments(int(data.get("index", 0)), fragment)

    def _usage_chunk(self) -> JSON:
        return self._out.usage_chunk(anthropic_usage_to_openai(self._usage))

    def _message_delta(self, data: JSON) -> list[JSON]:
        # message_delta usage counts are cumulative: they replace, never add.
        self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        self._saw_delta = True
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        if stop_reason is None:
            return []
        return [self._out.chunk({}, STOP_REASON_TO_FINISH.get(stop_reason, "stop"))]


# ---------------------------------------------------------------------------------------------
# Streams: OpenAI chunks → Anthropic events

Event = tuple[str, JSON]


class OpenAIToAnthropicStream:
    """OpenAI chunks in, Anthropic events out.

    `message_start` comes with the first chunk. A `finish_reason` closes the open block at once,
    but `message_delta` (with `stop_reason` and usage) and `message_stop` wait for the usage chunk
    that OpenAI sends after it (`choices: []`, or usage on the finishing chunk itself), because
    Anthropic clients read the final usage from `message_delta`. If no usage chunk comes,
    `finish()` (called at `[DONE]` or EOF) emits them. Without a `finish_reason`, `finish()` emits
    nothing: the stream was cut, and the caller ends it with an error event.
    """

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._started = False
        self._stopped = False
        self._stop_reason: str | None = None
        self._open_block: int | None = None
        self._open_kind: str | None = None
        self._blocks = 0
        self._tool_blocks: dict[int, int] = {}
        self._usage: JSON | None = None

    @property
    def prompt_tokens(self) -> int | None:
        return None if self._usage is None else int(self._usage.get("prompt_tokens") or 0)

    @property
    def completion_tokens(self) -> int | None:
        return None if self._usage is None else int(self._usage.get("completion_tokens") or 0)

    def feed(self, chunk: JSON) -> list[Event]:
        if self._stopped or "error" in chunk:
            return []
        events: list[Event] = [] if self._started else [self._message_start(chunk)]
        self._started = True
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:
                events.extend(self._choice(choice))
        if chunk.get("usage"):
            self._usage = chunk["usage"]
            if self._stop_reason is not None:
                events.extend(self._message_end())
        return events

    def finish(self) -> list[Event]:
        if self._stopped or self._stop_reason is None:
            return []
        return self._message_end()

    def _message_start(self, chunk: JSON) -> Event:
        message: JSON = {
            "id": chunk.get("id") or fallback_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return ("message_start", {"type": "message_start", "message": message})

    def _choice(self, choice: JSON) -> list[Event]:
        # Azure sends annotation-only choices without `delta`; they carry no content.
        delta = choice.get("delta") or {}
        events: list[Event] = []
        if thought := openai_response.reasoning_text(delta):
            events.extend(self._thinking(thought))
        text = delta.get("content") or delta.get("refusal")
        if text:
            events.extend(self._text(text))
        for fragment in delta.get("tool_calls") or []:
            events.extend(self._tool_fragment(fragment))
        finish = choice.get("finish_reason")
        if finish is not None and self._stop_reason is None:
            events.extend(self._close_block())
            self._stop_reason = stop_reason(finish, bool(self._tool_blocks))
        return events

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open_kind != "text":
            events.extend(self._close_block())
            events.append(self._open({"type": "text", "text": ""}, "text"))
        delta = {"type": "text_delta", "text": text}
        events.append(("content_block_delta", self._block_event("content_block_delta", delta)))
        return events

    def _thinking(self, thought: str) -> list[Event]:
        events: list[Event] = []
        if self._open_kind != "thinking":
            events.extend(self._close_block())
            events.append(self._open(thinking_block(""), "thinking"))
        delta = {"type": "thinking_delta", "thinking": thought}
        events.append(("content_block_delta", self._block_event("content_block_delta", delta)))
        return events

    def _tool_fragment(self, fragment: JSON) -> list[Event]:
        events: list[Event] = []
        k = int(fragment.get("index", 0))
        fn = fragment.get("function") or {}
        if k not in self._tool_blocks:
            events.extend(self._close_block())
            block: JSON = {
                "type": "tool_use",
                "id": tool_use_id(fragment.get("id") or f"toolu_{k}", signature_of(fragment)),
                "name": fn.get("name"),
                "input": {},
            }
            events.append(self._open(block, "tool_use"))
            self._tool_blocks[k] = self._open_block if self._open_block is not None else 0
        if fn.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": fn["arguments"]}
            data = {"type": "content_block_delta", "index": self._tool_blocks[k], "delta": delta}
            events.append(("content_block_delta", data))
        return events

    def _open(self, block: JSON, kind: str) -> Event:
        self._open_block, self._open_kind = self._blocks, kind
        self._blocks += 1
        data = {"type": "content_block_start", "index": self._open_block, "content_block": block}
        return ("content_block_start", data)

    def _block_event(self, kind: str, delta: JSON) -> JSON:
        return {"type": kind, "index": self._open_block, "delta": delta}

    def _close_block(self) -> list[Event]:
        if self._open_block is None:
            return []
        index, self._open_block, self._open_kind = self._open_block, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _message_end(self) -> list[Event]:
        self._stopped = True
        usage = openai_usage_to_anthropic(self._usage or {})
        delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
        return [
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
            ("message_stop", {"type": "message_stop"}),
        ]
