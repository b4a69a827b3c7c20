"""Kind `openai` (`sidecar.backends.openai`), pure: the caller's bytes go up unchanged unless the
body must change, answers are checked and counted, each route picks its reader. The loopback
journeys are tests/test_routes.py's."""

from typing import Any

import orjson
import pytest

from sidecar.backends.base import InvalidResponse
from sidecar.backends.openai import OpenAIBackend, chat_token_limit
from sidecar.backends.passthrough import PassthroughStream
from sidecar.call import Call, Dialect, Route
from sidecar.config import load_config
from sidecar.dialects.openai import OpenAIStream
from sidecar.dialects.pivot import PivotStream


def backend(**settings: str) -> OpenAIBackend:
    env = {"SIDECAR_BACKENDS": "p", "P_BASE_URL": "http://up/v1/", "P_API_KEY": "sk-ours"}
    env.update({f"P_{k.upper()}": v for k, v in settings.items()})
    return OpenAIBackend(load_config(env).chains["default"][0])


def call(raw: bytes = b'{"model": "gpt-4o",   "messages": []}', **fields: Any) -> Call:
    body = orjson.loads(raw) if raw else None
    made: dict[str, Any] = {
        "route": Route.CHAT_COMPLETIONS,
        "dialect": Dialect.OPENAI,
        "method": "POST",
        "path": "chat/completions",
        "query": "",
        "raw": raw,
        "body": body,
        "stream": bool(body and body.get("stream")),
        "model": body.get("model") if body else None,
        "headers": {"x-custom": "1", "authorization": "Bearer caller"},
        "request_id": "rid-1",
        "chain": "default",
    }
    made.update(fields)
    return Call(**made)


def test_an_unchanged_request_goes_up_byte_for_byte_with_our_credential() -> None:
    c = call()
    req = backend(headers='{"OpenAI-Organization": "org-1"}').build(c)
    assert (req.method, req.url, req.body) == ("POST", "http://up/v1/chat/completions", c.raw)
    assert req.headers == {
        "x-custom": "1",
        "authorization": "Bearer sk-ours",
        "openai-organization": "org-1",
        "x-request-id": "rid-1",
    }


def test_a_keyless_backend_adds_no_credential() -> None:
    env = {"SIDECAR_BACKENDS": "p", "P_BASE_URL": "http://up/v1"}
    b = OpenAIBackend(load_config(env).chains["default"][0])
    assert "authorization" not in b.static_headers


def test_a_stream_asks_for_usage_by_a_prefix_and_keeps_the_callers_bytes_after_it() -> None:
    raw = b'  {"model": "gpt-4o", "stream": true,  "messages": []}'
    body = backend().build(call(raw)).body
    assert body == b'{"stream_options":{"include_usage":true},' + raw.lstrip()[1:]
    assert orjson.loads(body)["stream_options"] == {"include_usage": True}


def test_a_stream_with_its_own_stream_options_gets_include_usage_merged_in() -> None:
    raw = b'{"model": "gpt-4o", "stream": true, "stream_options": {"x": 1}, "messages": []}'
    sent = orjson.loads(backend().build(call(raw)).body)
    assert sent["stream_options"] == {"x": 1, "include_usage": True}


def test_a_stream_that_asks_for_usage_itself_goes_up_unchanged() -> None:
    raw = b'{"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}}'
    assert backend().build(call(raw)).body == raw


@pytest.mark.parametrize(
    ("settings", "model"),
    [
        ({"model": "gpt-4o-mini"}, "gpt-4o-mini"),
        ({"model_map": "gpt-4o=gpt-4o-2024"}, "gpt-4o-2024"),
    ],
    ids=["model", "model_map"],
)
def test_a_model_override_or_map_rewrites_the_model(settings: dict[str, str], model: str) -> None:
    sent = orjson.loads(backend(**settings).build(call()).body)
    assert sent == {"model": model, "messages": []}


def test_urls_per_route_and_pass_through_paths_with_their_query() -> None:
    b = backend()
    assert b.url(call(route=Route.EMBEDDINGS)) == "http://up/v1/embeddings"
    passthrough = call(b"", route=Route.PASSTHROUGH, path="files/f-1", query="a=1")
    assert b.url(passthrough) == "http://up/v1/files/f-1?a=1"
    assert b.url(call(b"", route=Route.PASSTHROUGH, path="models")) == "http://up/v1/models"


def test_an_answer_is_the_upstreams_bytes_with_its_usage_counted() -> None:
    body = b'{"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 9}}'
    answer = backend().answer(call(), body)
    assert answer.body == body
    assert (answer.usage.prompt, answer.usage.completion) == (2, 9)


@pytest.mark.parametrize(
    "body", [b"<html>", b"[1]", b'{"id": "x"}'], ids=["html", "array", "no-choices"]
)
def test_a_chat_answer_that_is_not_a_completion_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidResponse):
        backend().answer(call(), body)


