"""The native Responses stream adapter: its commit point, in-band errors, ends and cursor."""

import itertools

import openai
import orjson
import pytest
from conftest import Serve
from fakes.responses_upstream import USAGE, Script, event, stream_events
from hypothesis import given
from hypothesis import strategies as st

from sidecar.call import StreamStep
from sidecar.dialects.responses_request import ToolNames
from sidecar.dialects.responses_response import ResponsesEvents
from sidecar.dialects.responses_stream import ResponsesStream
from sidecar.failure import FailureClass

F = FailureClass


def events_of(s: Script) -> list[bytes]:
    return [e for e in stream_events(s, "gpt-test") if e is not None]


def feed_each(raw: list[bytes]) -> tuple[ResponsesStream, list[StreamStep]]:
    a = ResponsesStream()
    return a, [a.feed(e) for e in raw]


def commit_index(steps: list[StreamStep]) -> int:
    return next(i for i, s in enumerate(steps) if s.content or s.finished)


def types(raw: bytes) -> list[str]:
    return [orjson.loads(b.split(b"\ndata: ")[1])["type"] for b in raw.split(b"\n\n") if b]


def test_lifecycle_events_and_an_empty_added_item_do_not_commit() -> None:
    raw = events_of(Script(text="Hello there"))
    _, steps = feed_each(raw)
    i = commit_index(steps)
    assert types(b"".join(raw[:i])) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types(raw[i]) == ["response.output_text.delta"]


@pytest.mark.parametrize(
    ("script", "first"),
    [
        (Script(call=("exec_command", '{"cmd": "ls"}')), "response.function_call_arguments.delta"),
        (Script(reasoning="Thinking."), "response.reasoning_summary_text.delta"),
    ],
)
def test_call_arguments_and_reasoning_summaries_commit(script: Script, first: str) -> None:
    raw = events_of(script)
    _, steps = feed_each(raw)
    assert types(raw[commit_index(steps)]) == [first]


def test_a_refusal_delta_commits() -> None:
    delta = event("response.refusal.delta", {"item_id": "m", "output_index": 0, "delta": "No"}, 3)
    step = ResponsesStream().feed(delta)
    assert step.content


def test_an_added_item_that_already_has_content_commits() -> None:
    item = {"type": "function_call", "id": "fc", "call_id": "c", "name": "f", "arguments": "{}"}
    step = ResponsesStream().feed(
        event("response.output_item.added", {"output_index": 0, "item": item}, 2)
    )
    assert step.content


def test_a_completed_event_finishes_and_ends_the_stream() -> None:
    a, steps = feed_each(events_of(Script(text="one two")))
    assert steps[-1].finished and steps[-1].done
    assert not any(s.done for s in steps[:-1])
    assert (a.usage.prompt, a.usage.completion) == (11, 4)
    assert "".join(a.text) == "one two" and a.text_only


def test_a_stream_without_a_final_event_never_finishes() -> None:
    a, steps = feed_each(events_of(Script(end="no_final")))
    end = a.end()
    assert not any(s.finished or s.done for s in [*steps, end])
    assert a.terminator() == b""


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("rate_limit_exceeded", F.RATE_LIMITED),
        ("server_is_overloaded", F.OVERLOADED),
        ("insufficient_quota", F.QUOTA_EXHAUSTED),
        ("server_error", F.SERVER_ERROR),
    ],
)
@pytest.mark.parametrize("end", ["error_first", "failed_first"])
def test_an_error_before_content_is_classified_like_a_chat_error_event(
    end: str, code: str, cls: FailureClass
) -> None:
    raw = events_of(Script(end=end, error_code=code))
    step = ResponsesStream().feed(b"".join(raw))
    assert step.error is not None and not step.content
    assert step.error[0] is cls
    if end == "error_first":
        assert step.error[1] == raw[0]
    else:  # a response.failed becomes the stream's one error event, in its place
        assert orjson.loads(step.error[1].split(b"data: ")[1]) == {
            "type": "error",
            "code": code,
            "message": "upstream died",
            "param": None,
            "sequence_number": 0,
        }


