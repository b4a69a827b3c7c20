"""The fake Bedrock's event-stream encoder (`fakes.eventstream`): its frames decode with botocore's
own reader (the one aiobotocore parses ConverseStream with) for any split of the bytes."""

from typing import Any

from botocore.eventstream import EventStreamBuffer, EventStreamMessage
from conftest import split_at
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.eventstream import encode_event, encode_exception

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
    assert _decode_event_stream(split_at(EVENT_STREAM, cuts)) == _decode_event_stream(
        [EVENT_STREAM]
    )


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=10), st.text(max_size=50), max_size=5),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_event_stream_round_trips_any_payload_for_any_split(
    payload: dict[str, str], cuts: list[int]
) -> None:
    frame = encode_event("chunk", payload) * 2
    decoded = _decode_event_stream(split_at(frame, cuts))
    assert len(decoded) == 2
    assert all(headers[":event-type"] == "chunk" for headers, _ in decoded)
