"""SSE decoding (`sidecar.dialects.sse`) details the fallback logic relies on (splits are
property-tested in test_stream_splits.py)."""

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
