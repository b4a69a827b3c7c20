"""Responses streams: a native one (OpenAI, Azure v1) relayed event by event, and the pivot's
chat chunks written as Responses events for translated backends (`ResponsesSink`).

Commit-point rules for Responses streams:
- content (commits): the first `response.output_text.delta`, `response.refusal.delta`,
  `response.function_call_arguments.delta` or `response.reasoning_summary_text.delta` with a
  non-empty delta; an `response.output_item.added` whose item already carries content; any
  `response.output_item.done` (a whole item is output the caller keeps);
- not content: `response.created`, `response.queued`, `response.in_progress`, the
  `response.output_item.added` of an empty item, `response.content_part.added`;
- finished and done at once: `response.completed` or `response.incomplete` (a Responses stream
  has no `[DONE]`; its final event is its terminator);
- in-band errors: `error`, and `response.failed`, classified by the code they carry (the same
  table as a chat error event); before commit they fall back, after it they end the stream as
  relayed. Data that is not a JSON object is malformed (`invalid_response`);
- a stream that ends without `response.completed` / `response.incomplete` / `response.failed`
  is broken (`stream_interrupted`), never complete.

Events go out framed as `event: NAME\\ndata: DATA\\n\\n` with DATA unchanged; a read of whole
events in that framing goes out as the upstream's bytes (`ResponsesStream.feed`). The adapter tracks
what a stream recovery needs (`cursor()`): the response id, the next sequence number, the items
done and the open message's text.
"""

from typing import Any, Final

import msgspec
import orjson

from sidecar.call import StreamAdapter, StreamStep
from sidecar.dialects.openai import responses_usage
from sidecar.dialects.pivot import InBandError, Sink
from sidecar.dialects.responses_request import ToolNames
from sidecar.dialects.responses_response import Cursor, OpenItem, ResponsesEvents
from sidecar.dialects.sse import SSEDecoder, SSEEvent, json_object, valid_utf8
from sidecar.failure import FailureClass, classify_error_event

JSON = dict[str, Any]

CONTENT_DELTAS: Final = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
    }
)
LIFECYCLE: Final = frozenset({"response.created", "response.queued", "response.in_progress"})
FINAL: Final = frozenset({"response.completed", "response.incomplete"})
# Items a recovery can continue after: text, and the reasoning that led to it.
TEXT_ITEMS: Final = frozenset({"message", "reasoning"})
MALFORMED: Final = "upstream sent a malformed stream event"


