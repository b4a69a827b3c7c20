"""OpenAI Chat Completions requests written for Anthropic's Messages API and back
(`sidecar.dialects.anthropic_request`), pure."""

from typing import Any

import pytest

from sidecar.dialects.anthropic_request import (
    anthropic_request_to_openai,
    openai_request_to_anthropic,
)
from sidecar.dialects.errors import TranslationError

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


def test_reverse_request_puts_max_tokens_in_the_field_the_backend_names() -> None:
    body = {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    assert anthropic_request_to_openai(body)["max_tokens"] == 100
    out = anthropic_request_to_openai(body, token_limit="max_completion_tokens")
    assert (out.get("max_completion_tokens"), "max_tokens" in out) == (100, False)


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
