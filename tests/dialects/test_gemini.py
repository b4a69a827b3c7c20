"""OpenAI ⇄ Gemini translation (`sidecar.dialects.gemini`), pure."""

from typing import Any

import orjson
import pytest

from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError
from sidecar.dialects.gemini import (
    GeminiStreamToOpenAI,
    gemini_error_to_openai,
    gemini_response_to_openai,
    gemini_retry_delay_s,
    openai_request_to_gemini,
)

JSON = dict[str, Any]
PNG = "iVBORw0KGgo="


def translate(model: str = "gemini-3-pro", **body: Any) -> JSON:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return openai_request_to_gemini(body, model=model)


def test_images_and_files_become_inline_or_file_data() -> None:
    content = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg=="}},
    ]
    parts = translate(messages=[{"role": "user", "content": content}])["contents"][0]["parts"]
    assert parts == [
        {"text": "look"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"fileUri": "https://example.com/cat.jpg", "mimeType": "image/jpeg"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERg=="}},
    ]


def test_assistant_turns_are_model_turns_and_system_is_hoisted() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "developer", "content": "rule"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    out = translate(messages=messages)
    assert [c["role"] for c in out["contents"]] == ["user", "model", "user"]
    assert out["systemInstruction"] == {"parts": [{"text": "rule"}]}


@pytest.mark.parametrize(
    ("fmt", "config"),
    [
        ({"type": "json_object"}, {"responseMimeType": "application/json"}),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}},
        ),
        ({"type": "text"}, None),
    ],
)
def test_response_format_becomes_structured_output(fmt: JSON, config: JSON | None) -> None:
    assert translate(response_format=fmt).get("generationConfig") == config


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-3-pro", "high", {"thinkingLevel": "high"}),
        ("gemini-3-flash", "none", {"thinkingLevel": "minimal"}),
        ("models/gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ],
)
def test_reasoning_effort_becomes_a_thinking_config(
    model: str, effort: str, thinking: JSON
) -> None:
    config = translate(model, reasoning_effort=effort)["generationConfig"]
    assert config["thinkingConfig"] == thinking


def test_sampling_settings_map_to_the_generation_config() -> None:
    config = translate(seed=3, presence_penalty=0.5, frequency_penalty=0.1, top_p=0.9, stop=["a"])
    assert config["generationConfig"] == {
        "seed": 3,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.1,
        "topP": 0.9,
        "stopSequences": ["a"],
    }


TOOLS = [
    {"type": "function", "function": {"name": "f"}},
    {"type": "function", "function": {"name": "g"}},
]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("none", {"mode": "NONE"}),
        ("auto", {"mode": "AUTO"}),
        (
            {"type": "function", "function": {"name": "g"}},
            {"mode": "ANY", "allowedFunctionNames": ["g"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                },
            },
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_tool_choice_becomes_a_function_calling_config(choice: Any, config: JSON) -> None:
    out = translate(tools=TOOLS, tool_choice=choice)
    assert out["toolConfig"] == {"functionCallingConfig": config}
    assert out["tools"] == [{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}]


def test_a_tool_result_that_answers_no_call_is_untranslatable() -> None:
    messages = [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]
    with pytest.raises(TranslationError):
        translate(messages=messages)


def test_custom_tools_are_untranslatable() -> None:
    with pytest.raises(TranslationError):
        translate(tools=[{"type": "custom", "custom": {"name": "x"}}])


def test_a_malformed_function_call_is_an_invalid_upstream_response() -> None:
    resp = {"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL"}]}
    with pytest.raises(InvalidUpstreamResponse):
        gemini_response_to_openai(resp, model="m")


def test_call_ids_are_stable_for_one_answer_and_differ_between_answers() -> None:
    def answer(rid: str) -> JSON:
        call = {"functionCall": {"name": "f", "args": {}}}
        resp = {"responseId": rid, "candidates": [{"content": {"parts": [call]}}]}
        out = gemini_response_to_openai(resp, model="m")
        return out["choices"][0]["message"]["tool_calls"][0]  # type: ignore[no-any-return]

    assert answer("a")["id"] == answer("a")["id"]
    assert answer("a")["id"] != answer("b")["id"]


def test_stream_commits_only_on_content_and_finishes_with_usage() -> None:
    tr = GeminiStreamToOpenAI(model="m", include_usage=True)
    first = tr.feed({"candidates": [{"content": {"parts": [{"text": "t", "thought": True}]}}]})
    assert [c["choices"][0]["delta"] for c in first] == [{"role": "assistant", "content": ""}]
    last = tr.feed(
        {
            "candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1},
        }
    )
    assert last[0]["choices"][0]["delta"] == {"content": "ok"}
    assert last[1]["choices"][0]["finish_reason"] == "length"
    assert last[2]["usage"]["total_tokens"] == 3
    assert tr.finished


def test_google_error_bodies_become_openai_envelopes() -> None:
    body = [{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}]
    assert gemini_error_to_openai(body, 429) == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_exceeded",
            "param": None,
            "code": "RESOURCE_EXHAUSTED",
        }
    }
    assert gemini_error_to_openai(None, 500)["error"]["message"] == "Gemini answered 500"


def google_429(*details: JSON, wrapped: bool = False) -> bytes:
    error = {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": list(details)}
    return orjson.dumps([{"error": error}] if wrapped else {"error": error})


def retry_info(delay: Any) -> JSON:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


@pytest.mark.parametrize(
    ("delay", "seconds"), [("17s", 17.0), ("0.5s", 0.5), ("0s", 0.0), ("1.000340012s", 1.000340012)]
)
def test_retry_info_gives_the_delay_in_seconds(delay: str, seconds: float) -> None:
    help_link = {"@type": "type.googleapis.com/google.rpc.Help", "links": []}
    assert gemini_retry_delay_s(google_429(help_link, retry_info(delay))) == seconds
    assert gemini_retry_delay_s(google_429(retry_info(delay), wrapped=True)) == seconds


@pytest.mark.parametrize(
    "body",
    [
        google_429(),
        google_429({"@type": "type.googleapis.com/google.rpc.Help", "retryDelay": "5s"}),
        google_429(retry_info("5")),
        google_429(retry_info(5)),
        google_429(retry_info("-5s")),
        google_429(retry_info("5ms")),
        google_429(retry_info("9" * 400 + "s")),
        b"not json",
        b'{"error": "busy"}',
        b"[]",
    ],
)
def test_anything_but_a_retry_info_duration_gives_no_delay(body: bytes) -> None:
    assert gemini_retry_delay_s(body) is None
