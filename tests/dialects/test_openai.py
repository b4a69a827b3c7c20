"""The OpenAI dialect (`sidecar.dialects.openai`): the stream adapter gives the same relayed bytes
and signals for any split of the input; usage and terminal error events."""

from typing import Any

import orjson
import pytest
from fakes.openai_upstream import chunk, usage_chunk
from hypothesis import given
from hypothesis import strategies as st

from sidecar.call import StreamStep, Usage
from sidecar.dialects.openai import OpenAIStream, error_event, usage_of

EVENTS = [
    orjson.dumps(chunk("m", {"role": "assistant", "content": ""})),
    *(orjson.dumps(chunk("m", {"content": f" t{i}"})) for i in range(6)),
    orjson.dumps(chunk("m", {}, "stop")),
    orjson.dumps(usage_chunk("m", 6)),
]
STREAM = b"".join(b"data: " + e + b"\n\n" for e in EVENTS) + b"data: [DONE]\n\n"
# The same events with keep-alive comments and one event whose JSON spans two data lines.
NOISY = (
    b": keepalive\n\n"
    + b"".join(b"data: " + e + b"\n\n" for e in EVENTS[:3])
    + b": ping\n\n"
    + b"data: "
    + EVENTS[3].replace(b'"delta":', b'"delta":\ndata: ')
    + b"\n\n"
    + b"".join(b"data: " + e + b"\n\n" for e in EVENTS[4:])
    + b"data: [DONE]\n\n"
)


def run(pieces: list[bytes]) -> tuple[bytes, list[tuple[bool, bool, bool]], str, int]:
    a = OpenAIStream(include_usage=False)
    out, signals = b"", []
    steps: list[StreamStep] = [a.feed(p) for p in pieces] + [a.end()]
    for s in steps:
        out += s.out
        if s.content or s.finished or s.done:
            signals.append((s.content, s.finished, s.done))
    return out, signals, "".join(a.text), a.usage.completion


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    cuts = st.lists(st.integers(0, len(data)), max_size=12).map(sorted)
    return cuts.map(lambda c: [data[i:j] for i, j in zip([0, *c], [*c, len(data)], strict=True)])


WHOLE = run([STREAM])


@given(splits(STREAM))
def test_any_split_relays_the_same_bytes_and_signals(pieces: list[bytes]) -> None:
    out, signals, text, completion = run([p for p in pieces if p])
    assert out == WHOLE[0]
    assert text == WHOLE[2] == " t0 t1 t2 t3 t4 t5"
    assert completion == WHOLE[3] == 6
    assert any(c for c, _, _ in signals)
    assert signals[-1][2]  # done


@given(splits(NOISY))
def test_comments_and_multi_line_events_give_the_same_text_for_any_split(
    pieces: list[bytes],
) -> None:
    _, signals, text, completion = run([p for p in pieces if p])
    assert text == WHOLE[2]
    assert completion == 6
    assert signals[-1][2]


def test_whole_events_are_relayed_as_the_same_bytes_minus_the_unasked_usage_chunk() -> None:
    usage_event = b"data: " + EVENTS[-1] + b"\n\n"
    assert WHOLE[0] == STREAM.replace(usage_event, b"")


def test_crlf_streams_take_the_slow_path_and_give_the_same_events() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    out, _, text, _ = run([crlf])
    assert out == WHOLE[0]
    assert text == WHOLE[2]


