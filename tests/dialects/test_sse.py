"""SSE decoding (`sidecar.dialects.sse`): the details the fallback logic relies on, and the same
events for any split of the bytes (property-tested)."""

from conftest import split_at
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.dialects.sse import SSEDecoder, SSEEvent, json_object


def test_decoder_handles_crlf_comments_missing_space_and_multiline_data() -> None:
    d = SSEDecoder()
    events = d.feed(b': keepalive\r\ndata:{"a":1}\r\n\r\nevent: x\ndata: one\ndata: two\n\n')
    assert events == [SSEEvent(None, '{"a":1}'), SSEEvent("x", "one\ntwo")]


def test_decoder_holds_a_trailing_cr_until_it_knows_whether_lf_follows() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: a\r") == []
    assert d.feed(b"\n\r") == []
    assert d.feed(b"\n") == [SSEEvent(None, "a")]


def test_flush_dispatches_an_event_cut_before_its_blank_line() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: [DONE]") == []
    assert d.flush() == [SSEEvent(None, "[DONE]")]


def test_json_object_reads_objects_only() -> None:
    assert json_object('{"a": 1}') == {"a": 1}
    for data in ("[1]", '"s"', "{not json", "", "[DONE]"):
        assert json_object(data) is None


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
    assert _decode_sse(split_at(SSE_STREAM, cuts)) == _decode_sse([SSE_STREAM])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=10))
def test_sse_decoding_of_arbitrary_bytes_is_the_same_for_any_split(
    data: bytes, cuts: list[int]
) -> None:
    assert _decode_sse(split_at(data, cuts)) == _decode_sse([data])