def test_an_embeddings_answer_needs_no_choices() -> None:
    body = b'{"data": [], "usage": {"prompt_tokens": 5}}'
    assert backend().answer(call(route=Route.EMBEDDINGS), body).usage.prompt == 5


def test_error_bodies_of_openai_callers_are_relayed_as_they_came() -> None:
    assert backend().error_body(call(), 429, b"<not json>") == b"<not json>"


def test_each_route_reads_its_stream_with_its_own_adapter() -> None:
    b = backend()
    assert isinstance(b.stream(call()), OpenAIStream)
    assert isinstance(b.stream(call(b"", route=Route.PASSTHROUGH)), PassthroughStream)
    messages = call(b'{"model": "m", "max_tokens": 1, "messages": []}', route=Route.MESSAGES)
    assert isinstance(b.stream(messages), PivotStream)


def test_a_stream_is_what_the_caller_asked_for_except_on_pass_through() -> None:
    b = backend()
    assert b.reads_stream(call(stream=True), "application/json")
    assert not b.reads_stream(call(), "text/event-stream")
    assert b.reads_stream(call(b"", route=Route.PASSTHROUGH), "text/event-stream")


def test_the_caller_gets_the_upstreams_rate_limit_headers_only() -> None:
    headers = {"x-ratelimit-remaining-requests": "9", "set-cookie": "a=b", "server": "x"}
    assert backend().response_headers(call(), headers) == {"x-ratelimit-remaining-requests": "9"}


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({}, "max_completion_tokens"),  # the default BASE_URL
        ({"BASE_URL": "https://api.openai.com/v1/"}, "max_completion_tokens"),
        ({"BASE_URL": "https://eu.api.openai.com/v1"}, "max_completion_tokens"),
        ({"BASE_URL": "http://localhost:11434/v1"}, "max_tokens"),
        ({"BASE_URL": "http://vllm.internal:8000/v1"}, "max_tokens"),
        ({"BASE_URL": "https://api.openai.com.example.net/v1"}, "max_tokens"),
        # kind openai at Azure OpenAI's v1 API (it is OpenAI's API; kind azure says the same)
        ({"BASE_URL": "https://r.openai.azure.com/openai/v1/"}, "max_completion_tokens"),
        ({"BASE_URL": "https://r.services.ai.azure.com/openai/v1"}, "max_completion_tokens"),
        ({"BASE_URL": "https://r.cognitiveservices.azure.com/openai/v1"}, "max_completion_tokens"),
        ({"BASE_URL": "https://r.openai.azure.com/other/v1"}, "max_tokens"),
        ({"KIND": "azure", "BASE_URL": "https://r.openai.azure.com"}, "max_completion_tokens"),
        (
            {
                "KIND": "azure",
                "BASE_URL": "https://r.openai.azure.com",
                "DEPLOYMENT": "d",
                "API_VERSION": "2024-10-21",
            },
            "max_completion_tokens",
        ),
        (
            {
                "KIND": "azure",
                "BASE_URL": "https://r.openai.azure.com",
                "DEPLOYMENT": "d",
                "API_VERSION": "2024-08-01-preview",
            },
            "max_tokens",
        ),
    ],
)
def test_the_output_limit_field_of_translated_requests_by_upstream(
    settings: dict[str, str], field: str
) -> None:
    env = {"SIDECAR_BACKENDS": "p", "P_API_KEY": "sk-ours"}
    env.update({f"P_{k}": v for k, v in settings.items()})
    assert chat_token_limit(load_config(env).chains["default"][0]) == field


def test_a_responses_call_through_chat_carries_its_limit_in_the_upstreams_field() -> None:
    raw = b'{"model": "o4-mini", "input": "hi", "max_output_tokens": 9}'
    responses = call(raw, route=Route.RESPONSES, path="responses")
    at_openai = OpenAIBackend(
        load_config({"SIDECAR_BACKENDS": "p", "P_API_KEY": "k", "P_RESPONSES": "chat"}).chains[
            "default"
        ][0]
    )
    sent = orjson.loads(at_openai.build(responses).body)
    assert (sent.get("max_completion_tokens"), "max_tokens" in sent) == (9, False)
    sent = orjson.loads(backend(RESPONSES="chat").build(responses).body)
    assert (sent.get("max_tokens"), "max_completion_tokens" in sent) == (9, False)


def test_a_callers_own_chat_body_keeps_its_limit_field_and_its_bytes() -> None:
    raw = b'{"model": "o4-mini",  "max_tokens": 9, "messages": []}'
    at_openai = OpenAIBackend(
        load_config({"SIDECAR_BACKENDS": "p", "P_API_KEY": "k"}).chains["default"][0]
    )
    assert at_openai.build(call(raw)).body == raw
