"""Kind `bedrock` through aiobotocore against the fake Bedrock on loopback: Converse, then the
Anthropic-native path (`API=invoke`: InvokeModel / InvokeModelWithResponseStream) and Bedrock API
keys."""

import asyncio
import socket
from typing import Any

import aiohttp
import anthropic
import pytest
from backends.kinds import AWS_SECRET, BEDROCK_MODEL, chain
from conftest import (
    LONG,
    FakeFactory,
    SidecarFactory,
    chat,
    class_failures,
    post,
    sse_data,
    streamed_text,
    typed_tokens,
)
from fakes.bedrock_upstream import FakeBedrock, Script, anthropic_message

import sidecar.upstream_bedrock as sidecar_upstream_bedrock
from sidecar.backends.bedrock import BedrockSource
from sidecar.config import load_config
from sidecar.dialects.pivot import OpenAISink, PivotStream
from sidecar.failure import FailureClass
from sidecar.settings import ConfigError


async def test_openai_caller_gets_a_converse_answer_as_a_chat_completion(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, chat(model="gpt-x", max_tokens=30))
    assert r.status == 200
    assert r.json["choices"][0]["message"]["content"] == "Hello from the fake Bedrock."
    assert r.json["model"] == "gpt-x"
    assert r.json["usage"]["total_tokens"] == 13
    sent = bedrock.seen[0]
    assert sent.operation == "converse"
    assert sent.model_id == BEDROCK_MODEL
    assert sent.json["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
    assert sent.json["inferenceConfig"] == {"maxTokens": 30}
    assert typed_tokens(sc, "aws", "prompt") == 9
    assert typed_tokens(sc, "aws", "completion") == 4


async def test_bedrock_request_is_signed_with_sigv4_and_carries_no_caller_credential(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("aws", bedrock)))
    headers = {"authorization": "Bearer caller-token", "x-api-key": "k", "x-request-id": "req-77"}
    await post(http, sc.url, chat(), headers=headers)
    sent = bedrock.seen[0].headers
    assert sent["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDCANARY/")
    assert "x-api-key" not in sent
    assert "api-key" not in sent
    assert AWS_SECRET not in str(sent)
    assert sent["x-request-id"] == "req-77"


async def test_the_trace_context_reaches_bedrock(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("aws", bedrock)))
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {"traceparent": parent, "tracestate": "vendor=1"}
    for stream in (False, True):
        assert (await post(http, sc.url, chat(stream=stream), headers=headers)).status == 200
    assert [s.headers["traceparent"] for s in bedrock.seen] == [parent, parent]
    assert [s.headers["tracestate"] for s in bedrock.seen] == ["vendor=1", "vendor=1"]


async def test_openai_caller_streams_a_converse_stream(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, chat(stream=True, stream_options={"include_usage": True}))
    assert r.status == 200
    assert streamed_text(r.text) == "Hello from the fake Bedrock."
    events = sse_data(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"]["prompt_tokens"] == 9
    assert bedrock.seen[0].operation == "converse-stream"
    assert typed_tokens(sc, "aws", "prompt") == 9
    assert typed_tokens(sc, "aws", "completion") == 4


async def test_a_converse_stream_whose_body_ends_late_keeps_its_connection(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.default = Script(done_gap_s=0.3)
    sc = await sidecar(chain(("aws", bedrock)))
    for _ in range(3):
        r = await post(http, sc.url, chat(stream=True))
        assert streamed_text(r.text) == "Hello from the fake Bedrock."
        await asyncio.sleep(0.4)
    assert len({s.peer_port for s in bedrock.seen}) == 1


async def test_a_converse_stream_tail_that_does_not_end_in_time_drops_the_connection(
    bedrock: FakeBedrock,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sidecar_upstream_bedrock, "TAIL_S", 0.2)
    bedrock.default = Script(done_gap_s=5)
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, chat(stream=True))
    assert streamed_text(r.text) == "Hello from the fake Bedrock."
    for _ in range(40):
        if bedrock.cancelled:
            break
        await asyncio.sleep(0.05)
    assert bedrock.cancelled


async def test_converse_tool_use_streams_as_openai_tool_call_fragments(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(Script(tool=("weather", {"city": "Oslo"})))
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, chat(stream=True))
    calls = [
        tc
        for c in sse_data(r.text)
        if isinstance(c, dict)
        for ch in c["choices"]
        for tc in ch["delta"].get("tool_calls", [])
    ]
    assert calls[0]["id"] == "tooluse_fake"
    assert calls[0]["function"]["name"] == "weather"
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"city":"Oslo"}'
    assert sse_data(r.text)[-1] == "[DONE]"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ("ThrottlingException", "rate_limited"),
        ("ServiceUnavailableException", "overloaded"),
        ("ModelTimeoutException", "timeout"),
        ("InternalServerException", "server_error"),
    ],
)
async def test_bedrock_http_errors_fall_back_with_their_class(
    bedrock: FakeBedrock,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    error: str,
    cls: str,
    stream: bool,
) -> None:
    bedrock.script(Script(error=error))
    backup = await fake()
    sc = await sidecar(chain(("aws", bedrock), ("backup", backup)))
    r = await post(http, sc.url, chat(stream))
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == f"aws={cls}"
    assert r.headers["x-sidecar-backend"] == "backup"
    assert class_failures(sc, "aws", cls) == 1


