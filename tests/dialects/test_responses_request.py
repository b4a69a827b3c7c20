"""Responses requests: what is checked, what only a native backend can serve, and the chat pivot."""

from typing import Any

import orjson
import pytest

from sidecar.dialects.anthropic_request import openai_request_to_anthropic
from sidecar.dialects.bedrock import openai_request_to_converse
from sidecar.dialects.errors import TranslationError
from sidecar.dialects.responses_request import (
    NativeOnly,
    check,
    native_only,
    to_chat,
    with_prefill,
)

CODEX_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "exec_command",
        "description": "Runs a command.",
        "strict": False,
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
    },
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents.",
        "tools": [
            {"type": "function", "name": "close_agent", "parameters": {"type": "object"}},
        ],
    },
    {"type": "web_search", "external_web_access": False},
]


def codex_like(**extra: Any) -> dict[str, Any]:
    """The shape of what Codex CLI 0.171 sends (recorded against a fake)."""
    return {
        "model": "gpt-test",
        "instructions": "Be brief.",
        "input": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "developer",
                "content": [{"type": "input_text", "text": "You are a coding agent."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "run echo"}],
            },
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "I will run it."}],
                "encrypted_content": "gAAAA-opaque",
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "status": "completed",
                "name": "exec_command",
                "arguments": '{"cmd": "echo ok"}',
                "call_id": "call_1",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "ok\n"},
        ],
        "tools": CODEX_TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "client_metadata": {"x-codex-window-id": "w"},
        **extra,
    }


def test_a_codex_request_becomes_the_chat_request_of_the_same_conversation() -> None:
    chat, _ = to_chat(codex_like())
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "You are a coding agent."}]},
        {"role": "user", "content": [{"type": "text", "text": "run echo"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "exec_command", "arguments": '{"cmd": "echo ok"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "ok\n"},
    ]
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["reasoning_effort"] == "medium"
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is True
    assert chat["prompt_cache_key"] == "session-1"
    for dropped in ("store", "include", "client_metadata", "reasoning", "input", "instructions"):
        assert dropped not in chat


def test_encrypted_reasoning_never_reaches_a_translated_backend() -> None:
    chat, _ = to_chat(codex_like())
    sent = orjson.dumps(chat)
    assert b"gAAAA-opaque" not in sent and b"rs_1" not in sent


def test_namespace_tools_are_flattened_and_hosted_tools_dropped() -> None:
    chat, names = to_chat(codex_like())
    assert [t["function"]["name"] for t in chat["tools"]] == [
        "exec_command",
        "multi_agent_v1__close_agent",
    ]
    assert names.split("multi_agent_v1__close_agent") == ("multi_agent_v1", "close_agent")
    assert names.split("exec_command") == (None, "exec_command")


def test_a_namespaced_call_in_history_keeps_its_flat_name() -> None:
    body = codex_like()
    body["input"][3] = {**body["input"][3], "name": "close_agent", "namespace": "multi_agent_v1"}
    chat, _ = to_chat(body)
    assert chat["messages"][3]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__close_agent"


def test_a_tool_choice_that_requires_a_hosted_tool_is_refused() -> None:
    with pytest.raises(TranslationError) as e:
        to_chat(codex_like(tool_choice={"type": "web_search"}))
    assert e.value.param == "tool_choice"


def test_required_tool_choice_without_function_tools_is_refused() -> None:
    with pytest.raises(TranslationError):
        to_chat({"input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "required"})


def test_a_function_tool_choice_names_the_chat_function() -> None:
    chat, _ = to_chat(
        {"input": "hi", "tools": CODEX_TOOLS, "tool_choice": {"type": "function", "name": "x"}}
    )
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "x"}}


def test_string_input_is_one_user_message() -> None:
    chat, _ = to_chat({"model": "m", "input": "hi", "max_output_tokens": 50, "temperature": 0.2})
    assert chat == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "temperature": 0.2,
    }


def test_the_output_limit_goes_in_the_field_the_backend_names() -> None:
    body = {"model": "m", "input": "hi", "max_output_tokens": 50}
    chat, _ = to_chat(body, token_limit="max_completion_tokens")
    assert (chat.get("max_completion_tokens"), "max_tokens" in chat) == (50, False)


def test_an_assistant_turn_with_text_and_calls_is_one_assistant_message() -> None:
    chat, _ = to_chat(
        {
            "input": [
                {"role": "user", "content": "hi"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Let me look."}],
                },
                {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "a", "output": "1"},
                {"type": "function_call_output", "call_id": "b", "output": "2"},
            ]
        }
    )
    assistant = chat["messages"][1]
    assert assistant["content"] == [{"type": "text", "text": "Let me look."}]
    assert [c["id"] for c in assistant["tool_calls"]] == ["a", "b"]
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant", "tool", "tool"]


def test_images_and_files_become_chat_parts() -> None:
    chat, _ = to_chat(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_image", "image_url": "data:image/png;base64,AAA"},
                        {"type": "input_file", "filename": "a.pdf", "file_data": "JVBER"},
                    ],
                }
            ]
        }
    )
    assert chat["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBER", "filename": "a.pdf"},
        },
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_image", "file_id": "file-1"},
        {"type": "input_file", "file_id": "file-1"},
        {"type": "input_file", "file_url": "https://example.com/a.pdf"},
        {"type": "input_audio", "input_audio": {}},
    ],
)
def test_parts_a_translated_backend_cannot_read_are_refused(part: dict[str, Any]) -> None:
    with pytest.raises(TranslationError) as e:
        to_chat({"input": [{"role": "user", "content": [part]}]})
    assert e.value.param == "input[0].content[0]"


