"""Anthropic and OpenAI answers and error bodies written in each other's shape
(`sidecar.dialects.anthropic_response`), pure."""

from typing import Any

import pytest

from sidecar.dialects.anthropic_response import (
    anthropic_error_to_openai,
    anthropic_response_to_openai,
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)
from sidecar.dialects.errors import InvalidUpstreamResponse

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
