"""Gemini thought signatures (`sidecar.dialects.thought_signatures`): carried in Anthropic
`tool_use` ids and OpenAI `extra_content`, through the other dialects, pure."""

from sidecar.dialects.anthropic_request import anthropic_request_to_openai
from sidecar.dialects.anthropic_response import openai_response_to_anthropic
from sidecar.dialects.anthropic_stream import OpenAIToAnthropicStream
from sidecar.dialects.thought_signatures import (
    extra_content,
    signature_of,
    split_tool_use_id,
    tool_use_id,
)

SIGNED = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "f", "arguments": "{}"},
    "extra_content": {"google": {"thought_signature": "a+b/c=="}},
}


def test_a_signature_rides_in_the_tool_use_id_and_comes_back_whole() -> None:
    wire = tool_use_id("call_1", "a+b/c==")
    assert wire.startswith("call_1__thought__")
    assert all(ch.isalnum() or ch in "_-" for ch in wire)
    assert split_tool_use_id(wire) == ("call_1", "a+b/c==")
    assert split_tool_use_id("toolu_01abc") == ("toolu_01abc", None)
    assert split_tool_use_id("x__thought__!!") == ("x__thought__!!", None)


def test_anthropic_answers_and_follow_ups_carry_the_signature() -> None:
    message = {"role": "assistant", "content": None, "tool_calls": [SIGNED]}
    completion = {"choices": [{"message": message, "finish_reason": "tool_calls"}]}
    block = openai_response_to_anthropic(completion, model="m")["content"][0]
    follow_up = {
        "model": "m",
        "messages": [
            {"role": "assistant", "content": [block]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"]}]},
        ],
    }
    openai = anthropic_request_to_openai(follow_up)
    assert openai["messages"][0]["tool_calls"][0]["id"] == "call_1"
    assert openai["messages"][0]["tool_calls"][0]["extra_content"] == SIGNED["extra_content"]
    assert openai["messages"][1]["tool_call_id"] == "call_1"


def test_anthropic_streams_carry_the_signature_in_the_block_id() -> None:
    tr = OpenAIToAnthropicStream(model="m")
    fragment = {**SIGNED, "index": 0}
    events = tr.feed({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}}]})
    start = next(data for name, data in events if name == "content_block_start")
    assert split_tool_use_id(start["content_block"]["id"]) == ("call_1", "a+b/c==")


def test_an_id_without_a_signature_is_the_id_itself() -> None:
    assert tool_use_id("call_1", None) == "call_1"
    assert tool_use_id(None, "sig") is None
    assert split_tool_use_id("call_1__thought__") == ("call_1__thought__", None)


def test_the_signature_of_a_tool_call_is_read_from_its_google_extra_content() -> None:
    assert signature_of(SIGNED) == "a+b/c=="
    assert signature_of({"id": "c", "extra_content": extra_content("s")}) == "s"
    for call in (None, "call", {"id": "c"}, {"extra_content": {"google": "s"}}):
        assert signature_of(call) is None
    assert signature_of({"extra_content": {"google": {"thought_signature": ""}}}) is None
