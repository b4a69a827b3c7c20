"""OpenAI Responses answers written from the Chat Completions pivot: JSON, and the event stream.

A chat answer becomes one Response: `reasoning` (from the `reasoning_content` / `reasoning` that
OpenAI-compatible servers add), then a `message` with `output_text` (or `refusal`), then one
`function_call` per tool call. `finish_reason` `length` and `content_filter` make the response
`incomplete` (`max_output_tokens` / `content_filter`); every other finish is `completed`.

Stream rules (the official sequence, which the openai SDK's `responses.stream()` accumulates):
- `response.created` and `response.in_progress` open the stream, with the first chunk;
- each output item is `response.output_item.added` … `response.output_item.done`; a message's
  text is `response.content_part.added`, `response.output_text.delta`s, `.done`,
  `response.content_part.done`; a call's arguments are `response.function_call_arguments.delta`s
  and `.done`; reasoning is `response.reasoning_summary_part.added`,
  `response.reasoning_summary_text.delta`s, `.done`, `response.reasoning_summary_part.done`;
- a `finish_reason` closes every open item; the final event, `response.completed` (or
  `response.incomplete`), waits for the usage chunk that follows the finish, and carries it;
- every event has a `sequence_number`, strictly increasing over the whole caller stream (a
  stream-recovery continuation goes on from the broken stream's `Cursor`);
- errors are one `error` event: `{"type": "error", "code", "message", "param",
  "sequence_number"}`; no `response.completed` follows.
"""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from sidecar.dialects.openai_response import reasoning_text
from sidecar.dialects.responses_request import ToolNames

JSON = dict[str, Any]

INCOMPLETE_REASONS: Final[dict[str, str]] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def usage_from_chat(usage: Any) -> JSON:
    usage = usage if isinstance(usage, dict) else {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def envelope(
    request: JSON,
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[JSON],
    usage: JSON | None = None,
    finish: str | None = None,
) -> JSON:
    """A Response object: the answer's fields, and the request's settings echoed as OpenAI does.
    `store` is false: a translated answer is stored nowhere."""
    reason = INCOMPLETE_REASONS.get(finish or "") if status == "incomplete" else None
    reasoning = _object(request.get("reasoning"))
    text = _object(request.get("text"))
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": reason} if reason else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": usage,
        "metadata": request.get("metadata") or {},
    }


def _object(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _status(finish: Any) -> str:
    return "incomplete" if finish in INCOMPLETE_REASONS else "completed"


# ---------------------------------------------------------------------------------------------
# JSON answers


def chat_to_response(chat: JSON, *, request: JSON, names: ToolNames, model: str) -> JSON:
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[JSON] = []
    thought = reasoning_text(message)
    if thought:
        output.append(reasoning_item(new_id("rs_"), thought))
    text = _text_of(message.get("content"))
    if text:
        output.append(message_item(new_id("msg_"), "output_text", text))
    elif message.get("refusal"):
        output.append(message_item(new_id("msg_"), "refusal", message["refusal"]))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        item = call_item(new_id("fc_"), call.get("id"), fn.get("name"), names)
        item.update(status="completed", arguments=fn.get("arguments") or "")
        output.append(item)
    finish = choice.get("finish_reason")
    return envelope(
        request,
        response_id=new_id("resp_"),
        created_at=int(chat.get("created") or time.time()),
        model=model,
        status=_status(finish),
        output=output,
        usage=usage_from_chat(chat.get("usage")),
        finish=finish,
    )


def _text_of(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.get("text") or "" for p in content if isinstance(p, dict))


def message_item(item_id: str, kind: str, text: str, status: str = "completed") -> JSON:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_part(kind, text)],
    }


def _part(kind: str, text: str) -> JSON:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id: str, text: str) -> JSON:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "summary": summary}


