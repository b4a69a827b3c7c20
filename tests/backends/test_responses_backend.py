"""Responses calls on a backend that serves chat completions (`sidecar.backends.responses`), pure:
the call goes up as the chat call that asks the same, the chat answer and stream come back as a
Response and Responses events, and the inner chat adapter keeps its own reading of the upstream.
The loopback journeys are tests/test_responses_route.py's."""

from typing import Any

import orjson
import pytest
from conftest import named_events

from sidecar.backends import responses
from sidecar.backends.base import InvalidResponse, Untranslatable
from sidecar.backends.openai import OpenAIBackend
from sidecar.call import Call, Dialect, Route
from sidecar.config import load_config
from sidecar.dialects.openai import OpenAIStream

JSON = dict[str, Any]
ASK = {"model": "gpt-4o", "instructions": "be brief", "input": "hi"}
CHAT_ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
BUSY = b'data: {"error": {"message": "busy", "type": "server_error", "code": "overloaded"}}\n\n'


def chat_backend() -> OpenAIBackend:
    env = {"SIDECAR_BACKENDS": "p", "P_BASE_URL": "http://up/v1", "P_RESPONSES": "chat"}
    return OpenAIBackend(load_config(env).chains["default"][0])


def responses_call(body: JSON) -> Call:
    return Call(
        Route.RESPONSES,
        Dialect.OPENAI,
        "POST",
        "responses",
        "",
        orjson.dumps(body),
        body,
        bool(body.get("stream")),
        body.get("model"),
        {},
        "rid-1",
        "default",
    )


def sse(*chunks: JSON) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)


def delta(content: str | None = None, finish: str | None = None) -> JSON:
    d = {} if content is None else {"content": content}
    return {"id": "c1", "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


USAGE_CHUNK = {"id": "c1", "choices": [], "usage": CHAT_ANSWER["usage"]}


def test_a_responses_call_goes_up_as_the_chat_completions_call_that_asks_the_same() -> None:
    req = responses.build(chat_backend(), responses_call({**ASK, "stream": True}))
    assert req.url == "http://up/v1/chat/completions"
    assert orjson.loads(req.body) == {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert req.headers["x-request-id"] == "rid-1"


def test_the_chat_call_carries_the_translated_body_as_its_raw_bytes() -> None:
    chat, _ = responses.chat_call(responses_call(ASK))
    assert chat.route is Route.CHAT_COMPLETIONS
    assert chat.body is not None
    assert orjson.loads(chat.raw) == chat.body


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ],
    ids=["stored-response", "item-reference"],
)
def test_a_call_only_the_issuing_backend_can_serve_is_untranslatable(
    extra: JSON, param: str
) -> None:
    with pytest.raises(Untranslatable) as e:
        responses.build(chat_backend(), responses_call({**ASK, **extra}))
    assert e.value.param == param


def test_a_request_the_translation_refuses_is_untranslatable_naming_its_param() -> None:
    body = {**ASK, "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "x"}}
    with pytest.raises(Untranslatable) as e:
        responses.build(chat_backend(), responses_call(body))
    assert e.value.param == "tool_choice"


def test_the_chat_answer_comes_back_as_a_response_under_the_callers_model() -> None:
    got = responses.answer(
        chat_backend(), responses_call(ASK), orjson.dumps(CHAT_ANSWER), model="alias"
    )
    response = orjson.loads(got.body)
    assert (response["object"], response["status"], response["model"]) == (
        "response",
        "completed",
        "alias",
    )
    [message] = response["output"]
    assert message["content"][0]["text"] == "hello"
    assert (got.usage.prompt, got.usage.completion) == (3, 1)


def test_a_2xx_chat_answer_without_choices_is_an_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        responses.answer(chat_backend(), responses_call(ASK), b'{"id": "c1"}', model="m")


def test_an_error_body_keeps_the_chat_error_shape() -> None:
    body = b'{"error": {"message": "slow down", "type": "rate_limit"}}'
    assert responses.error_body(chat_backend(), responses_call(ASK), 429, body) == body


def test_a_chat_stream_is_written_as_responses_events_with_the_chat_signals() -> None:
    adapter = responses.stream(chat_backend(), responses_call({**ASK, "stream": True}), model="m")
    chunks = [delta("hel"), delta("lo"), delta(finish="stop"), USAGE_CHUNK]
    step = adapter.feed(sse(*chunks) + b"data: [DONE]\n\n")
    assert (step.content, step.finished, step.done, step.error) == (True, True, True, None)
    events = named_events(step.out.decode())
    names = [name for name, _ in events]
    assert (names[0], names[-1]) == ("response.created", "response.completed")
    assert [d["delta"] for n, d in events if n == "response.output_text.delta"] == ["hel", "lo"]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == "hello"
    assert (adapter.usage.prompt, adapter.usage.completion) == (3, 1)
    assert adapter.text == ["hel", "lo"]
    assert adapter.finish_reasons == ["stop"]


def test_an_in_band_chat_error_keeps_its_class_and_becomes_a_responses_error_event() -> None:
    adapter = responses.stream(chat_backend(), responses_call({**ASK, "stream": True}), model="m")
    step = adapter.feed(BUSY)
    expected = OpenAIStream(include_usage=False).feed(BUSY).error
    assert step.error is not None and expected is not None
    assert step.error[0] is expected[0]
    [(name, data)] = named_events(step.error[1].decode())
    assert name == "error"
    assert (data["code"], data["message"]) == ("overloaded", "busy")


def test_a_finished_stream_cut_before_done_is_closed_by_the_terminator() -> None:
    adapter = responses.stream(chat_backend(), responses_call({**ASK, "stream": True}), model="m")
    step = adapter.feed(sse(delta("hi"), delta(finish="stop")))
    assert step.finished and not step.done
    closing = [name for name, _ in named_events(adapter.terminator().decode())]
    assert closing[-1] == "response.completed"
    assert "response.completed" not in [name for name, _ in named_events(step.out.decode())]


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_a_chat_chunk_of_only_reasoning_commits_where_the_chat_rules_alone_do_not(key: str) -> None:
    role = {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    thought = {"id": "c1", "choices": [{"index": 0, "delta": {key: "Hm."}}]}
    empty = {"id": "c1", "choices": [{"index": 0, "delta": {key: ""}}]}
    assert not OpenAIStream(include_usage=False).feed(sse(role, thought)).content
    adapter = responses.stream(chat_backend(), responses_call({**ASK, "stream": True}), model="m")
    assert not adapter.feed(sse(role, empty)).content
    step = adapter.feed(sse(thought))
    assert step.content
    names = [name for name, _ in named_events(step.out.decode())]
    assert "response.reasoning_summary_text.delta" in names