@pytest.mark.parametrize("end", ["error", "failed"])
def test_an_error_after_commit_ends_the_stream_as_one_error_event(end: str) -> None:
    raw = events_of(Script(text="a b c d", end=end, after=2))
    _, steps = feed_each(raw)
    assert any(s.content for s in steps[:-1])
    last = steps[-1]
    assert last.error is not None and last.out == b""
    relayed = orjson.loads(last.error[1].split(b"data: ")[1])
    original = orjson.loads(raw[-1].split(b"data: ")[1])
    assert relayed["type"] == "error"
    assert relayed["sequence_number"] == original["sequence_number"]
    assert relayed["code"] == "server_error"
    assert not any(s.finished for s in steps)


def test_a_malformed_event_is_invalid_response_with_the_next_sequence_number() -> None:
    raw = events_of(Script(text="a b c", end="malformed", after=1))
    _, steps = feed_each(raw)
    assert steps[-1].error is not None and steps[-1].error[0] is F.INVALID_RESPONSE
    error = orjson.loads(steps[-1].error[1].split(b"data: ")[1])
    previous = orjson.loads(raw[-2].split(b"data: ")[1])["sequence_number"]
    assert error["type"] == "error" and error["sequence_number"] == previous + 1


def test_a_terminal_error_is_numbered_after_the_last_event_relayed() -> None:
    raw = events_of(Script(text="a b c", end="cut", after=2))
    a, _ = feed_each(raw)
    last = orjson.loads(raw[-1].split(b"data: ")[1])["sequence_number"]
    terminal = a.terminal_error("upstream stream was cut off", "stream_interrupted")
    assert terminal.startswith(b"event: error\ndata: ")
    error = orjson.loads(terminal.split(b"data: ")[1])
    assert error == {
        "type": "error",
        "code": "stream_interrupted",
        "message": "upstream stream was cut off",
        "param": None,
        "sequence_number": last + 1,
    }


def test_a_function_call_makes_the_stream_not_text_only() -> None:
    a, _ = feed_each(events_of(Script(call=("f", "{}"))))
    assert not a.text_only


def test_events_without_an_event_line_are_relayed_named() -> None:
    data = orjson.dumps({"type": "response.created", "response": {"id": "r"}, "sequence_number": 0})
    step = ResponsesStream().feed(b"data: " + data + b"\n\n")
    assert step.out == b"event: response.created\ndata: " + data + b"\n\n"