@pytest.mark.parametrize(
    ("error", "status", "cls"),
    [("ValidationException", 400, "client_error"), ("AccessDeniedException", 403, "auth")],
)
async def test_bedrock_errors_that_do_not_fall_back_reach_the_caller_in_openai_shape(
    bedrock: FakeBedrock,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    error: str,
    status: int,
    cls: str,
) -> None:
    bedrock.script(Script(error=error))
    backup = await fake()
    sc = await sidecar(chain(("aws", bedrock), ("backup", backup)))
    r = await post(http, sc.url, chat())
    assert r.status == status
    assert r.json["error"]["code"] == error
    assert r.json["error"]["message"] == f"fake {error}"
    assert r.headers["x-sidecar-failures"] == f"aws={cls}"
    assert backup.seen == []


@pytest.mark.parametrize(
    ("exception", "cls"),
    [
        ("throttlingException", "rate_limited"),
        ("serviceUnavailableException", "overloaded"),
        ("internalServerException", "server_error"),
        ("modelStreamErrorException", "server_error"),
    ],
)
async def test_exception_frame_before_content_falls_back_with_its_class(
    bedrock: FakeBedrock,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    exception: str,
    cls: str,
) -> None:
    bedrock.script(Script(end="exception", exception=exception, after=0))
    backup = await fake()
    sc = await sidecar(chain(("aws", bedrock), ("backup", backup)))
    r = await post(http, sc.url, chat(stream=True))
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == f"aws={cls}"
    assert streamed_text(r.text) == "Hello from the fake."
    assert class_failures(sc, "aws", cls) == 1


@pytest.mark.parametrize("end", ["exception", "cut"])
async def test_broken_converse_stream_after_commit_ends_with_one_terminal_error(
    bedrock: FakeBedrock,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    end: str,
) -> None:
    bedrock.script(Script(text=LONG, end=end, after=3))
    backup = await fake()
    sc = await sidecar(chain(("aws", bedrock), ("backup", backup)))
    r = await post(http, sc.url, chat(stream=True))
    events = sse_data(r.text)
    assert "[DONE]" not in events
    assert [e for e in events if "error" in e] == [events[-1]]
    assert streamed_text(r.text) == "w0 w1 w2"
    assert backup.seen == []
    assert class_failures(sc, "aws", "stream_interrupted") == 1


async def test_unreachable_bedrock_endpoint_is_a_connect_error(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backup = await fake()
    env = chain(("backup", backup), AWS_KIND="bedrock", AWS_REGION="us-east-1")
    env |= {
        "SIDECAR_BACKENDS": "aws,backup",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_AWS_ACCESS_KEY_ID": "AKID",
        "AWS_AWS_SECRET_ACCESS_KEY": "x",
    }
    sc = await sidecar(env)
    r = await post(http, sc.url, chat())
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == "aws=connect_error"


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (
            [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}],
            "messages[0].content[0]",
        ),
        (
            [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
            "messages[0].content[0]",
        ),
    ],
    ids=["image_url", "audio"],
)
async def test_untranslatable_request_is_a_400_with_nothing_sent_to_bedrock(
    bedrock: FakeBedrock,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    content: list[dict[str, Any]],
    param: str,
) -> None:
    sc = await sidecar(chain(("aws", bedrock)))
    body = chat(messages=[{"role": "user", "content": content}])
    r = await post(http, sc.url, body)
    assert r.status == 400
    assert r.json["error"]["param"] == param
    assert bedrock.seen == []


def test_metadata_after_message_stop_is_the_end_of_a_converse_stream() -> None:
    adapter = PivotStream(BedrockSource(model="m", include_usage=False), OpenAISink())
    assert not adapter.feed({"messageStart": {"role": "assistant"}}).content
    assert adapter.feed(
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "a"}}}
    ).content
    assert adapter.feed({"messageStop": {"stopReason": "end_turn"}}).finished
    step = adapter.feed({"metadata": {"usage": {"inputTokens": 2, "outputTokens": 1}}})
    assert step.done
    assert step.out.endswith(b"data: [DONE]\n\n")
    assert (adapter.usage.prompt, adapter.usage.completion) == (2, 1)


