"""Anthropic and OpenAI streams written as each other's events
(`sidecar.dialects.anthropic_stream`), checked against both SDKs' accumulators, pure."""

from typing import Any

from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

from sidecar.dialects.anthropic_stream import AnthropicToOpenAIStream, OpenAIToAnthropicStream

JSON = dict[str, Any]

# ---------------------------------------------------------------- streams: Anthropic → OpenAI

ANTHROPIC_TOOL_STREAM: list[tuple[str, JSON]] = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude",
                "stop_reason": None,
                "usage": {
                    "input_tokens": 5,
                    "output_tokens": 1,
                    "cache_read_input_tokens": 20,
                    "cache_creation_input_tokens": 0,
                },
            },
        },
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def _chunk(delta: JSON, finish: str | None = None) -> JSON:
    return {
        "id": "msg_1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "alias",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_anthropic_stream_becomes_openai_chunks_with_tool_deltas_and_usage() -> None:
    stream = AnthropicToOpenAIStream(model="alias", include_usage=True, created=7)
    chunks = [c for event, data in ANTHROPIC_TOOL_STREAM for c in stream.feed(event, data)]
    assert chunks == [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hi"}),
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": ""},
                    }
                ]
            }
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        _chunk({}, "tool_calls"),
        {
            "id": "msg_1",
            "object": "chat.completion.chunk",
            "created": 7,
            "model": "alias",
            "choices": [],
            "usage": {
                "prompt_tokens": 25,
                "completion_tokens": 12,
                "total_tokens": 37,
                "prompt_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 0},
            },
        },
    ]
    assert stream.prompt_tokens == 25
    assert stream.completion_tokens == 12


def test_anthropic_stream_without_include_usage_emits_no_usage_chunk() -> None:
    stream = AnthropicToOpenAIStream(model="alias", include_usage=False, created=7)
    chunks = [c for event, data in ANTHROPIC_TOOL_STREAM for c in stream.feed(event, data)]
    assert all(c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert stream.completion_tokens == 12


def test_anthropic_stream_token_counts_are_unknown_before_message_start() -> None:
    stream = AnthropicToOpenAIStream(model="alias", include_usage=True)
    assert stream.prompt_tokens is None
    assert stream.completion_tokens is None


def test_anthropic_stream_numbers_parallel_tool_calls_from_zero() -> None:
    stream = AnthropicToOpenAIStream(model="a", include_usage=False, created=7)
    stream.feed("message_start", {"message": {"id": "msg_1", "usage": {}}})
    indexes = []
    for block_index in (0, 1):
        block = {"type": "tool_use", "id": f"t{block_index}", "name": "f", "input": {}}
        start = {"index": block_index, "content_block": block}
        [chunk] = stream.feed("content_block_start", start)
        indexes.append(chunk["choices"][0]["delta"]["tool_calls"][0]["index"])
        delta = {"type": "input_json_delta", "partial_json": "{}"}
        [frag] = stream.feed("content_block_delta", {"index": block_index, "delta": delta})
        assert frag["choices"][0]["delta"]["tool_calls"][0]["index"] == indexes[-1]
    assert indexes == [0, 1]


def test_anthropic_stream_relays_thinking_as_reasoning_content_and_ignores_errors() -> None:
    stream = AnthropicToOpenAIStream(model="a", include_usage=False)
    delta = {"type": "thinking_delta", "thinking": "hmm"}
    [chunk] = stream.feed("content_block_delta", {"index": 0, "delta": delta})
    assert chunk["choices"][0]["delta"] == {"reasoning_content": "hmm"}
    signature = {"type": "signature_delta", "signature": "sig"}
    assert stream.feed("content_block_delta", {"index": 0, "delta": signature}) == []
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}
    assert stream.feed("error", error) == []


# ---------------------------------------------------------------- streams: OpenAI → Anthropic


