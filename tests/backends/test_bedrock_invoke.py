"""Bedrock's Anthropic-native path (`API=invoke`: InvokeModel / InvokeModelWithResponseStream)
and Bedrock API keys, through the real sidecar against the fake Bedrock on loopback."""

import aiohttp
import anthropic
import pytest
from backends.kinds import AWS_SECRET, BEDROCK_MODEL, chain
from conftest import LONG, FakeFactory, Running, SidecarFactory, chat, post, sse_data, streamed_text
from fakes.bedrock_upstream import FakeBedrock, Script, anthropic_message

from sidecar.config import load_config
from sidecar.settings import ConfigError

API_KEY = "ABSKQmVkcm9ja0FQSUtleS1jYW5hcnk="


def invoke(bedrock: FakeBedrock, **extra: str) -> dict[str, str]:
    return chain(("aws", bedrock), AWS_API="invoke", **extra)


def names(text: str) -> list[str]:
    return [line[7:] for line in text.splitlines() if line.startswith("event: ")]


def tokens(sc: Running, kind: str) -> float:
    return sc.metric("llm_sidecar_tokens_total", chain="default", backend="aws", type=kind)


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
    assert (tokens(sc, "prompt"), tokens(sc, "completion")) == (11, 4)


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
    assert (tokens(sc, "prompt"), tokens(sc, "completion")) == (9, 4)


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
