import itertools
from typing import Any

from botocore.eventstream import EventStreamBuffer, EventStreamMessage
from fakes.eventstream import encode_event, encode_exception
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.dialects.sse import SSEDecoder, SSEEvent

SSE_STREAM = (
    b": keepalive\r\n\r\n"
    b"event: message_start\r\n"
    b'data: {"type":"message_start","message":{"id":"msg_1"}}\r\n\r\n'
    b"event: content_block_delta\n"
    b'data:{"type":"content_block_delta","delta":{"text":"h\xc3\xa9llo \xe2\x9c\x93"}}\n\n'
    b"event: ping\rdata: {}\r\r"
    b'data: {"multi":\n'
    b"data: 1}\n\n"
    b'data: {"choices":[]}\n\n'
    b"data: [DONE]\n\n"
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}'
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _decode_sse(pieces: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [e for piece in pieces for e in decoder.feed(piece)]
    return events + decoder.flush()


def test_sse_stream_decodes_to_the_expected_events() -> None:
    events = _decode_sse([SSE_STREAM])
    assert [e.event for e in events] == [
        "message_start",
        "content_block_delta",
        "ping",
        None,
        None,
        None,
        "message_stop",
    ]
    assert events[1].data == '{"type":"content_block_delta","delta":{"text":"héllo ✓"}}'
    assert events[3].data == '{"multi":\n1}'
    assert events[5].data == "[DONE]"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=30))
def test_sse_decoding_is_the_same_for_any_split(cuts: list[int]) -> None:
    assert _decode_sse(_split(SSE_STREAM, cuts)) == _decode_sse([SSE_STREAM])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=10))
def test_sse_decoding_of_arbitrary_bytes_is_the_same_for_any_split(
    data: bytes, cuts: list[int]
) -> None:
    assert _decode_sse(_split(data, cuts)) == _decode_sse([data])


EVENT_STREAM = b"".join(
    [
        encode_event("messageStart", {"role": "assistant"}),
        encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hé ✓"}}),
        encode_event(
            "contentBlockStart",
            {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "w"}}},
        ),
        encode_event(
            "contentBlockDelta",
            {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a": 1}'}}},
        ),
        encode_event("messageStop", {"stopReason": "tool_use"}),
        encode_event("metadata", {"usage": {"inputTokens": 1, "outputTokens": 2}}),
        encode_exception("throttlingException", {"message": "slow down"}),
    ]
)


def _decode_event_stream(pieces: list[bytes]) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    messages: list[EventStreamMessage] = []
    for piece in pieces:
        buffer.add_data(piece)
        messages.extend(buffer)
    return [(m.headers, m.payload) for m in messages]


def test_event_stream_frames_decode_with_botocore() -> None:
    messages = _decode_event_stream([EVENT_STREAM])
    assert len(messages) == 7
    headers, payload = messages[1]
    assert headers == {
        ":message-type": "event",
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
    }
    assert payload.decode() == '{"contentBlockIndex":0,"delta":{"text":"hé ✓"}}'
    assert messages[-1][0][":exception-type"] == "throttlingException"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=40))
def test_event_stream_decoding_is_the_same_for_any_split(cuts: list[int]) -> None:
    assert _decode_event_stream(_split(EVENT_STREAM, cuts)) == _decode_event_stream([EVENT_STREAM])


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=10), st.text(max_size=50), max_size=5),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_event_stream_round_trips_any_payload_for_any_split(
    payload: dict[str, str], cuts: list[int]
) -> None:
    frame = encode_event("chunk", payload) * 2
    decoded = _decode_event_stream(_split(frame, cuts))
    assert len(decoded) == 2
    assert all(headers[":event-type"] == "chunk" for headers, _ in decoded)
