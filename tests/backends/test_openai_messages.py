"""Anthropic callers on OpenAI-family backends (`sidecar.backends.openai_messages`), pure: the
request translated and addressed, answers and errors back in Anthropic's shape, the OpenAI stream
read into items. The loopback journeys are tests/test_messages_route.py's."""

import subprocess
import sys
from typing import Any

import orjson
import pytest

from sidecar.backends import openai_messages
from sidecar.backends.base import InvalidResponse, Untranslatable
from sidecar.call import Call, Dialect, Route
from sidecar.dialects.pivot import END, InBandError
from sidecar.failure import FailureClass

URL = "http://up/v1/chat/completions"


def call(body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Call:
    body = body or {
        "model": "claude-x",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return Call(
        route=Route.MESSAGES,
        dialect=Dialect.ANTHROPIC,
        method="POST",
        path="messages",
        query="",
        raw=orjson.dumps(body),
        body=body,
        stream=False,
        model=body.get("model"),
        headers=headers or {},
        request_id="rid-1",
        chain="default",
    )


def test_the_request_goes_out_as_chat_completions_with_the_backends_model() -> None:
    req = openai_messages.build(call(), url=URL, headers={}, model="gpt-4o")
    sent = orjson.loads(req.body)
    assert (req.method, req.url) == ("POST", URL)
    assert sent["model"] == "gpt-4o"
    assert sent["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_the_output_limit_goes_in_the_field_the_backend_names(field: str) -> None:
    req = openai_messages.build(call(), url=URL, headers={}, model=None, token_limit=field)
    sent = orjson.loads(req.body)
    assert {k: v for k, v in sent.items() if k.startswith("max_")} == {field: 10}


def test_without_a_backend_model_the_callers_model_is_sent() -> None:
    req = openai_messages.build(call(), url=URL, headers={}, model=None)
    assert orjson.loads(req.body)["model"] == "claude-x"


def test_anthropic_headers_stay_behind_and_the_backends_own_win() -> None:
    caller = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "x",
        "x-custom": "1",
        "authorization": "Bearer caller",
    }
    req = openai_messages.build(
        call(headers=caller),
        url=URL,
        headers={"authorization": "Bearer ours"},
        model=None,
    )
    assert req.headers == {
        "x-custom": "1",
        "authorization": "Bearer ours",
        "x-request-id": "rid-1",
    }


def test_an_untranslatable_request_names_its_parameter() -> None:
    server = {"model": "m", "max_tokens": 1, "messages": [], "mcp_servers": [{"type": "url"}]}
    with pytest.raises(Untranslatable) as e:
        openai_messages.build(call(server), url=URL, headers={}, model=None)
    assert e.value.param == "mcp_servers"


def test_an_answer_is_an_anthropic_message_under_the_callers_model() -> None:
    parsed = {
        "id": "c1",
        "choices": [{"index": 0, "message": {"content": "hello"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    message = orjson.loads(openai_messages.answer(parsed, model="claude-x"))
    assert (message["type"], message["model"], message["stop_reason"]) == (
        "message",
        "claude-x",
        "max_tokens",
    )
    assert message["content"] == [{"type": "text", "text": "hello"}]


@pytest.mark.parametrize(
    "parsed",
    [{"id": "c1"}, {"choices": "nope"}],
    ids=["no-choices", "choices-not-a-list"],
)
def test_a_2xx_without_a_list_of_choices_is_an_invalid_response(parsed: dict[str, Any]) -> None:
    with pytest.raises(InvalidResponse):
        openai_messages.answer(parsed, model="m")


def test_an_error_body_that_is_not_json_still_reaches_the_caller_in_anthropic_shape() -> None:
    body = orjson.loads(openai_messages.error_body(502, b"<html>bad gateway</html>"))
    assert body == {
        "type": "error",
        "error": {"type": "api_error", "message": "<html>bad gateway</html>"},
    }


def chunk(content: str) -> bytes:
    obj = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def test_the_openai_source_stops_at_done_and_keeps_the_last_usage() -> None:
    source = openai_messages.OpenAISource()
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}}\n\n'
    items = source.feed(chunk("a") + usage + b"data: [DONE]\n\n" + chunk("after"))
    assert items[-1] is END
    assert len(items) == 3  # nothing after [DONE] is read
    assert (source.usage.prompt, source.usage.completion) == (4, 6)


def test_the_openai_source_turns_error_and_malformed_events_into_in_band_errors() -> None:
    busy = {"error": {"message": "busy", "type": "server_error", "code": "server_is_overloaded"}}
    (error,) = openai_messages.OpenAISource().feed(b"data: " + orjson.dumps(busy) + b"\n\n")
    assert isinstance(error, InBandError)
    assert (error.cls, error.envelope) == (FailureClass.OVERLOADED, busy)
    (bad,) = openai_messages.OpenAISource().feed(b"data: {not json\n\n" + chunk("later"))
    assert isinstance(bad, InBandError) and bad.cls is FailureClass.INVALID_RESPONSE


def test_the_openai_source_reads_an_event_left_without_its_blank_line_at_the_end() -> None:
    source = openai_messages.OpenAISource()
    assert source.feed(chunk("a").rstrip(b"\n")) == []
    (item,) = source.end()
    assert isinstance(item, dict) and item["choices"][0]["delta"]["content"] == "a"


def test_a_sidecar_serving_only_openai_callers_never_loads_the_anthropic_translations() -> None:
    code = (
        "import sys, sidecar.app, sidecar.backends.openai\n"
        "print(sorted(m for m in sys.modules if 'anthropic' in m or m.endswith('openai_messages')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