def _oa_chunk(delta: JSON | None, finish: str | None = None, **extra: Any) -> JSON:
    choice: JSON = {"index": 0, "finish_reason": finish}
    if delta is not None:
        choice["delta"] = delta
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice], **extra}


OPENAI_TOOL_STREAM: list[JSON] = [
    _oa_chunk({"role": "assistant", "content": ""}),
    _oa_chunk({"content": "Hi"}),
    _oa_chunk(None, content_filter_results={}),
    _oa_chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": ""},
                }
            ]
        }
    ),
    _oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    _oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    _oa_chunk({}, "tool_calls"),
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 9,
            "total_tokens": 59,
            "prompt_tokens_details": {"cached_tokens": 40},
        },
    },
]


def test_openai_stream_becomes_anthropic_events_with_tool_use_and_usage() -> None:
    stream = OpenAIToAnthropicStream(model="alias")
    events = [e for chunk in OPENAI_TOOL_STREAM for e in stream.feed(chunk)]
    events += stream.finish()
    assert events == [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "chatcmpl-1",
                    "type": "message",
                    "role": "assistant",
                    "model": "alias",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "call_1", "name": "w", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 9,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 40,
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert stream.prompt_tokens == 50
    assert stream.completion_tokens == 9


def test_openai_stream_without_usage_chunk_closes_at_finish() -> None:
    stream = OpenAIToAnthropicStream(model="m")
    events = stream.feed(_oa_chunk({"content": "x"})) + stream.feed(_oa_chunk({}, "length"))
    assert [name for name, _ in events][-1] == "content_block_stop"
    tail = stream.finish()
    assert [name for name, _ in tail] == ["message_delta", "message_stop"]
    assert tail[0][1]["delta"]["stop_reason"] == "max_tokens"
    assert stream.finish() == []
    assert stream.prompt_tokens is None


def test_openai_stream_with_usage_on_the_finishing_chunk_closes_at_once() -> None:
    stream = OpenAIToAnthropicStream(model="m")
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    events = stream.feed(_oa_chunk({"content": "x"}, "stop", usage=usage))
    assert [name for name, _ in events][-2:] == ["message_delta", "message_stop"]
    assert stream.finish() == []


def test_openai_stream_cut_before_finish_emits_no_message_stop() -> None:
    stream = OpenAIToAnthropicStream(model="m")
    stream.feed(_oa_chunk({"content": "partial"}))
    assert stream.finish() == []


def test_openai_stream_tolerates_azure_prompt_filter_and_annotation_chunks() -> None:
    stream = OpenAIToAnthropicStream(model="m")
    first = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [],
        "prompt_filter_results": [],
    }
    events = stream.feed(first)
    assert [name for name, _ in events] == ["message_start"]
    assert events[0][1]["message"]["id"].startswith("msg_")
    assert stream.feed(_oa_chunk(None, content_filter_offsets={})) == []


# ---------------------------------------------------------------- streams against the real SDKs


def test_openai_stream_translation_is_rebuilt_by_the_anthropic_sdk() -> None:
    adapter: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    stream = OpenAIToAnthropicStream(model="alias")
    events = [e for chunk in OPENAI_TOOL_STREAM for e in stream.feed(chunk)] + stream.finish()
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    for name, data in events:
        assert data["type"] == name
        event = adapter.validate_python(data)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot.content[0].text == "Hi"
    assert snapshot.content[1].input == {"city": "Paris"}
    assert snapshot.stop_reason == "tool_use"
    assert snapshot.usage.output_tokens == 9
    assert snapshot.usage.input_tokens == 10
    assert snapshot.usage.cache_read_input_tokens == 40


def test_anthropic_stream_translation_is_rebuilt_by_the_openai_sdk() -> None:
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    translator = AnthropicToOpenAIStream(model="alias", include_usage=True, created=7)
    for event, data in ANTHROPIC_TOOL_STREAM:
        for chunk in translator.feed(event, data):
            state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Hi"
    assert message.tool_calls is not None
    assert message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None
    assert final.usage.prompt_tokens == 25
