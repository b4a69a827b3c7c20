"""Streams through the pivot dialect (`sidecar.dialects.pivot`): commit signals read off OpenAI
chunks whatever the wire, and each sink's own writing, errors and resumption (pure). A scripted
source hands the stream its items, so the pivot is tested apart from every real source."""

from typing import Any

import orjson
import pytest

from sidecar.call import Usage
from sidecar.dialects.pivot import (
    END,
    MALFORMED_MESSAGE,
    AnthropicSink,
    InBandError,
    Item,
    OpenAISink,
    PivotStream,
    Sink,
    Source,
    malformed,
)
from sidecar.failure import FailureClass

JSON = dict[str, Any]


class Scripted(Source):
    """`feed(items)` returns the items; `finish()` the chunks still owed."""

    def __init__(self, owed: list[JSON] | None = None) -> None:
        self.owed = owed or []

    def feed(self, data: Any) -> list[Item]:
        items: list[Item] = data
        return items

    def finish(self) -> list[JSON]:
        return self.owed

    @property
    def usage(self) -> Usage:
        return Usage(3, 4)


def chunk(delta: JSON, finish: str | None = None, *more: JSON) -> JSON:
    choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
    choices += [{"index": i + 1, "delta": d, "finish_reason": None} for i, d in enumerate(more)]
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices}


ROLE = chunk({"role": "assistant", "content": ""})


def openai(source: Source | None = None) -> PivotStream:
    return PivotStream(source or Scripted(), OpenAISink())


def anthropic(source: Source | None = None) -> PivotStream:
    return PivotStream(source or Scripted(), AnthropicSink(model="claude-x"))


def names(out: bytes) -> list[str]:
    return [line[7:].decode() for line in out.splitlines() if line.startswith(b"event: ")]


def test_a_role_chunk_is_written_but_is_not_content() -> None:
    step = openai().feed([ROLE])
    assert not step.content
    assert step.out == b"data: " + orjson.dumps(ROLE) + b"\n\n"


@pytest.mark.parametrize(
    "delta",
    [
        {"content": "hi"},
        {"refusal": "no"},
        {"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f", "arguments": ""}}]},
    ],
    ids=["text", "refusal", "tool_call"],
)
def test_text_refusals_and_tool_calls_are_content(delta: JSON) -> None:
    assert openai().feed([chunk(delta)]).content


def test_only_plain_text_in_one_choice_keeps_a_stream_recoverable() -> None:
    text = openai()
    text.feed([chunk({"content": "Hel"}), chunk({"content": "lo"})])
    assert (text.text, text.text_only) == (["Hel", "lo"], True)
    tools = openai()
    tools.feed([chunk({"tool_calls": [{"index": 0}]})])
    assert not tools.text_only
    two = openai()
    two.feed([chunk({"content": "a"}, None, {"content": "b"})])
    assert not two.text_only


def test_a_finish_reason_is_finished_and_the_terminator_is_done_with_the_sinks_close() -> None:
    stream = openai()
    finished = stream.feed([chunk({}, "stop")])
    assert (finished.finished, finished.done) == (True, False)
    done = stream.feed([END, chunk({"content": "after the end"})])
    assert done.done
    assert done.out == b"data: [DONE]\n\n"


def test_an_in_band_error_stops_the_step_and_is_written_by_the_sink() -> None:
    envelope = {"error": {"message": "busy", "type": "server_error", "code": "overloaded"}}
    step = openai().feed(
        [chunk({"content": "a"}), InBandError(FailureClass.OVERLOADED, envelope), ROLE]
    )
    assert step.out == b"data: " + orjson.dumps(chunk({"content": "a"})) + b"\n\n"
    assert step.error == (FailureClass.OVERLOADED, b"data: " + orjson.dumps(envelope) + b"\n\n")


def test_an_anthropic_caller_gets_an_in_band_error_as_an_anthropic_error_event() -> None:
    envelope = {"error": {"message": "slow down", "type": "rate_limit_exceeded"}}
    step = anthropic().feed([InBandError(FailureClass.RATE_LIMITED, envelope)])
    assert step.error is not None
    cls, event = step.error
    assert cls is FailureClass.RATE_LIMITED
    assert names(event) == ["error"]
    data = orjson.loads(event.split(b"data: ", 1)[1])
    assert data["error"] == {"type": "rate_limit_error", "message": "slow down"}


def test_a_malformed_event_is_an_invalid_response_with_an_openai_envelope() -> None:
    bad = malformed()
    assert (bad.cls, bad.status) == (FailureClass.INVALID_RESPONSE, 502)
    assert bad.envelope["error"]["message"] == MALFORMED_MESSAGE
    assert bad.envelope["error"]["code"] == "invalid_response"


def test_the_anthropic_sink_is_done_at_its_own_message_stop() -> None:
    stream = anthropic()
    start = stream.feed([ROLE, chunk({"content": "hi"})])
    assert names(start.out)[:2] == ["message_start", "content_block_start"]
    usage = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    end = stream.feed([chunk({}, "stop"), usage, chunk({"content": "ignored"})])
    assert end.done and end.finished
    assert names(end.out)[-2:] == ["message_delta", "message_stop"]
    assert stream.usage == Usage(3, 4)  # the source's count, as the chain reads it


def test_a_resumed_openai_stream_drops_the_continuations_role_chunk() -> None:
    stream = openai()
    stream.resume = True
    step = stream.feed([ROLE, chunk({"content": "more"})])
    assert step.out == b"data: " + orjson.dumps(chunk({"content": "more"})) + b"\n\n"


def test_a_resumed_anthropic_stream_goes_on_in_the_callers_open_block() -> None:
    stream = anthropic()
    stream.resume = True
    step = stream.feed([ROLE, chunk({"content": "more"})])
    assert names(step.out) == ["content_block_delta"]


def test_the_terminator_writes_what_the_source_still_owes_then_closes() -> None:
    usage = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    stream = openai(Scripted(owed=[usage]))
    stream.feed([chunk({"content": "a"}, "stop")])
    assert stream.terminator() == b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n"


def test_an_anthropic_terminator_carries_the_owed_usage_in_its_one_message_delta() -> None:
    usage = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    stream = anthropic(Scripted(owed=[usage]))
    stream.feed([ROLE, chunk({"content": "a"}, "stop")])
    out = stream.terminator()
    assert names(out) == ["message_delta", "message_stop"]
    delta = orjson.loads(out.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert delta["usage"]["output_tokens"] == 2


@pytest.mark.parametrize(
    ("sink", "head"),
    [(OpenAISink(), b"data: "), (AnthropicSink(model="m"), b"event: error\n")],
    ids=["openai", "anthropic"],
)
def test_a_terminal_error_is_the_sinks_own(sink: Sink, head: bytes) -> None:
    out = PivotStream(Scripted(), sink).terminal_error("cut", "stream_interrupted")
    assert out.startswith(head)
    assert b"cut" in out
