from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

from sidecar.dialects.anthropic_request import (
    anthropic_request_to_openai,
    openai_request_to_anthropic,
)
from sidecar.dialects.anthropic_response import (
    anthropic_error_to_openai,
    anthropic_response_to_openai,
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)
from sidecar.dialects.anthropic_stream import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError

JSON = dict[str, Any]
OLD = "2023-06-01"
NEW = "2026-10-21"
PNG = "data:image/png;base64,iVBORw0KGgo="


def to_anthropic(body: JSON, version: str = OLD) -> JSON:
    return openai_request_to_anthropic(body, anthropic_version=version, default_max_tokens=4096)


def chat(*messages: JSON, **extra: Any) -> JSON:
    return {"model": "m", "messages": list(messages), **extra}


# ---------------------------------------------------------------- requests: OpenAI → Anthropic


def test_request_hoists_system_and_developer_messages_in_order() -> None:
    body = chat(
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "in French"}]},
    )
    assert to_anthropic(body) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "system": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "in French"}],
        "max_tokens": 4096,
    }


def test_request_single_system_message_becomes_a_string() -> None:
    out = to_anthropic(chat({"role": "system", "content": "s"}, {"role": "user", "content": "u"}))
    assert out["system"] == "s"


def test_request_translates_multipart_and_images() -> None:
    body = chat(
        {
            "role": "user",
            "name": "ann",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
            ],
        }
    )
    assert to_anthropic(body)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                },
            ],
        }
    ]


def test_request_maps_prompt_cache_breakpoint_to_cache_control() -> None:
    part = {"type": "text", "text": "long", "prompt_cache_breakpoint": True}
    out = to_anthropic(chat({"role": "user", "content": [part]}))
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}
    ]


def test_request_translates_tool_round_trip() -> None:
    body = chat(
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "thanks"},
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Weather now",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "strict": True,
                },
            },
            {"type": "function", "function": {"name": "noargs"}},
        ],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    out = to_anthropic(body)
    assert out["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    assert out["tools"] == [
        {
            "name": "weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        },
        {"name": "noargs", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
    ],
)
def test_request_maps_tool_choice(choice: Any, parallel: bool | None, expected: JSON) -> None:
    extra: JSON = {"tools": [{"type": "function", "function": {"name": "f"}}]}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    assert to_anthropic(chat({"role": "user", "content": "x"}, **extra))["tool_choice"] == expected


def test_request_without_tool_choice_sends_none() -> None:
    extra: JSON = {"tools": [{"type": "function", "function": {"name": "f"}}]}
    assert "tool_choice" not in to_anthropic(chat({"role": "user", "content": "x"}, **extra))


def test_request_keeps_trailing_assistant_as_prefill_without_trailing_whitespace() -> None:
    body = chat({"role": "user", "content": "count"}, {"role": "assistant", "content": "1, 2, "})
    assert to_anthropic(body)["messages"][-1] == {"role": "assistant", "content": "1, 2,"}


def test_request_maps_scalars_under_2023_06_01() -> None:
    body = chat(
        {"role": "user", "content": "x"},
        max_tokens=10,
        max_completion_tokens=20,
        stop="END",
        temperature=1.7,
        top_p=0.5,
        user="u-1",
        stream=True,
        seed=3,
        frequency_penalty=0.1,
    )
    out = to_anthropic(body)
    assert {k: v for k, v in out.items() if k not in ("model", "messages")} == {
        "max_tokens": 20,
        "stop_sequences": ["END"],
        "temperature": 1.0,
        "top_p": 0.5,
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


def test_request_drops_sampling_under_2026_10_21() -> None:
    body = chat({"role": "user", "content": "x"}, temperature=0.2, top_p=0.9, top_k=5, stop=["a"])
    out = to_anthropic(body, NEW)
    assert "temperature" not in out
    assert "top_p" not in out
    assert "top_k" not in out
    assert out["stop_sequences"] == ["a"]


def test_request_maps_json_schema_response_format_to_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    out = to_anthropic(chat({"role": "user", "content": "x"}, response_format=fmt))
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


@pytest.mark.parametrize(
    ("extra", "message", "param"),
    [
        ({"n": 2}, None, "n"),
        ({"response_format": {"type": "json_object"}}, None, "response_format"),
        ({"logprobs": True}, None, "logprobs"),
        ({"logit_bias": {"1": 5}}, None, "logit_bias"),
        ({"functions": [{"name": "f"}]}, None, "functions"),
        ({"tools": [{"type": "custom", "custom": {"name": "g"}}]}, None, "tools[0].type"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "allowed_tools"},
            },
            None,
            "tool_choice",
        ),
        (
            {},
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}],
            },
            "messages[0].content[0]",
        ),
        (
            {},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,A"}}],
            },
            "messages[0].content[0]",
        ),
        (
            {},
            {"role": "user", "content": [{"type": "file", "file": {"file_id": "f-1"}}]},
            "messages[0].content[0]",
        ),
        (
            {},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{x"}}
                ],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({}, {"role": "function", "name": "f", "content": "x"}, "messages[0].role"),
    ],
)
def test_request_raises_translation_error_for_untranslatable_input(
    extra: JSON, message: JSON | None, param: str
) -> None:
    body = chat(message or {"role": "user", "content": "x"}, **extra)
    with pytest.raises(TranslationError) as e:
        to_anthropic(body)
    assert e.value.param == param
    assert e.value.message


