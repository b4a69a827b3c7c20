"""Streams translated through OpenAI chunks, the sidecar's pivot dialect.

A `PivotStream` reads one upstream wire with a `Source` (Anthropic SSE, OpenAI SSE, Bedrock
ConverseStream events) into OpenAI chunks, and writes those in the caller's dialect with a `Sink`.
The commit-point signals are read off the chunks, so every pair of dialects commits by the rules of
`sidecar.dialects.openai.OpenAIStream`: content is a delta with text, a refusal or a tool call
(or reasoning, `reasoning_content` / `reasoning`, as an Anthropic `thinking_delta` is);
finished is a `finish_reason`; done is the upstream's own terminator (or, for a caller whose
terminator carries the final usage, the moment the sink has written it).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Final

import orjson

from sidecar.call import StreamAdapter, StreamStep, Usage
from sidecar.dialects.openai import DONE, error_event
from sidecar.dialects.openai_response import REASONING_KEYS, reasoning_text
from sidecar.dialects.sse import SSEDecoder, SSEEvent
from sidecar.failure import FailureClass, status_of

JSON = dict[str, Any]
F = FailureClass

MALFORMED_MESSAGE: Final = "upstream sent a malformed stream event"


@dataclass(frozen=True, slots=True)
class InBandError:
    """An upstream error event (or a malformed one), as an OpenAI error envelope."""

    cls: FailureClass
    envelope: JSON
    # The wait the upstream's event asked for (`StreamStep.retry_after_s`).
    retry_after_s: float | None = None

    @property
    def status(self) -> int:
        # The HTTP status whose meaning the error has: it picks the caller's error type.
        return status_of(self.cls)


class Terminator:
    """The upstream's own end of stream ([DONE], message_stop, Bedrock's trailing metadata)."""


END: Final = Terminator()
Item = JSON | InBandError | Terminator


def malformed() -> InBandError:
    error = {"message": MALFORMED_MESSAGE, "type": "invalid_response", "param": None}
    return InBandError(F.INVALID_RESPONSE, {"error": {**error, "code": "invalid_response"}})


class Source(ABC):
    """One upstream wire read into OpenAI chunks, in-band errors and the upstream's terminator."""

    @abstractmethod
    def feed(self, data: Any) -> list[Item]: ...

    def end(self) -> list[Item]:
        return []

    def finish(self) -> list[JSON]:
        """Chunks still owed when the stream finished but lost its terminator (the usage)."""
        return []

    @property
    @abstractmethod
    def usage(self) -> Usage: ...


class SSESource(Source):
    """A Source over SSE: what is left in the decoder at EOF is read like the rest."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()

    def feed(self, data: Any) -> list[Item]:
        return self._items(self._decoder.feed(data))

    def end(self) -> list[Item]:
        return self._items(self._decoder.flush())

    @abstractmethod
    def _items(self, events: list[SSEEvent]) -> list[Item]: ...


class Sink(ABC):
    """OpenAI chunks written in the caller's dialect."""

    # The caller's terminator has been written: nothing more may follow.
    closed: bool = False
    # A stream-recovery continuation: the caller's stream is open, its opening is not repeated.
    resume: bool = False

    @abstractmethod
    def write(self, chunk: JSON) -> bytes: ...

    @abstractmethod
    def close(self) -> bytes:
        """The caller's terminator, at a clean end."""

    @abstractmethod
    def error(self, e: InBandError) -> bytes: ...

    @abstractmethod
    def terminal_error(self, message: str, error_type: str) -> bytes: ...


class OpenAISink(Sink):
    def write(self, chunk: JSON) -> bytes:
        if self.resume and _role_only(chunk):
            return b""
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def close(self) -> bytes:
        return DONE

    def error(self, e: InBandError) -> bytes:
        return b"data: " + orjson.dumps(e.envelope) + b"\n\n"

    def terminal_error(self, message: str, error_type: str) -> bytes:
        return error_event(message, error_type)


