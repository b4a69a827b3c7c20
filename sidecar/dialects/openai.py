"""OpenAI Chat Completions wire shapes: error bodies and the stream read as a commit-point signal.

Stream rules (README "How a request travels" and "Failure classes"):
- content: a delta with non-empty `content` or `refusal`, or any `tool_calls` / `function_call`;
  a role-only first chunk is not content;
- finished: any choice with a non-null `finish_reason`;
- done: `data: [DONE]`;
- an object with an `error` key is an in-band error; data that is not a JSON object is malformed;
- a choice without `delta` (Azure content-filter annotations) gets `delta: {}` so that the openai
  SDK's `.stream()` helper does not crash on it;
- the usage-only chunk (`choices: []`, `usage`) is dropped when the caller did not ask for it: the
  sidecar asks every OpenAI-family upstream for usage to count tokens.
"""

from typing import Any

import msgspec
import orjson

from sidecar.call import StreamAdapter, StreamStep, Usage
from sidecar.dialects.error_types import openai_error_type
from sidecar.dialects.sse import SSEDecoder, valid_utf8
from sidecar.failure import FailureClass, classify_error_event

DONE = b"data: [DONE]\n\n"
_KEEP = b"keep"  # a sentinel compared by identity


def error_body(
    message: str, *, status: int, code: str | None = None, param: str | None = None
) -> bytes:
    error = {"message": message, "type": openai_error_type(status), "param": param, "code": code}
    return orjson.dumps({"error": error})


def error_event(message: str, error_type: str) -> bytes:
    error = {"message": message, "type": error_type, "param": None, "code": error_type}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def usage_of(obj: Any) -> Usage | None:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    found = Usage(_count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))
    # The translations of Anthropic and Bedrock usage fill these details the same way.
    if isinstance(details := usage.get("prompt_tokens_details"), dict):
        found.cache_read = _count(details, "cached_tokens")
        found.cache_write = _count(details, "cache_write_tokens")
    if isinstance(details := usage.get("completion_tokens_details"), dict):
        found.reasoning = _count(details, "reasoning_tokens")
    return found


def responses_usage(usage: Any) -> Usage:
    """The Responses API's usage object: `input_tokens`, `output_tokens` and their details."""
    if not isinstance(usage, dict):
        return Usage()
    found = Usage(_count(usage, "input_tokens"), _count(usage, "output_tokens"))
    if isinstance(details := usage.get("input_tokens_details"), dict):
        found.cache_read = _count(details, "cached_tokens")
    if isinstance(details := usage.get("output_tokens_details"), dict):
        found.reasoning = _count(details, "reasoning_tokens")
    return found


def _count(obj: dict[str, Any], key: str) -> int:
    n = obj.get(key)
    return n if type(n) is int and n > 0 else 0


# gc=False: these hold only strings, None and each other, so they cannot be part of a cycle, and
# not tracking them saves the collector's bookkeeping on the 3 objects decoded per event.
class _Delta(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: str | None = None
    content: str | None = None
    refusal: None = None


class _Choice(msgspec.Struct, gc=False):
    delta: _Delta
    finish_reason: str | None = None


class _PlainChunk(msgspec.Struct, gc=False):
    """The common chunk: one choice whose delta carries at most a role and text, no usage and no
    error. Anything else (and anything that is not JSON) fails to decode and is read in full."""

    # A 1-tuple: exactly one choice, decoded without building a list.
    choices: tuple[_Choice]
    usage: None = None
    error: msgspec.UnsetType = msgspec.UNSET


_decode_plain = msgspec.json.Decoder(_PlainChunk).decode


def _prepend(out: list[bytes], data: bytes, parts: list[bytes], start: int) -> list[bytes]:
    """Puts the bytes of events parts[:start], relayed unchanged, in front of `out`."""
    if start:
        rest = sum(len(p) for p in parts[start:]) + 2 * (len(parts) - start)
        out.insert(0, data[: len(data) - rest])
    return out


def _events_of(data: bytes) -> list[bytes]:
    """The events of a chunk that ends with a blank line, without their blank lines."""
    parts = data.split(b"\n\n")
    parts.pop()
    return parts


def _opening(choices: list[Any]) -> bool:
    # A role-only first chunk: `delta: {"role": "assistant", "content": ""}` and no finish.
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict) or choice.get("finish_reason"):
            return False
        if any(v for k, v in delta.items() if k != "role"):
            return False
    return bool(choices)