def test_malformed_stop_reason_is_an_invalid_response() -> None:
    adapter = PivotStream(BedrockSource(model="m", include_usage=False), OpenAISink())
    step = adapter.feed({"messageStop": {"stopReason": "malformed_tool_use"}})
    assert step.error is not None
    assert step.error[0] is FailureClass.INVALID_RESPONSE


async def test_validation_exception_frame_before_content_is_a_server_error_that_falls_back(
    bedrock: FakeBedrock, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    # An error event before content is overloaded, rate_limited or server_error.
    bedrock.script(Script(end="exception", exception="validationException", after=0))
    backup = await fake()
    sc = await sidecar(chain(("aws", bedrock), ("backup", backup)))
    r = await post(http, sc.url, chat(stream=True))
    assert r.headers["x-sidecar-failures"] == "aws=server_error"
    assert r.status == 200
    assert len(backup.seen) == 1


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("throttlingException", FailureClass.RATE_LIMITED),
        ("serviceUnavailableException", FailureClass.OVERLOADED),
        ("modelNotReadyException", FailureClass.OVERLOADED),
        ("modelTimeoutException", FailureClass.SERVER_ERROR),
        ("validationException", FailureClass.SERVER_ERROR),
        ("accessDeniedException", FailureClass.SERVER_ERROR),
        ("modelStreamErrorException", FailureClass.SERVER_ERROR),
    ],
)
def test_exception_events_are_classified_by_name(name: str, cls: FailureClass) -> None:
    adapter = PivotStream(BedrockSource(model="m", include_usage=False), OpenAISink())
    step = adapter.feed({name: {"message": "boom"}})
    assert step.error is not None
    assert step.error[0] is cls
    assert b'"message":"boom"' in step.error[1]


# ---------------------------------------------------------------- API=invoke, and API keys

API_KEY = "ABSKQmVkcm9ja0FQSUtleS1jYW5hcnk="


def invoke(bedrock: FakeBedrock, **extra: str) -> dict[str, str]:
    return chain(("aws", bedrock), AWS_API="invoke", **extra)


def names(text: str) -> list[str]:
    return [line[7:] for line in text.splitlines() if line.startswith("event: ")]