def test_unknown_input_items_are_refused() -> None:
    with pytest.raises(TranslationError) as e:
        to_chat({"input": [{"type": "web_search_call", "id": "ws_1"}]})
    assert e.value.param == "input[0]"


def test_json_schema_text_format_becomes_response_format() -> None:
    fmt = {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
    chat, _ = to_chat({"input": "hi", "text": {"format": fmt, "verbosity": "low"}})
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert chat["verbosity"] == "low"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ],
)
def test_stateful_requests_are_for_native_backends_only(extra: dict[str, Any], param: str) -> None:
    found = native_only({"input": "hi", **extra})
    assert isinstance(found, NativeOnly) and found.param == param
    with pytest.raises(TranslationError):
        to_chat({"input": "hi", **extra})


def test_a_stateless_request_is_not_native_only() -> None:
    assert native_only(codex_like()) is None


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"input": "hi"}, True),
        ({"input": []}, True),
        ({"previous_response_id": "resp_1"}, True),
        ({}, False),
        ({"input": 3}, False),
        ({"input": ["hi"]}, False),
    ],
)
def test_check_accepts_string_or_item_input(body: dict[str, Any], ok: bool) -> None:
    assert (check(body) is None) is ok


def test_the_pivot_reaches_anthropic_through_the_existing_mapping() -> None:
    chat, _ = to_chat(codex_like())
    anthropic = openai_request_to_anthropic(
        chat, anthropic_version="2023-06-01", default_max_tokens=4096
    )
    assert anthropic["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "You are a coding agent."},
    ]
    assert [b["type"] for b in anthropic["messages"][1]["content"]] == ["tool_use"]
    assert anthropic["messages"][2]["content"][0]["type"] == "tool_result"
    assert [t["name"] for t in anthropic["tools"]] == [
        "exec_command",
        "multi_agent_v1__close_agent",
    ]


def test_the_pivot_reaches_bedrock_through_the_existing_mapping() -> None:
    chat, _ = to_chat(codex_like())
    converse = openai_request_to_converse(chat, model_id="anthropic.claude")
    assert converse["messages"][1]["content"][0]["toolUse"]["toolUseId"] == "call_1"
    assert converse["messages"][2]["content"][0]["toolResult"]["toolUseId"] == "call_1"


def test_a_prefill_continues_the_delivered_text_as_an_assistant_item() -> None:
    body = with_prefill({"input": "hi", "stream": True}, "Once upon ")
    assert body["input"] == [
        {"role": "user", "content": "hi"},
        {"type": "message", "role": "assistant", "content": "Once upon"},
    ]
    chat, _ = to_chat(body)
    assert chat["messages"][-1] == {"role": "assistant", "content": "Once upon"}
