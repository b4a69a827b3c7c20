"""OpenAI answers written from block-based vendors' (`sidecar.dialects.openai_response`), pure."""

from typing import Any

import orjson

from sidecar.dialects.openai_response import (
    OpenAIChunks,
    assistant_message,
    chat_completion,
    tool_call,
    usage_including_cache,
)


def test_tool_call_arguments_are_a_json_string_and_an_empty_object_when_missing() -> None:
    call = tool_call("t1", "get_weather", {"city": "Oslo"})
    assert call["type"] == "function"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert tool_call("t2", "now", None)["function"]["arguments"] == "{}"


def test_an_assistant_message_joins_its_texts_and_lists_tool_calls_only_if_any() -> None:
    assert assistant_message(["Hel", "lo"], []) == {
        "role": "assistant",
        "content": "Hello",
        "refusal": None,
    }
    calls = [tool_call("t1", "f", {})]
    only_tools = assistant_message([], calls)
    assert only_tools["content"] is None
    assert only_tools["tool_calls"] == calls


def test_a_chat_completion_keeps_a_given_created_time_or_stamps_now() -> None:
    msg = assistant_message(["hi"], [])
    usage = usage_including_cache(uncached_prompt=1, cache_read=0, cache_write=0, completion=1)
    fields: dict[str, Any] = {"completion_id": "c1", "model": "m", "message": msg, "finish": "stop"}
    given = chat_completion(created=123, usage=usage, **fields)
    assert given["created"] == 123
    assert given["choices"] == [
        {"index": 0, "message": msg, "finish_reason": "stop", "logprobs": None}
    ]
    assert chat_completion(created=None, usage=usage, **fields)["created"] > 1_700_000_000


def test_prompt_tokens_include_cached_ones_which_are_also_detailed() -> None:
    usage = usage_including_cache(uncached_prompt=10, cache_read=100, cache_write=5, completion=7)
    assert usage == {
        "prompt_tokens": 115,
        "completion_tokens": 7,
        "total_tokens": 122,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5},
    }


def test_stream_tool_calls_are_numbered_in_the_order_they_open() -> None:
    chunks = OpenAIChunks(model="m", created=1, chunk_id="c1")
    (first,) = chunks.tool_start(3, "t-a", "a")
    (second,) = chunks.tool_start(1, "t-b", "b")
    assert first["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert second["choices"][0]["delta"]["tool_calls"][0]["index"] == 1
    (args,) = chunks.tool_arguments(1, '{"x"')
    assert args["choices"][0]["delta"]["tool_calls"] == [
        {"index": 1, "function": {"arguments": '{"x"'}}
    ]


def test_argument_fragments_of_unknown_blocks_or_empty_ones_write_nothing() -> None:
    chunks = OpenAIChunks(model="m", created=1, chunk_id="c1")
    chunks.tool_start(0, "t", "f")
    assert chunks.tool_arguments(0, "") == []
    assert chunks.tool_arguments(5, "{}") == []


def test_chunks_carry_an_id_learnt_later_and_the_usage_chunk_has_no_choices() -> None:
    chunks = OpenAIChunks(model="m", created=7, chunk_id="")
    chunks.id = "msg_1"
    delta = chunks.chunk({"content": "x"}, "stop")
    assert (delta["id"], delta["object"], delta["created"], delta["model"]) == (
        "msg_1",
        "chat.completion.chunk",
        7,
        "m",
    )
    assert delta["choices"][0]["finish_reason"] == "stop"
    usage = chunks.usage_chunk({"prompt_tokens": 1})
    assert (usage["choices"], usage["usage"]) == ([], {"prompt_tokens": 1})