class OpenAIStream(StreamAdapter):
    """An OpenAI-dialect upstream stream relayed to an OpenAI-dialect caller."""

    __slots__ = ("_decoder", "_framed", "_keep_usage")

    def __init__(self, *, include_usage: bool) -> None:
        super().__init__()
        self._decoder = SSEDecoder()
        self._keep_usage = include_usage
        self._framed = True

    def feed(self, data: Any) -> StreamStep:
        # The hot path: whole `data: {json}` events, one line each, nothing pending in the
        # decoder. With no CR and no newline but the blank lines, splitting on "\n\ndata: " yields
        # exactly the events' payloads. Each is decoded once, the common chunk into a typed struct
        # that skips what is not read (half the cost of building dicts), and unchanged events go
        # out as the same bytes. Any other chunk, or the first event that is not the common chunk,
        # is read in full from there on (`_each`), and anything but whole one-line data events
        # (comments, `event:` lines, CR, multi-line data) goes to the SSE decoder, which is exact.
        # One difference remains: a number beyond double range in a field the sidecar does not
        # read (`"created": 1e400`) passes here, where orjson refuses it. JSON allows it, and the
        # SDKs parse it (as infinity), so the typed path is the one that reads it as a caller does.
        if not (self._framed and data[-2:] == b"\n\n"):
            return self._slow(data, StreamStep(), [])
        step = StreamStep()
        payloads = data.split(b"\n\ndata: ")
        payloads[0] = payloads[0][6:]
        last = payloads.pop()
        if last == b"[DONE]\n\n":
            step.done = True
        else:
            payloads.append(last[:-2])
        # Every line break of the read must be one of the blank lines split on: joined, the
        # payloads hold none (a memchr, where counting the read's line breaks is a byte loop).
        if (
            self.resume
            or data[:6] != b"data: "
            or b"\r" in data
            or b"\n" in b"".join(payloads)
            or not valid_utf8(data)
        ):
            return self._each(data, _events_of(data), 0, StreamStep())
        text = self.text
        seen = len(text)
        add = text.append
        finished = False
        for i, payload in enumerate(payloads):
            try:
                choice = _decode_plain(payload).choices[0]
            except (msgspec.DecodeError, RecursionError):  # not the common chunk: usage, ...
                step.done, step.finished, step.content = False, finished, len(text) > seen
                return self._each(data, _events_of(data), i, step)
            if choice.finish_reason:
                finished = True
                self.finish_reasons.append(choice.finish_reason)
            if content := choice.delta.content:
                add(content)
        step.finished, step.content = finished, len(text) > seen
        step.out = data
        return step

    def end(self) -> StreamStep:
        return self._events(self._decoder.flush(), StreamStep(), [])

    def _each(self, data: bytes, parts: list[bytes], start: int, step: StreamStep) -> StreamStep:
        """Events parts[start:] read in full; the ones before were common chunks, relayed as is."""
        out: list[bytes] = []
        same = True
        for i in range(start, len(parts)):
            part = parts[i]
            if part[:6] != b"data: " or b"\n" in part or b"\r" in part:
                _prepend(out, data, parts, start)
                return self._slow(b"\n\n".join(parts[i:]) + b"\n\n", step, out)
            payload = part[6:]
            if payload == b"[DONE]":
                step.done = True
                same = same and i == len(parts) - 1
                out.append(DONE)
                break
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                _prepend(out, data, parts, start)
                return self._slow(b"\n\n".join(parts[i:]) + b"\n\n", step, out)
            event = self._event(obj, payload, step)
            if event is _KEEP:
                out.append(part + b"\n\n")
                continue
            same = False
            if event is None:
                break
            if event:
                out.append(event)
        if same:
            step.out = data
        else:
            step.out = b"".join(_prepend(out, data, parts, start))
        return step

    def _slow(self, data: bytes, step: StreamStep, out: list[bytes]) -> StreamStep:
        step = self._events(self._decoder.feed(data), step, out)
        self._framed = self._decoder.idle
        return step

    def _events(self, events: list[Any], step: StreamStep, out: list[bytes]) -> StreamStep:
        for ev in events:
            data: str = ev.data
            if data == "[DONE]":
                step.done = True
                out.append(DONE)
                break
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            event = self._event(obj, data.encode(), step)
            if event is None:
                break
            if event is _KEEP:
                out.append(b"data: " + data.encode() + b"\n\n")
            elif event:
                out.append(event)
        step.out = b"".join(out)
        return step

    def _event(self, obj: Any, raw: bytes, step: StreamStep) -> bytes | None:
        """The event to relay: `_KEEP` (unchanged), b"" (dropped) or new bytes; None stops."""
        if not isinstance(obj, dict):
            msg = "upstream sent a malformed stream event"
            step.error = (FailureClass.INVALID_RESPONSE, error_event(msg, "invalid_response"))
            return None
        if "error" in obj:
            step.error = (classify_error_event(obj), b"data: " + raw + b"\n\n")
            return None
        choices = obj.get("choices")
        if "usage" in obj and (u := usage_of(obj)) is not None:
            self.usage = u
            if not choices and not self._keep_usage:
                return b""
        patched = isinstance(choices, list) and self._inspect(choices, step)
        if self.resume and isinstance(choices, list) and _opening(choices):
            return b""
        return b"data: " + orjson.dumps(obj) + b"\n\n" if patched else _KEEP

    def _inspect(self, choices: list[Any], step: StreamStep) -> bool:
        patched = False
        if len(choices) > 1:
            self.text_only = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if reason := choice.get("finish_reason"):
                step.finished = True
                self.finish_reasons.append(str(reason))
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                choice["delta"] = {}
                patched = True
                continue
            content = delta.get("content")
            if content:
                step.content = True
                self.text.append(content)
            if delta.get("tool_calls") or delta.get("function_call"):
                step.content = True
                self.text_only = False
            if delta.get("refusal"):
                step.content = True
                self.text_only = False
        return patched

    def terminal_error(self, message: str, error_type: str) -> bytes:
        return error_event(message, error_type)

    def terminator(self) -> bytes:
        return DONE