def call_item(item_id: str, call_id: Any, flat_name: Any, names: ToolNames) -> JSON:
    namespace, name = names.split(flat_name)
    item: JSON = {
        "id": item_id,
        "type": "function_call",
        "status": "in_progress",
        "call_id": call_id or new_id("call_"),
        "name": name,
        "arguments": "",
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item


# ---------------------------------------------------------------------------------------------
# Streams


@dataclass(slots=True)
class OpenItem:
    """An output item the caller has seen added and not yet done."""

    kind: str  # "output_text" | "refusal" | "reasoning" | "function_call"
    output_index: int
    item: JSON
    text: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Cursor:
    """Where a caller's Responses stream stands: what a continuation needs to go on in it."""

    response_id: str
    created_at: int
    sequence_number: int
    # Items done, by output index.
    done: dict[int, JSON]
    # The message whose text is being continued, if one is open.
    open: OpenItem | None
    outputs: int


class ResponsesEvents:
    """Chat chunks in, Responses events out."""

    def __init__(self, *, request: JSON, names: ToolNames, model: str) -> None:
        self._request = request
        self._names = names
        self._model = model
        self.id = new_id("resp_")
        self.created_at = int(time.time())
        self.seq = 0
        self.started = False
        self.closed = False
        self._done: dict[int, JSON] = {}
        self._current: OpenItem | None = None
        self._calls: dict[int, OpenItem] = {}
        self._outputs = 0
        self._finish: str | None = None
        self._finished = False
        self._usage: JSON | None = None

    # -- a continuation (stream recovery) goes on in the caller's stream -----------------------

    def cursor(self) -> Cursor:
        return Cursor(
            self.id, self.created_at, self.seq, dict(self._done), self._current, self._outputs
        )

    def resume_from(self, cursor: Cursor) -> None:
        self.id, self.created_at = cursor.response_id, cursor.created_at
        self.seq = cursor.sequence_number
        self._done = dict(cursor.done)
        self._current = cursor.open
        self._outputs = cursor.outputs
        self.started = True

    # -- writing ---------------------------------------------------------------------------------

    def feed(self, chunk: JSON) -> bytes:
        if self.closed or "error" in chunk:
            return b""
        out: list[bytes] = []
        if not self.started:
            self.started = True
            out.append(self._lifecycle("response.created"))
            out.append(self._lifecycle("response.in_progress"))
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
            if self._finished:
                out.append(self._terminal())
        return b"".join(out)

    def close(self) -> bytes:
        """The final event of a stream that finished; b"" for one that did not (it was cut)."""
        if self.closed or not self._finished:
            return b""
        return self._terminal()

    def error(self, code: str, message: str, param: Any = None) -> bytes:
        self.closed = True
        body = {"type": "error", "code": code, "message": message, "param": param}
        return self._event("error", body)

    def error_from_envelope(self, envelope: Any) -> bytes:
        inner = envelope.get("error") if isinstance(envelope, dict) else None
        inner = inner if isinstance(inner, dict) else {}
        code = str(inner.get("code") or inner.get("type") or "server_error")
        message = str(inner.get("message") or "upstream error")
        return self.error(code, message, inner.get("param"))

    def _choice(self, choice: JSON, out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        if thought := reasoning_text(delta):
            self._delta("reasoning", thought, out)
        if text := delta.get("content"):
            self._delta("output_text", text, out)
        if refusal := delta.get("refusal"):
            self._delta("refusal", refusal, out)
        for fragment in delta.get("tool_calls") or []:
            self._call_fragment(fragment, out)
        finish = choice.get("finish_reason")
        if finish and not self._finished:
            self._finished, self._finish = True, finish
            self._close_all(out)

    def _delta(self, kind: str, text: str, out: list[bytes]) -> None:
        current = self._current
        if current is None or current.kind != kind:
            self._close_current(out)
            current = self._current = self._open(kind, out)
        current.text.append(text)
        ids = self._ids(current)
        if kind == "reasoning":
            out.append(self._event("response.reasoning_summary_text.delta", {**ids, "delta": text}))
        elif kind == "refusal":
            out.append(self._event("response.refusal.delta", {**ids, "delta": text}))
        else:
            delta = {**ids, "delta": text, "logprobs": []}
            out.append(self._event("response.output_text.delta", delta))

    def _open(self, kind: str, out: list[bytes]) -> OpenItem:
        index = self._outputs
        self._outputs += 1
        if kind == "reasoning":
            item: JSON = {"id": new_id("rs_"), "type": "reasoning", "summary": []}
        else:
            item = {
                "id": new_id("msg_"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        opened = OpenItem(kind, index, item)
        out.append(self._added(opened))
        part = {"type": "summary_text", "text": ""} if kind == "reasoning" else _part(kind, "")
        name = (
            "response.reasoning_summary_part.added"
            if kind == "reasoning"
            else "response.content_part.added"
        )
        out.append(self._event(name, {**self._ids(opened), "part": part}))
        return opened

    def _call_fragment(self, fragment: JSON, out: list[bytes]) -> None:
        k = int(fragment.get("index", 0))
        fn = fragment.get("function") or {}
        call = self._calls.get(k)
        if call is None:
            self._close_current(out)
            index = self._outputs
            self._outputs += 1
            item = call_item(new_id("fc_"), fragment.get("id"), fn.get("name"), self._names)
            call = self._calls[k] = OpenItem("function_call", index, item)
            out.append(self._added(call))
        arguments = fn.get("arguments")
        if arguments:
            call.text.append(arguments)
            ids = {"item_id": call.item["id"], "output_index": call.output_index}
            out.append(
                self._event("response.function_call_arguments.delta", {**ids, "delta": arguments})
            )

    def _close_all(self, out: list[bytes]) -> None:
        self._close_current(out)
        for call in self._calls.values():
            arguments = "".join(call.text)
            ids = {"item_id": call.item["id"], "output_index": call.output_index}
            done = {**ids, "name": call.item["name"], "arguments": arguments}
            out.append(self._event("response.function_call_arguments.done", done))
            self._item_done(call, {**call.item, "status": "completed", "arguments": arguments}, out)
        self._calls = {}

    def _close_current(self, out: list[bytes]) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        text = "".join(current.text)
        ids = self._ids(current)
        if current.kind == "reasoning":
            out.append(self._event("response.reasoning_summary_text.done", {**ids, "text": text}))
            part = {"type": "summary_text", "text": text}
            out.append(self._event("response.reasoning_summary_part.done", {**ids, "part": part}))
            self._item_done(current, reasoning_item(current.item["id"], text), out)
            return
        if current.kind == "refusal":
            out.append(self._event("response.refusal.done", {**ids, "refusal": text}))
        else:
            done = {**ids, "text": text, "logprobs": []}
            out.append(self._event("response.output_text.done", done))
        part = _part(current.kind, text)
        out.append(self._event("response.content_part.done", {**ids, "part": part}))
        self._item_done(current, message_item(current.item["id"], current.kind, text), out)

    def _item_done(self, opened: OpenItem, item: JSON, out: list[bytes]) -> None:
        self._done[opened.output_index] = item
        data = {"output_index": opened.output_index, "item": item}
        out.append(self._event("response.output_item.done", data))

    def _added(self, opened: OpenItem) -> bytes:
        data = {"output_index": opened.output_index, "item": opened.item}
        return self._event("response.output_item.added", data)

    def _ids(self, opened: OpenItem) -> JSON:
        index_key = "summary_index" if opened.kind == "reasoning" else "content_index"
        return {"item_id": opened.item["id"], "output_index": opened.output_index, index_key: 0}

    def _terminal(self) -> bytes:
        self.closed = True
        status = _status(self._finish)
        output = [self._done[i] for i in sorted(self._done)]
        response = self._response(status, output, usage_from_chat(self._usage))
        name = "response.incomplete" if status == "incomplete" else "response.completed"
        return self._event(name, {"response": response})

    def _lifecycle(self, name: str) -> bytes:
        return self._event(name, {"response": self._response("in_progress", [], None)})

    def _response(self, status: str, output: list[JSON], usage: JSON | None) -> JSON:
        return envelope(
            self._request,
            response_id=self.id,
            created_at=self.created_at,
            model=self._model,
            status=status,
            output=output,
            usage=usage,
            finish=self._finish,
        )

    def _event(self, name: str, data: JSON) -> bytes:
        body = {"type": name, **data, "sequence_number": self.seq}
        self.seq += 1
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"