STREAM = b"".join(events_of(Script(text="one two three four five", reasoning="Hm.")))


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), unique=True, max_size=12))
def test_any_split_relays_the_same_bytes_and_signals(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    a = ResponsesStream()
    steps = [a.feed(STREAM[i:j]) for i, j in itertools.pairwise(bounds)] + [a.end()]
    assert b"".join(s.out for s in steps) == STREAM
    assert sum(s.done for s in steps) == 1
    assert "".join(a.text) == "one two three four five"


async def test_a_native_head_and_a_translated_continuation_accumulate_in_the_sdk(
    serve: Serve,
) -> None:
    raw = events_of(Script(text="Hello there, friend.", end="cut", after=2))
    a, steps = feed_each(raw)
    head = b"".join(s.out for s in steps)
    cont = ResponsesEvents(request={"input": "hi"}, names=ToolNames(), model="gpt-test")
    cont.resume_from(a.cursor())
    tail = (
        b"".join(
            cont.feed(c)
            for c in [
                {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                {"choices": [{"index": 0, "delta": {"content": " friend."}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            ]
        )
        + cont.close()
    )
    client = openai.AsyncOpenAI(base_url=await serve(head + tail), api_key="k", max_retries=0)
    try:
        async with client.responses.stream(model="gpt-test", input="hi") as stream:
            numbers = [e.sequence_number async for e in stream]
            final = await stream.get_final_response()
    finally:
        await client.close()
    assert final.output_text == "Hello there, friend."
    assert final.id == "resp_fake"
    assert numbers == sorted(set(numbers))


def read_all(*reads: bytes) -> tuple[object, ...]:
    """What a stream's reads come to, as the relay reads them: it stops at an error or a final
    event."""
    a = ResponsesStream()
    steps: list[StreamStep] = []
    for r in reads:
        steps.append(a.feed(r))
        if steps[-1].error is not None or steps[-1].done:
            break
    else:
        steps.append(a.end())
    return (
        any(s.content for s in steps),
        any(s.finished for s in steps),
        any(s.done for s in steps),
        next((s.error for s in steps if s.error is not None), None),
        "".join(a.text),
        a.text_only,
        a.usage,
        a.cursor(),
        b"".join(s.out for s in steps),
    )


def byte_by_byte(read: bytes) -> tuple[object, ...]:
    # A byte at a time, no read holds a whole event: every event goes through the SSE decoder.
    return read_all(*(read[i : i + 1] for i in range(len(read))))


SCRIPTS = {
    "text": Script(text="one two three"),
    "reasoning and text": Script(text="one two", reasoning="Hm."),
    "function call": Script(call=("exec_command", '{"cmd": "ls -la /tmp"}')),
    "refusal": Script(text="x"),
}


def whole_read(script: Script) -> bytes:
    raw = b"".join(events_of(script))
    if script is SCRIPTS["refusal"]:
        raw = raw.replace(b"response.output_text.delta", b"response.refusal.delta")
    return raw


@pytest.mark.parametrize("script", SCRIPTS.values(), ids=SCRIPTS.keys())
def test_a_read_of_whole_events_goes_out_as_itself_with_the_exact_decoders_signals(
    script: Script,
) -> None:
    read = whole_read(script)
    step = ResponsesStream().feed(read)
    assert step.out is read  # one slice of the read: nothing re-framed, nothing joined
    assert step.done
    assert read_all(read) == byte_by_byte(read)


def test_a_read_of_only_opening_events_does_not_commit_and_one_more_delta_does() -> None:
    raw = events_of(Script(text="Hello there"))
    opening = b"".join(raw[:4])  # created, in_progress, an empty message added, its part added
    assert not ResponsesStream().feed(opening).content
    empty = event("response.output_text.delta", {"item_id": "msg_fake", "delta": ""}, 4)
    assert not ResponsesStream().feed(opening + empty).content
    assert ResponsesStream().feed(opening + empty + raw[4]).content


HEAD = events_of(Script(text="one two three four"))[:6]  # through the second text delta
TAIL = events_of(Script(text="one two three four"))[6:]


def _delta(**fields: object) -> bytes:
    body = {"type": "response.output_text.delta", "item_id": "msg_fake", **fields}
    return b"event: response.output_text.delta\ndata: " + orjson.dumps(body) + b"\n\n"


ODD_EVENTS = {
    "malformed json": b"event: response.output_text.delta\ndata: {not json\n\n",
    "not an object": b"event: response.output_text.delta\ndata: [1]\n\n",
    "delta not a string": _delta(delta=["x"], sequence_number=6),
    "delta null": _delta(delta=None, sequence_number=6),
    "number a float": _delta(delta=" x", sequence_number=6.0),
    "number a bool": _delta(delta=" x", sequence_number=True),
    "number null": _delta(delta=" x", sequence_number=None),
    "number missing": _delta(delta=" x"),
    "number behind": _delta(delta=" x", sequence_number=1),
    "number ahead": _delta(delta=" x", sequence_number=40),
    "item id a number": _delta(delta=" x", sequence_number=6, item_id=7),
    "another item's text": _delta(delta=" x", sequence_number=6, item_id="msg_other"),
    "a function call delta": event(
        "response.function_call_arguments.delta", {"item_id": "fc", "delta": "{"}, 6
    ),
    "a reasoning delta": event(
        "response.reasoning_summary_text.delta", {"item_id": "rs", "delta": "Hm"}, 6
    ),
    "an error event": event("error", {"code": "rate_limit_exceeded", "message": "slow"}, 6),
    "a failed response": event(
        "response.failed", {"response": {"error": {"code": "server_error", "message": "x"}}}, 6
    ),
    "an empty event name": b"event: \ndata: "
    + orjson.dumps({"type": "response.output_text.delta", "delta": " x", "sequence_number": 6})
    + b"\n\n",
    "no event line": b"data: "
    + orjson.dumps({"type": "response.output_text.delta", "delta": " x", "sequence_number": 6})
    + b"\n\n",
    "an event line without its data": b"event: response.output_text.delta\n\n",
    "no space after data:": b'event: response.output_text.delta\ndata:{"delta":" x"}\n\n',
    "a comment": b": keep-alive\n\n",
    "an id line": b'id: 6\nevent: response.output_text.delta\ndata: {"delta":" x"}\n\n',
    "data on two lines": b'event: response.output_text.delta\ndata: {"delta":\ndata: " x"}\n\n',
    "json across lines": b'event: response.output_text.delta\ndata: {"delta":\n" x"}\n\n',
    # Three lines apart as whole events are, but the first has no blank line after it.
    "two events without a blank line between": b"event: response.output_text.delta\ndata: "
    b'{"delta":" x"}\nevent: response.output_text.delta\ndata: {"delta":" y"}\n\n\n',
    "crlf": _delta(delta=" x", sequence_number=6).replace(b"\n", b"\r\n"),
    "bad utf-8 in a field not read": b'event: response.output_text.delta\ndata: {"x":"\xff",'
    b'"delta":" x"}\n\n',
    "deep nesting in a field not read": b'event: response.output_text.delta\ndata: {"x":'
    + b"[" * 1000
    + b"]" * 1000
    + b',"delta":" x"}\n\n',
    "an early final event": event("response.completed", {"response": {"usage": USAGE}}, 6),
    "a final event without a response": event("response.incomplete", {"response": None}, 6),
    "a final event whose usage is not an object": event(
        "response.completed", {"response": {"usage": 7}}, 6
    ),
    "a lifecycle event with a new id": event(
        "response.in_progress", {"response": {"id": "resp_2", "created_at": 5}}, 6
    ),
    "a lifecycle event with an empty id": event(
        "response.in_progress", {"response": {"id": "", "created_at": None}}, 6
    ),
    "a lifecycle event whose id is a number": event(
        "response.in_progress", {"response": {"id": 7}}, 6
    ),
    "a lifecycle event whose created_at is a bool": event(
        "response.in_progress", {"response": {"created_at": True}}, 6
    ),
    "a lifecycle event numbered ahead": event("response.in_progress", {"response": {}}, 40),
    "a lifecycle event without a response": event("response.queued", {"response": None}, 6),
    "a lifecycle event whose response is not an object": event(
        "response.in_progress", {"response": "resp_2"}, 6
    ),
    "a final event whose response is not an object": event(
        "response.completed", {"response": [1]}, 6
    ),
    "a failed event whose response is not an object": event("response.failed", {"response": 1}, 6),
    "an unknown event": event("response.audio.delta", {"delta": "AAAA"}, 6),
}


@pytest.mark.parametrize("odd", ODD_EVENTS.values(), ids=ODD_EVENTS.keys())
def test_an_odd_event_in_a_read_gives_what_the_exact_decoder_gives(odd: bytes) -> None:
    read = b"".join([*HEAD, odd, *TAIL])
    exact = byte_by_byte(read)
    assert read_all(read) == exact
    # The same event alone in its read, and as the first and the last event of one.
    assert read_all(*HEAD, odd, *TAIL) == exact
    assert read_all(b"".join(HEAD), odd + b"".join(TAIL)) == exact
    assert read_all(b"".join(HEAD) + odd, b"".join(TAIL)) == exact


def test_a_malformed_event_inside_a_read_ends_its_output_at_the_events_before_it() -> None:
    bad = ODD_EVENTS["malformed json"]
    step = ResponsesStream().feed(b"".join([*HEAD, bad, *TAIL]))
    assert step.out == b"".join(HEAD)
    assert step.error is not None and step.error[0] is F.INVALID_RESPONSE
    assert orjson.loads(step.error[1].split(b"data: ")[1])["sequence_number"] == 6


def test_a_final_event_inside_a_read_ends_its_output_there() -> None:
    final = ODD_EVENTS["an early final event"]
    step = ResponsesStream().feed(b"".join([*HEAD, final, *TAIL]))
    assert step.out == b"".join([*HEAD, final])
    assert step.done and step.finished


def test_after_a_read_split_inside_an_event_whole_reads_go_out_as_themselves_again() -> None:
    a = ResponsesStream()
    head = b"".join(HEAD)
    cut = len(head) - 20
    first, second = a.feed(head[:cut]), a.feed(head[cut:])
    assert first.out + second.out == head
    tail = b"".join(TAIL)
    assert a.feed(tail).out is tail
    assert "".join(a.text) == "one two three four"


def test_a_read_that_falls_back_after_its_first_delta_commits_and_keeps_its_bytes() -> None:
    raw = events_of(Script(text="Hello there"))
    assert types(raw[4]) == ["response.output_text.delta"]
    # Three lines like a whole event, but `event:` without its space: read by the SSE decoder.
    odd = b'event:response.output_text.done\ndata: {"sequence_number":5}\n\n'
    step = ResponsesStream().feed(b"".join(raw[:5]) + odd)
    assert step.content
    assert step.out == b"".join(raw[:5]) + odd.replace(b"event:", b"event: ")
