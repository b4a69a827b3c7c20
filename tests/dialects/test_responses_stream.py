"""The native Responses stream adapter: its commit point, in-band errors, ends and cursor."""

import itertools

import openai
import orjson
import pytest
from conftest import Serve
from fakes.responses_upstream import Script, event, stream_events
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