# ---------------------------------------------------------------- requests: Anthropic → OpenAI


def test_reverse_request_translates_system_blocks_tools_and_results() -> None:
    body = {
        "model": "claude",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "checking"},
                    {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "boom"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "and?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                    },
                ],
            },
        ],
        "tools": [{"name": "w", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["X"],
        "temperature": 0.3,
        "top_k": 3,
        "metadata": {"user_id": "u"},
        "thinking": {"type": "disabled"},
    }
    # The breakpoint rides in the pivot (Bedrock's cachePoint); OpenAI servers never see it.
    cached = {"type": "text", "text": "a", "prompt_cache_breakpoint": True}
    assert anthropic_request_to_openai(body) == {
        "model": "claude",
        "messages": [
            {"role": "system", "content": [cached]},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "checking",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"P"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                ],
            },
        ],
        "max_tokens": 100,
        "stop": ["X"],
        "temperature": 0.3,
        "tools": [
            {
                "type": "function",
                "function": {"name": "w", "description": "d", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "user": "u",
    }


def test_reverse_request_streaming_asks_for_usage() -> None:
    body = {"model": "c", "max_tokens": 5, "stream": True, "messages": []}
    out = anthropic_request_to_openai(body)
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}


def test_reverse_request_maps_output_format_and_named_tool_choice() -> None:
    body = {
        "model": "c",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f"},
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
    }
    out = anthropic_request_to_openai(body)
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": True},
    }


@pytest.mark.parametrize(
    ("extra", "effort"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
        ({"thinking": {"type": "enabled", "budget_tokens": 8000}}, "medium"),
        ({"thinking": {"type": "enabled", "budget_tokens": 32000}}, "high"),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "medium"}}, "medium"),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, "high"),
        ({"thinking": {"type": "adaptive", "display": "omitted"}}, None),
        ({"thinking": {"type": "disabled"}, "output_config": {"effort": "low"}}, None),
    ],
    ids=["budget_low", "budget_medium", "budget_high", "effort", "max", "adaptive", "disabled"],
)
def test_anthropic_thinking_becomes_an_openai_reasoning_effort(
    extra: dict[str, Any], effort: str | None
) -> None:
    body = {"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    out = anthropic_request_to_openai({**body, **extra})
    assert out.get("reasoning_effort") == effort


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "m"}]},
            "mcp_servers",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {"type": "image", "source": {"type": "url", "url": "u"}}
                                ],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_reverse_request_raises_translation_error(extra: JSON, param: str) -> None:
    body = {"model": "c", "max_tokens": 5, "messages": [], **extra}
    with pytest.raises(TranslationError) as e:
        anthropic_request_to_openai(body)
    assert e.value.param == param


