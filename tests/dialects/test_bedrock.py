from typing import Any

import botocore.session
import pytest
from botocore.validate import validate_parameters
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from sidecar.dialects.bedrock import (
    ConverseStreamToOpenAI,
    bedrock_error_to_openai,
    converse_response_to_openai,
    openai_request_to_converse,
)
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError

JSON = dict[str, Any]
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PNG_B64 = "iVBORw0KGgo="
PNG_BYTES = b"\x89PNG\r\n\x1a\n"

CONVERSE_INPUT = (
    botocore.session.get_session()
    .get_service_model("bedrock-runtime")
    .operation_model("Converse")
    .input_shape
)


def to_converse(body: JSON) -> JSON:
    out = openai_request_to_converse(body, model_id=MODEL)
    # Every translation must be something aiobotocore's client would accept.
    validate_parameters(out, CONVERSE_INPUT)
    return out


def chat(*messages: JSON, **extra: Any) -> JSON:
    return {"model": "m", "messages": list(messages), **extra}


# ---------------------------------------------------------------- requests


def test_request_translates_system_images_and_inference_config() -> None:
    body = chat(
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {
                    "type": "file",
                    "file": {
                        "file_data": "data:application/pdf;base64,JVBE",
                        "filename": "a_b.pdf",
                    },
                },
            ],
        },
        max_completion_tokens=64,
        temperature=0.5,
        top_p=0.9,
        stop="END",
        user="ignored",
    )
    assert to_converse(body) == {
        "modelId": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "what?"},
                    {"image": {"format": "png", "source": {"bytes": PNG_BYTES}}},
                    {"document": {"format": "pdf", "name": "a b", "source": {"bytes": b"%PD"}}},
                ],
            }
        ],
        "system": [{"text": "be brief"}],
        "inferenceConfig": {
            "maxTokens": 64,
            "temperature": 0.5,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
    }


def test_request_translates_tool_round_trip_and_merges_tool_results() -> None:
    body = chat(
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "checking",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"city": "Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "w",
                    "description": "weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        tool_choice={"type": "function", "function": {"name": "w"}},
    )
    out = to_converse(body)
    assert out["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"text": "checking"},
                {"toolUse": {"toolUseId": "call_1", "name": "w", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "w", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": "call_1",
                        "content": [{"text": "sunny"}],
                        "status": "success",
                    }
                },
                {
                    "toolResult": {
                        "toolUseId": "call_2",
                        "content": [{"text": "rain"}],
                        "status": "success",
                    }
                },
            ],
        },
    ]
    assert out["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "w",
                    "description": "weather",
                    "inputSchema": {
                        "json": {"type": "object", "properties": {"city": {"type": "string"}}}
                    },
                }
            }
        ],
        "toolChoice": {"tool": {"name": "w"}},
    }


TOOLS = [{"type": "function", "function": {"name": "f"}}]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"auto": {}}), ("required", {"any": {}}), (None, {"auto": {}})],
)
def test_request_maps_tool_choice(choice: str | None, expected: JSON) -> None:
    extra: JSON = {"tools": TOOLS} | ({"tool_choice": choice} if choice else {})
    out = to_converse(chat({"role": "user", "content": "x"}, **extra))
    assert out["toolConfig"]["toolChoice"] == expected


def test_request_tool_choice_none_without_tool_history_omits_tool_config() -> None:
    out = to_converse(chat({"role": "user", "content": "x"}, tools=TOOLS, tool_choice="none"))
    assert "toolConfig" not in out


def test_request_tool_choice_none_with_tool_history_keeps_tools_without_choice() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = chat(
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "r"},
        tools=TOOLS,
        tool_choice="none",
    )
    assert to_converse(body)["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": TOOL_SCHEMA}}}]
    }


TOOL_SCHEMA = {"type": "object", "properties": {}}


def test_request_keeps_trailing_assistant_as_prefill_without_trailing_whitespace() -> None:
    body = chat({"role": "user", "content": "go"}, {"role": "assistant", "content": "Once upon "})
    assert to_converse(body)["messages"][-1] == {
        "role": "assistant",
        "content": [{"text": "Once upon"}],
    }


def test_request_maps_json_schema_to_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    out = to_converse(chat({"role": "user", "content": "x"}, response_format=fmt))
    assert out["outputConfig"] == {
        "textFormat": {
            "type": "json_schema",
            "structure": {
                "jsonSchema": {
                    "schema": '{"type":"object","properties":{"a":{"type":"integer"}}}',
                    "name": "out",
                }
            },
        }
    }