async def test_an_anthropic_callers_body_reaches_claude_on_bedrock_as_written(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(invoke(bedrock))
    body = {
        "model": "claude",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    headers = {"anthropic-beta": "interleaved-thinking-2025-05-14, context-1m-2025-08-07"}
    r = await post(http, sc.url, body, path="/v1/messages", headers=headers)
    assert r.status == 200
    assert r.json == anthropic_message(Script())
    seen = bedrock.seen[0]
    assert (seen.operation, seen.model_id) == ("invoke", BEDROCK_MODEL)
    sent = seen.json
    assert sent.pop("anthropic_version") == "bedrock-2023-05-31"
    assert sent.pop("anthropic_beta") == [
        "interleaved-thinking-2025-05-14",
        "context-1m-2025-08-07",
    ]
    assert sent == {k: v for k, v in body.items() if k != "model"}
    assert seen.headers["authorization"].startswith("AWS4-HMAC-SHA256")
    # Anthropic's input count excludes the cached tokens; the prompt counter includes them.
    assert (typed_tokens(sc, "aws", "prompt"), typed_tokens(sc, "aws", "completion")) == (11, 4)


async def test_the_anthropic_sdk_streams_claude_from_invoke_with_response_stream(
    bedrock: FakeBedrock, sidecar: SidecarFactory
) -> None:
    sc = await sidecar(invoke(bedrock))
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="unused", max_retries=0)
    async with (
        client,
        client.messages.stream(
            model="claude", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hello from the fake Bedrock."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4
    seen = bedrock.seen[0]
    assert seen.operation == "invoke-with-response-stream"
    assert "stream" not in seen.json and "model" not in seen.json
    assert (typed_tokens(sc, "aws", "prompt"), typed_tokens(sc, "aws", "completion")) == (9, 4)


async def test_the_anthropic_sdk_gets_a_streamed_tool_use_from_invoke(
    bedrock: FakeBedrock, sidecar: SidecarFactory
) -> None:
    bedrock.script(Script(tool=("weather", {"city": "Rome"})))
    sc = await sidecar(invoke(bedrock))
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key="unused", max_retries=0)
    async with (
        client,
        client.messages.stream(
            model="claude", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"city": "Rome"}


async def test_openai_callers_reach_claude_on_invoke_translated(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(invoke(bedrock))
    whole = await post(http, sc.url, chat(temperature=0.3))
    streamed = await post(http, sc.url, chat(stream=True))
    assert whole.json["choices"][0]["message"]["content"] == "Hello from the fake Bedrock."
    assert streamed_text(streamed.text) == "Hello from the fake Bedrock."
    assert sse_data(streamed.text)[-1] == "[DONE]"
    sent = bedrock.seen[0].json
    assert sent["anthropic_version"] == "bedrock-2023-05-31"
    assert sent["max_tokens"] == 4096
    assert sent["temperature"] == 0.3
    assert "model" not in sent


@pytest.mark.parametrize(
    ("exception", "cls"),
    [("throttlingException", "rate_limited"), ("serviceUnavailableException", "overloaded")],
)
async def test_an_exception_frame_before_content_falls_back_with_its_class(
    bedrock: FakeBedrock,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    exception: str,
    cls: str,
) -> None:
    bedrock.script(Script(end="exception", exception=exception, after=0))
    backup = await fake()
    sc = await sidecar(chain(("aws", bedrock), ("backup", backup), AWS_API="invoke"))
    r = await post(http, sc.url, {**chat(stream=True), "max_tokens": 9}, path="/v1/messages")
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == f"aws={cls}"
    assert "event: message_stop" in r.text


@pytest.mark.parametrize("end", ["exception", "cut"])
async def test_an_invoke_stream_broken_after_commit_ends_with_one_error_event(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession, end: str
) -> None:
    bedrock.script(Script(text=LONG, end=end, after=3))
    sc = await sidecar(invoke(bedrock))
    r = await post(http, sc.url, {**chat(stream=True), "max_tokens": 9}, path="/v1/messages")
    events = names(r.text)
    assert events[-1] == "error"
    assert events.count("error") == 1
    assert "message_stop" not in events


async def test_invoke_http_errors_reach_an_anthropic_caller_in_its_dialect(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(Script(error="ValidationException"))
    sc = await sidecar(invoke(bedrock))
    r = await post(http, sc.url, {**chat(), "max_tokens": 9}, path="/v1/messages")
    assert r.status == 400
    assert r.json["type"] == "error"
    assert r.json["error"] == {
        "type": "invalid_request_error",
        "message": "fake ValidationException",
    }


async def test_a_bedrock_api_key_replaces_sigv4(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    env = {
        "SIDECAR_BACKENDS": "aws",
        "AWS_KIND": "bedrock",
        "AWS_ENDPOINT_URL": bedrock.url,
        "AWS_REGION": "us-east-1",
        "AWS_MODEL": BEDROCK_MODEL,
        "AWS_API_KEY": API_KEY,
    }
    sc = await sidecar(env)
    r = await post(http, sc.url, chat(), headers={"x-request-id": "req-9"})
    assert r.status == 200
    sent = bedrock.seen[0].headers
    assert sent["authorization"] == f"Bearer {API_KEY}"
    assert sent["x-request-id"] == "req-9"
    assert "x-amz-security-token" not in sent
    sc.log_lines()
    assert API_KEY not in sc.log.getvalue().decode()


async def test_a_bedrock_api_key_wins_over_aws_credentials_and_is_never_shown(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(Script(error="AccessDeniedException"))
    sc = await sidecar(invoke(bedrock, AWS_API_KEY=API_KEY))
    r = await post(http, sc.url, chat())
    assert r.status == 403
    assert bedrock.seen[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in r.text and AWS_SECRET not in r.text


async def test_aws_bearer_token_bedrock_is_sent_as_bearer(
    bedrock: FakeBedrock,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # botocore reads it from the process environment when no backend credentials are set.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", API_KEY)
    env = {
        "SIDECAR_BACKENDS": "aws",
        "AWS_KIND": "bedrock",
        "AWS_ENDPOINT_URL": bedrock.url,
        "AWS_REGION": "us-east-1",
        "AWS_MODEL": BEDROCK_MODEL,
    }
    sc = await sidecar(env)
    r = await post(http, sc.url, chat())
    assert r.status == 200
    assert bedrock.seen[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_api_must_be_converse_or_invoke() -> None:
    env = {"SIDECAR_BACKENDS": "aws", "AWS_KIND": "bedrock", "AWS_REGION": "x", "AWS_API": "chat"}
    with pytest.raises(ConfigError) as e:
        load_config(env)
    assert e.value.env_var == "AWS_API"