class AnthropicSink(Sink):
    def __init__(self, *, model: str) -> None:
        # Imported with the first stream to an Anthropic caller, not with this module: the
        # Responses and OpenAI paths use the pivot too, and a sidecar serving only those
        # callers never loads the Anthropic translations.
        from sidecar.dialects import anthropic_stream

        self._tr = anthropic_stream.OpenAIToAnthropicStream(model=model)
        self._sse_event = anthropic_stream.sse_event
        self._reopened = False

    def write(self, chunk: JSON) -> bytes:
        return self._events(self._tr.feed(chunk))

    def close(self) -> bytes:
        return self._events(self._tr.finish())

    def _events(self, events: list[tuple[str, JSON]]) -> bytes:
        if self.resume and not self._reopened:
            events = self._without_opening(events)
        sse_event = self._sse_event
        out = [sse_event(name, orjson.dumps(data)) for name, data in events]
        if any(name == "message_stop" for name, _ in events):
            self.closed = True
        return b"".join(out)

    def _without_opening(self, events: list[tuple[str, JSON]]) -> list[tuple[str, JSON]]:
        # The caller already has message_start and an open text block: the continuation's
        # text deltas go on in that block.
        kept = []
        for name, data in events:
            if name == "message_start":
                continue
            if name == "content_block_start" and not self._reopened:
                self._reopened = True
                continue
            kept.append((name, data))
        return kept

    def error(self, e: InBandError) -> bytes:
        from sidecar.dialects.anthropic_response import openai_error_to_anthropic

        body = openai_error_to_anthropic(e.status, e.envelope)
        return self._sse_event("error", orjson.dumps(body))

    def terminal_error(self, message: str, error_type: str) -> bytes:
        from sidecar.dialects.anthropic_stream import (
            anthropic_error_event,
            anthropic_stream_error_type,
        )

        return anthropic_error_event(anthropic_stream_error_type(error_type), message or error_type)


def _role_only(chunk: JSON) -> bool:
    choices = chunk.get("choices") or []
    return bool(choices) and all(
        not c.get("finish_reason")
        and not any(v for k, v in (c.get("delta") or {}).items() if k != "role")
        for c in choices
    )


def _drop_reasoning(chunk: JSON) -> None:
    # A continuation goes on in the caller's open text: the continuing backend's reasoning has no
    # place there.
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        for key in REASONING_KEYS:
            delta.pop(key, None)


class PivotStream(StreamAdapter):
    __slots__ = ("_sink", "_source")

    def __init__(self, source: Source, sink: Sink) -> None:
        super().__init__()
        self._source = source
        self._sink = sink

    def feed(self, data: Any) -> StreamStep:
        return self._step(self._source.feed(data))

    def end(self) -> StreamStep:
        return self._step(self._source.end())

    def _step(self, items: list[Item]) -> StreamStep:
        self._sink.resume = self.resume
        step = StreamStep()
        out: list[bytes] = []
        for item in items:
            if isinstance(item, InBandError):
                step.error = (item.cls, self._sink.error(item))
                step.retry_after_s = item.retry_after_s
                break
            if isinstance(item, Terminator):
                step.done = True
                out.append(self._sink.close())
                break
            if self.resume:
                _drop_reasoning(item)
            self._inspect(item, step)
            out.append(self._sink.write(item))
            if self._sink.closed:
                step.done = True
                break
        self.usage = self._source.usage
        step.out = b"".join(out)
        return step

    def _inspect(self, chunk: JSON, step: StreamStep) -> None:
        choices = chunk.get("choices") or []
        if len(choices) > 1:
            self.text_only = False
        for choice in choices:
            if reason := choice.get("finish_reason"):
                step.finished = True
                self.finish_reasons.append(str(reason))
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                step.content = True
                self.text.append(content)
            # Reasoning is output the caller sees (holding it back would make a long think
            # trip FIRST_TOKEN_TIMEOUT_S), but a recovery continues text only.
            if delta.get("tool_calls") or delta.get("refusal") or reasoning_text(delta):
                step.content = True
                self.text_only = False

    def terminal_error(self, message: str, error_type: str) -> bytes:
        return self._sink.terminal_error(message, error_type)

    def terminator(self) -> bytes:
        owed = b"".join(self._sink.write(c) for c in self._source.finish())
        return owed if self._sink.closed else owed + self._sink.close()