@pytest.mark.parametrize(
    ("extra", "message", "param"),
    [
        ({"n": 3}, None, "n"),
        ({"logprobs": True}, None, "logprobs"),
        ({"response_format": {"type": "json_object"}}, None, "response_format"),
        ({"tools": [{"type": "custom", "custom": {"name": "g"}}]}, None, "tools[0].type"),
        (
            {},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}],
            },
            "messages[0].content[0]",
        ),
        (
            {},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}
                ],
            },
            "messages[0].content[0]",
        ),
        (
            {},
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
            },
            "messages[0].content[0]",
        ),
        (
            {},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_request_raises_translation_error_for_untranslatable_input(
    extra: JSON, message: JSON | None, param: str
) -> None:
    with pytest.raises(TranslationError) as e:
        openai_request_to_converse(
            chat(message or {"role": "user", "content": "x"}, **extra), model_id=MODEL
        )
    assert e.value.param == param


# ---------------------------------------------------------------- responses


def test_response_translates_reasoning_text_tool_use_and_cache_usage() -> None:
    resp = {
        "ResponseMetadata": {"RequestId": "req-1", "HTTPStatusCode": 200},
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm"}}},
                    {"text": "Sure."},
                    {"toolUse": {"toolUseId": "tu_1", "name": "w", "input": {"city": "Rome"}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 3,
            "outputTokens": 4,
            "totalTokens": 507,
            "cacheReadInputTokens": 400,
            "cacheWriteInputTokens": 100,
        },
        "metrics": {"latencyMs": 10},
    }
    assert converse_response_to_openai(resp, model="alias", created=5) == {
        "id": "chatcmpl-req-1",
        "object": "chat.completion",
        "created": 5,
        "model": "alias",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Sure.",
                    "refusal": None,
                    "reasoning_content": "hmm",
                    "tool_calls": [
                        {
                            "id": "tu_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Rome"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 503,
            "completion_tokens": 4,
            "total_tokens": 507,
            "prompt_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 100},
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
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ],
)
def test_response_maps_stop_reason(stop_reason: str, finish: str) -> None:
    resp = {"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": stop_reason}
    out = converse_response_to_openai(resp, model="m", created=0)
    assert out["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("stop_reason", ["malformed_model_output", "malformed_tool_use"])
def test_response_with_malformed_stop_reason_is_an_invalid_upstream_response(
    stop_reason: str,
) -> None:
    with pytest.raises(InvalidUpstreamResponse):
        converse_response_to_openai({"stopReason": stop_reason}, model="m")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ValidationException", 400, "invalid_request_error"),
        ("AccessDeniedException", 403, "permission_error"),
        ("ResourceNotFoundException", 404, "not_found_error"),
        ("ModelTimeoutException", 408, "timeout_error"),
        ("ModelErrorException", 424, "model_error"),
        ("ThrottlingException", 429, "rate_limit_error"),
        ("InternalServerException", 500, "server_error"),
        ("ServiceUnavailableException", 503, "overloaded_error"),
    ],
)
def test_bedrock_error_becomes_openai_envelope(code: str, status: int, kind: str) -> None:
    assert bedrock_error_to_openai(code, "it broke", status) == {
        "error": {"message": "it broke", "type": kind, "param": None, "code": code}
    }


# ---------------------------------------------------------------- streams

CONVERSE_TOOL_STREAM: list[JSON] = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Hi"}}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {
        "contentBlockStart": {
            "contentBlockIndex": 1,
            "start": {"toolUse": {"toolUseId": "tu_1", "name": "w"}},
        }
    },
    {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city": '}}}},
    {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Rome"}'}}}},
    {"contentBlockStop": {"contentBlockIndex": 1}},
    {"messageStop": {"stopReason": "tool_use"}},
    {
        "metadata": {
            "usage": {
                "inputTokens": 10,
                "outputTokens": 6,
                "totalTokens": 46,
                "cacheReadInputTokens": 30,
            },
            "metrics": {"latencyMs": 99},
        }
    },
]


def _deltas(chunks: list[JSON]) -> list[tuple[JSON, str | None]]:
    return [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]


def test_stream_emits_finish_at_message_stop_and_usage_after_metadata() -> None:
    translator = ConverseStreamToOpenAI(model="alias", include_usage=True, created=9)
    chunks = [c for event in CONVERSE_TOOL_STREAM for c in translator.feed(event)]
    usage_chunk = chunks.pop()
    assert _deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hi"}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "tu_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]}, None),
        ({}, "tool_calls"),
    ]
    assert {c["id"] for c in [*chunks, usage_chunk]} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "alias" for c in chunks)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 40,
        "completion_tokens": 6,
        "total_tokens": 46,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 0},
    }
    assert translator.prompt_tokens == 40
    assert translator.completion_tokens == 6


def test_stream_without_include_usage_still_counts_tokens() -> None:
    translator = ConverseStreamToOpenAI(model="alias", include_usage=False)
    chunks = [c for event in CONVERSE_TOOL_STREAM for c in translator.feed(event)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.completion_tokens == 6


def test_stream_token_counts_are_unknown_until_metadata() -> None:
    translator = ConverseStreamToOpenAI(model="alias", include_usage=True)
    for event in CONVERSE_TOOL_STREAM[:-1]:
        translator.feed(event)
    assert translator.prompt_tokens is None
    assert translator.completion_tokens is None


def test_stream_malformed_stop_raises_invalid_upstream_response() -> None:
    translator = ConverseStreamToOpenAI(model="alias", include_usage=True)
    with pytest.raises(InvalidUpstreamResponse):
        translator.feed({"messageStop": {"stopReason": "malformed_tool_use"}})


def test_stream_translation_is_rebuilt_by_the_openai_sdk() -> None:
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    translator = ConverseStreamToOpenAI(model="alias", include_usage=True, created=9)
    for event in CONVERSE_TOOL_STREAM:
        for chunk in translator.feed(event):
            state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion()
    assert final.choices[0].message.content == "Hi"
    assert final.choices[0].message.tool_calls is not None
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"city": "Rome"}'
    assert final.usage is not None
    assert final.usage.total_tokens == 46