# ---------------------------------------------------------------- responses


def test_response_anthropic_to_openai_with_thinking_tools_and_cache_usage() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "…", "signature": "s"},
            {"type": "text", "text": "Let me "},
            {"type": "text", "text": "check."},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 7,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
        },
    }
    assert anthropic_response_to_openai(body, model="alias", created=123) == {
        "id": "msg_1",
        "object": "chat.completion",
        "created": 123,
        "model": "alias",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "refusal": None,
                    "reasoning_content": "…",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 1110,
            "completion_tokens": 7,
            "total_tokens": 1117,
            "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 100},
        },
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_response_maps_stop_reason(stop_reason: str, finish: str) -> None:
    body = {"id": "m", "content": [], "stop_reason": stop_reason, "usage": {}}
    out = anthropic_response_to_openai(body, model="x", created=0)
    assert out["choices"][0]["finish_reason"] == finish
    assert out["choices"][0]["message"]["content"] is None


def test_response_openai_to_anthropic_with_tools_and_cache_usage() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "ok",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"a": 1}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "z", "arguments": ""},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 30,
            "total_tokens": 1230,
            "prompt_tokens_details": {"cached_tokens": 1000},
        },
    }
    assert openai_response_to_anthropic(body, model="alias") == {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "alias",
        "content": [
            {"type": "text", "text": "ok"},
            {"type": "tool_use", "id": "call_1", "name": "w", "input": {"a": 1}},
            {"type": "tool_use", "id": "call_2", "name": "z", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 200,
            "output_tokens": 30,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1000,
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")],
)
def test_response_maps_finish_reason(finish: str, stop_reason: str) -> None:
    body = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
    assert openai_response_to_anthropic(body, model="m")["stop_reason"] == stop_reason


def test_response_with_tool_calls_and_finish_stop_says_tool_use() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "stop"}]}
    assert openai_response_to_anthropic(body, model="m")["stop_reason"] == "tool_use"


def test_response_with_invalid_tool_arguments_is_an_invalid_upstream_response() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}
    body = {"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    with pytest.raises(InvalidUpstreamResponse):
        openai_response_to_anthropic(body, model="m")


# ---------------------------------------------------------------- errors


def test_anthropic_error_becomes_openai_envelope() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert anthropic_error_to_openai(body) == {
        "error": {
            "message": "Overloaded",
            "type": "overloaded_error",
            "param": None,
            "code": "server_is_overloaded",
        }
    }


def test_anthropic_prompt_too_long_gets_context_length_code() -> None:
    body = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 300000 tokens"},
    }
    assert anthropic_error_to_openai(body)["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("body", ["<html>bad gateway</html>", None, [], 42])
def test_anthropic_error_tolerates_non_envelope_bodies(body: Any) -> None:
    error = anthropic_error_to_openai(body)["error"]
    assert error["type"] == "api_error"
    assert isinstance(error["message"], str)
    assert error["message"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_openai_error_type_follows_status(status: int, kind: str) -> None:
    body = {"error": {"message": "m", "type": "x", "param": None, "code": None}}
    assert openai_error_to_anthropic(status, body) == {
        "type": "error",
        "error": {"type": kind, "message": "m"},
    }


def test_openai_error_accepts_gemini_list_body() -> None:
    body = [{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}]
    assert openai_error_to_anthropic(429, body)["error"] == {
        "type": "rate_limit_error",
        "message": "quota",
    }


def test_openai_insufficient_quota_becomes_billing_error() -> None:
    body = {"error": {"message": "q", "type": "insufficient_quota", "code": "insufficient_quota"}}
    assert openai_error_to_anthropic(429, body)["error"]["type"] == "billing_error"


def test_openai_error_keeps_plain_text_message() -> None:
    assert openai_error_to_anthropic(502, "bad gateway")["error"]["message"] == "bad gateway"


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