def frame(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def error_event(code: str, message: str, sequence_number: int) -> bytes:
    body = {
        "type": "error",
        "code": code,
        "message": message,
        "param": None,
        "sequence_number": sequence_number,
    }
    return frame("error", orjson.dumps(body))


def _response(obj: JSON) -> JSON:
    # A `response` that is not an object tells the sidecar nothing, as an absent one.
    found = obj.get("response")
    return found if isinstance(found, dict) else {}


def _offset(lines: list[bytes], i: int) -> int:
    """Where line i starts in the read that `lines` were split from at its line breaks."""
    return sum(map(len, lines[:i])) + i


def item_has_content(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    kind = item.get("type")
    if kind == "message":
        return any(
            isinstance(p, dict) and (p.get("text") or p.get("refusal"))
            for p in item.get("content") or []
        )
    if kind == "function_call":
        return bool(item.get("arguments"))
    if kind == "reasoning":
        return bool(item.get("summary") or item.get("content") or item.get("encrypted_content"))
    return False


# gc=False: it holds only strings, ints and None, so it cannot be part of a cycle (as the chat
# fast path's structs in sidecar.dialects.openai).
class _Delta(msgspec.Struct, gc=False):
    """A content delta event as far as the sidecar reads it. The fields it does not read are
    skipped; a read one of another type (a delta that is not a string, a float sequence number)
    fails to decode, and the event is read in full."""

    delta: str = ""
    sequence_number: int | None = None
    item_id: str | None = None


_decode_delta = msgspec.json.Decoder(_Delta).decode


class _FinalResponse(msgspec.Struct):
    usage: dict[str, Any] | None = None


class _Final(msgspec.Struct):
    """`response.completed` / `response.incomplete`, as far as the sidecar reads it: the output
    it repeats is skipped."""

    sequence_number: int | None = None
    response: _FinalResponse | None = None


_decode_final = msgspec.json.Decoder(_Final).decode


class _OpeningResponse(msgspec.Struct, gc=False):
    id: str | None = None
    created_at: int | None = None


class _Lifecycle(msgspec.Struct, gc=False):
    """`response.created` / `response.queued` / `response.in_progress`, as far as the sidecar
    reads it."""

    sequence_number: int | None = None
    response: _OpeningResponse | None = None


_decode_lifecycle = msgspec.json.Decoder(_Lifecycle).decode
# The event lines of the content deltas.
_TEXT_LINE: Final = b"event: response.output_text.delta"
_REASONING_LINE: Final = b"event: response.reasoning_summary_text.delta"
_OTHER_DELTA_LINES: Final = frozenset(
    b"event: " + n.encode() for n in CONTENT_DELTAS - {"response.output_text.delta"}
)
_FINAL_LINES: Final = frozenset(b"event: " + n.encode() for n in FINAL)
_LIFECYCLE_LINES: Final = frozenset(b"event: " + n.encode() for n in LIFECYCLE)


class ResponsesStream(StreamAdapter):
    __slots__ = (
        "_created_at",
        "_decoder",
        "_done",
        "_framed",
        "_messages",
        "_open",
        "_outputs",
        "_response_id",
        "_seq",
    )

    def __init__(self) -> None:
        super().__init__()
        self._decoder = SSEDecoder()
        self._framed = True
        self._seq = 0
        self._response_id = ""
        self._created_at = 0
        self._done: dict[int, JSON] = {}
        self._open: OpenItem | None = None
        self._outputs = 0
        self._messages = 0

    def feed(self, data: Any) -> StreamStep:
        # The hot path, as the chat stream's (sidecar.dialects.openai): a read of whole events,
        # each one `event: NAME` line, one `data: DATA` line and a blank line, with no CR and
        # nothing pending in the decoder. Split on its line breaks, such a read is exactly three
        # lines per event and the empty one after its last line break, every third one blank.
        # Content deltas (most of a stream), the lifecycle events and the final event are decoded
        # into typed structs that skip what is not read (a final event repeats the whole output,
        # a lifecycle event the request's settings); a field of another type than the struct's,
        # and every other event, is read in full as the SSE decoder's events are. Every event the
        # sidecar does not change goes out as the upstream's bytes, the read as one slice of
        # itself. Anything else (a comment, an `id:` line, multi-line data, an event without an
        # `event:` line, a split read) goes to the SSE decoder from the event where it starts,
        # which is exact. As on the chat path, a number beyond double range in a field the
        # sidecar does not read passes here, where orjson refuses it.
        if not (self._framed and data[-2:] == b"\n\n") or b"\r" in data or not valid_utf8(data):
            return self._slow(data, StreamStep())
        lines = data.split(b"\n")
        if len(lines) % 3 != 1 or any(lines[2::3]):
            return self._slow(data, StreamStep())
        return self._fast(data, lines)

    def end(self) -> StreamStep:
        return self._events(self._decoder.flush(), StreamStep())

    def _fast(self, data: bytes, lines: list[bytes]) -> StreamStep:
        # One long loop rather than a call per event: this is the per-event cost of every
        # Responses stream, and a method call per delta would be a fifth of it.
        step = StreamStep()
        text = self.text
        add = text.append
        seen = len(text)
        seq = self._seq
        content = False  # a content delta that is not text (text is counted in `text`)
        open_add, open_id = self._open_text()
        for i in range(0, len(lines) - 1, 3):
            head = lines[i]
            line = lines[i + 1]
            payload = line.removeprefix(b"data: ")
            if payload is line:  # no `data: ` line where one must be
                return self._rest(data, lines, i, seq, content or len(text) > seen, step)
            if head == _TEXT_LINE:
                try:
                    d = _decode_delta(payload)
                except (msgspec.DecodeError, RecursionError):
                    pass  # read in full below
                else:
                    n = d.sequence_number
                    if n is None:
                        seq += 1
                    elif n >= seq:
                        seq = n + 1
                    if delta := d.delta:
                        add(delta)
                        if open_add is not None and d.item_id == open_id:
                            open_add(delta)
                    continue
            elif head in _OTHER_DELTA_LINES:
                try:
                    d = _decode_delta(payload)
                except (msgspec.DecodeError, RecursionError):
                    pass
                else:
                    n = d.sequence_number
                    if n is None:
                        seq += 1
                    elif n >= seq:
                        seq = n + 1
                    if d.delta:
                        content = True
                        if head != _REASONING_LINE:
                            self.text_only = False
                    continue
            elif head in _FINAL_LINES:
                try:
                    f = _decode_final(payload)
                except (msgspec.DecodeError, RecursionError):
                    pass
                else:
                    n = f.sequence_number
                    self._seq = seq + 1 if n is None else max(seq, n + 1)
                    if f.response is not None:
                        self._count(f.response.usage)
                    step.finished = step.done = True
                    step.content = step.content or content or len(text) > seen
                    end = i + 3
                    step.out = data if end == len(lines) - 1 else data[: _offset(lines, end)]
                    return step
            elif head in _LIFECYCLE_LINES:
                try:
                    life = _decode_lifecycle(payload)
                except (msgspec.DecodeError, RecursionError):
                    pass
                else:
                    n = life.sequence_number
                    seq = seq + 1 if n is None else max(seq, n + 1)
                    if (opening := life.response) is not None:
                        self._response_id = opening.id or self._response_id
                        if opening.created_at is not None:
                            self._created_at = opening.created_at
                    continue
            if head[:7] != b"event: " or len(head) == 7:
                # Not an event line, or an empty name (the event is relayed named by its type).
                return self._rest(data, lines, i, seq, content or len(text) > seen, step)
            self._seq = seq
            if self._event(head[7:].decode(), json_object(payload), payload, step):
                step.content = step.content or content or len(text) > seen
                end = i if step.error is not None else i + 3
                # The final event usually ends its read: the read is its own output.
                step.out = data if end == len(lines) - 1 else data[: _offset(lines, end)]
                return step
            seq = self._seq
            open_add, open_id = self._open_text()
        self._seq = seq
        step.content = step.content or content or len(text) > seen
        step.out = data
        return step

    def _open_text(self) -> tuple[Any, Any]:
        # The open message's text list's append, and the item id whose deltas go into it.
        if self._open is None:
            return None, None
        return self._open.text.append, self._open.item.get("id")

    def _rest(
        self, data: bytes, lines: list[bytes], i: int, seq: int, content: bool, step: StreamStep
    ) -> StreamStep:
        """The events from line i on through the SSE decoder; the ones before went out as they
        came."""
        self._seq = seq
        step.content = step.content or content
        offset = _offset(lines, i)
        step = self._slow(data[offset:], step)
        step.out = data[:offset] + step.out
        return step

    def _slow(self, data: bytes, step: StreamStep) -> StreamStep:
        step = self._events(self._decoder.feed(data), step)
        self._framed = self._decoder.idle
        return step

    def _events(self, events: list[SSEEvent], step: StreamStep) -> StreamStep:
        out: list[bytes] = []
        for ev in events:
            obj = json_object(ev.data)
            name = ev.event or (str(obj.get("type")) if obj is not None else "")
            data = ev.data.encode()
            stop = self._event(name, obj, data, step)
            if step.error is None:
                out.append(frame(name, data))
            if stop:
                break
        step.out = b"".join(out)
        return step

    def _event(self, name: str, obj: JSON | None, data: bytes, step: StreamStep) -> bool:
        """One event read in full into `step`; True when the stream stops at it: an error
        (`step.error`, the event not relayed) or its final event (`step.done`)."""
        if obj is None:
            malformed = error_event("invalid_response", MALFORMED, self._seq)
            step.error = (FailureClass.INVALID_RESPONSE, malformed)
            return True
        self._number(obj)
        if name == "error":
            step.error = (classify_error_event(obj), frame(name, data))
            return True
        if name == "response.failed":
            # Relayed as the stream's one `error` event: the caller's stream ends like every
            # other broken one, whoever broke it.
            found = _response(obj).get("error")
            error: JSON = found if isinstance(found, dict) else {}
            code = str(error.get("code") or "server_error")
            message = str(error.get("message") or "the upstream response failed")
            # In the failed event's place: its number (`_number` counted it already).
            failed = error_event(code, message, self._seq - 1)
            step.error = (classify_error_event(error), failed)
            return True
        self._inspect(name, obj, step)
        return step.done

    def _number(self, obj: JSON) -> None:
        # Servers that number nothing still get strictly increasing numbers from the sidecar's
        # own events after theirs.
        n = obj.get("sequence_number")
        self._seq = max(self._seq, n + 1) if isinstance(n, int) else self._seq + 1

    def _inspect(self, name: str, obj: JSON, step: StreamStep) -> None:
        if name in CONTENT_DELTAS:
            if obj.get("delta"):
                step.content = True
                self._delta(name, obj)
        elif name in LIFECYCLE:
            self._lifecycle(_response(obj))
        elif name == "response.output_item.added":
            self._added(obj)
            step.content = step.content or item_has_content(obj.get("item"))
        elif name == "response.output_item.done":
            step.content = True
            self._item_done(obj)
        elif name in FINAL:
            step.finished = step.done = True
            self._count(_response(obj).get("usage"))

    def _lifecycle(self, response: JSON) -> None:
        self._response_id = str(response.get("id") or self._response_id)
        created = response.get("created_at")
        if isinstance(created, int):
            self._created_at = created

    def _added(self, obj: JSON) -> None:
        found = obj.get("item")
        item: JSON = found if isinstance(found, dict) else {}
        index = obj.get("output_index")
        index = index if isinstance(index, int) else self._outputs
        self._outputs = max(self._outputs, index + 1)
        kind = item.get("type")
        if kind not in TEXT_ITEMS:
            self.text_only = False
        if kind == "message":
            self._messages += 1
            if self._messages > 1:
                self.text_only = False
            self._open = OpenItem("output_text", index, item)

    def _delta(self, name: str, obj: JSON) -> None:
        if name != "response.output_text.delta":
            if name != "response.reasoning_summary_text.delta":
                self.text_only = False
            return
        delta = obj["delta"]
        if not isinstance(delta, str):
            self.text_only = False
            return
        self.text.append(delta)
        if self._open is not None and self._open.item.get("id") == obj.get("item_id"):
            self._open.text.append(delta)

    def _item_done(self, obj: JSON) -> None:
        index, item = obj.get("output_index"), obj.get("item")
        if isinstance(index, int) and isinstance(item, dict):
            self._done[index] = item
            if self._open is not None and self._open.output_index == index:
                self._open = None

    def _count(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage = responses_usage(usage)

    def cursor(self) -> Cursor:
        return Cursor(
            self._response_id,
            self._created_at,
            self._seq,
            dict(self._done),
            self._open,
            self._outputs,
        )

    def terminal_error(self, message: str, error_type: str) -> bytes:
        event = error_event(error_type, message or error_type, self._seq)
        self._seq += 1
        return event

    def terminator(self) -> bytes:
        # Only a final event finishes a Responses stream, and it is its own terminator.
        return b""


class ResponsesSink(Sink):
    """Any pivot `Source` (OpenAI chat SSE, Anthropic SSE, Bedrock ConverseStream) with this sink
    serves a Responses caller: each vendor's stream maps once, to chat chunks."""

    def __init__(self, *, request: JSON, names: ToolNames, model: str) -> None:
        self.events = ResponsesEvents(request=request, names=names, model=model)

    def write(self, chunk: JSON) -> bytes:
        return self._closing(self.events.feed(chunk))

    def close(self) -> bytes:
        return self._closing(self.events.close())

    def error(self, e: InBandError) -> bytes:
        return self.error_event(e.envelope)

    def error_event(self, envelope: JSON) -> bytes:
        """An OpenAI error envelope as the stream's `error` event."""
        return self._closing(self.events.error_from_envelope(envelope))

    def terminal_error(self, message: str, error_type: str) -> bytes:
        return self._closing(self.events.error(error_type, message or error_type))

    def _closing(self, out: bytes) -> bytes:
        self.closed = self.events.closed
        return out

    def cursor(self) -> Cursor:
        return self.events.cursor()

    def resume_from(self, cursor: Cursor) -> None:
        self.events.resume_from(cursor)