def test_a_chunk_of_many_events_relays_what_the_same_events_relay_one_by_one() -> None:
    annotation = orjson.dumps(
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "finish_reason": None, "content_filter_results": {}}],
        }
    )
    events = [*EVENTS[:3], annotation, *EVENTS[3:]]
    whole = b"".join(b"data: " + e + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    one_by_one = [b"data: " + e + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    batched, by_event = run([whole]), run(one_by_one)
    assert batched[0] == by_event[0]
    assert batched[2:] == by_event[2:]
    assert b'"delta":{}' in batched[0]
    assert orjson.dumps(usage_chunk("m", 6)) not in batched[0]


def _signals(*reads: bytes) -> tuple[object, ...]:
    a = OpenAIStream(include_usage=False)
    steps: list[StreamStep] = []
    for r in reads:
        steps.append(a.feed(r))
        if steps[-1].error is not None:  # the relay stops at an error
            break
    else:
        steps.append(a.end())
    error = next((s.error[0] for s in steps if s.error is not None), None)
    return (
        any(s.content for s in steps),
        any(s.finished for s in steps),
        any(s.done for s in steps),
        error,
        "".join(map(str, a.text)),
        a.text_only,
        a.usage,
        b"".join(s.out for s in steps),
    )


ODD_EVENTS = {
    "tool call": chunk("m", {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
    "refusal": chunk("m", {"refusal": "no"}),
    "null refusal": chunk("m", {"content": "x", "refusal": None}),
    "two choices": {**chunk("m", {"content": "a"}), "choices": [{"delta": {"content": "a"}}] * 2},
    "usage": usage_chunk("m", 6),
    "error beside choices": {**chunk("m", {"content": "a"}), "error": {"message": "boom"}},
    "null error": {**chunk("m", {"content": "a"}), "error": None},
    "finish length": chunk("m", {}, "length"),
    "content not text": chunk("m", {"content": ["a"]}),
    "no delta": {"choices": [{"index": 0, "finish_reason": None}]},
    "not an object": [1],
    # Raw bytes: JSON that is only whole if a line break inside it is taken for whitespace.
    "json across lines": b'{"choices":\n[{"delta":{"content":"a"}}]}',
    "json across a cr": b'{"choices":\r[{"delta":{"content":"a"}}]}',
    # msgspec neither checks the UTF-8 of a field it skips nor recurses without limit.
    "bad utf-8 in a field not read": b'{"id":"\xff","choices":[{"delta":{"content":"a"}}]}',
    "deep nesting in a field not read": b'{"x":'
    + b"[" * 1000
    + b"]" * 1000
    + b',"choices":[{"delta":{"content":"a"}}]}',
}


@pytest.mark.parametrize("odd", ODD_EVENTS.values(), ids=ODD_EVENTS.keys())
def test_the_typed_fast_path_gives_the_signals_of_the_exact_decoder_for_every_shape(
    odd: object,
) -> None:
    events = [*EVENTS[:3], odd if isinstance(odd, bytes) else orjson.dumps(odd), *EVENTS[3:]]
    whole = b"".join(b"data: " + e + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    # Fed a byte at a time, every event goes through the SSE decoder and is read in full.
    exact = _signals(*(whole[i : i + 1] for i in range(len(whole))))
    assert _signals(whole) == exact
    # The same event alone in its read, and as the last event of one.
    one_by_one = [b"data: " + e + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    assert _signals(*one_by_one) == exact


@pytest.mark.parametrize(
    ("obj", "usage"),
    [
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, Usage(3, 4)),
        ({"usage": {"prompt_tokens": 3}}, Usage(3, 0)),
        ({"usage": {"prompt_tokens": "3", "completion_tokens": None}}, Usage(0, 0)),
        ({"usage": None}, None),
        ({"choices": []}, None),
        ([1, 2], None),
    ],
    ids=["both", "prompt-only", "not-integers", "null", "absent", "not-an-object"],
)
def test_usage_is_read_from_integer_counts_only(obj: Any, usage: Usage | None) -> None:
    assert usage_of(obj) == usage


def test_a_terminal_error_event_is_a_data_line_with_the_type_as_code() -> None:
    event = error_event("cut", "stream_interrupted")
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert orjson.loads(event[6:]) == {
        "error": {
            "message": "cut",
            "type": "stream_interrupted",
            "param": None,
            "code": "stream_interrupted",
        }
    }
