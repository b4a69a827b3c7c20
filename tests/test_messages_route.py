"""POST /v1/messages (Anthropic callers) served by every backend kind, over loopback."""

from typing import Any

import aiohttp
import pytest
from backends.kinds import ANTHROPIC_KEY, OPENAI_KEY, chain
from conftest import LONG, FakeFactory, SidecarFactory, named_events, post, tokens
from fakes.anthropic_upstream import FakeAnthropic
from fakes.anthropic_upstream import Script as AScript
from fakes.bedrock_upstream import FakeBedrock
from fakes.bedrock_upstream import Script as BScript
from fakes.openai_upstream import MAX_TOKENS_REFUSED
from fakes.openai_upstream import Script as OScript
from fakes.transport import rehomed

from sidecar.backends.openai import DEFAULT_BASE_URL

PATH = "/v1/messages"


def message(stream: bool = False, model: str = "claude-test", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body["stream"] = True
    return body | extra


def text_of(evs: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(d["delta"].get("text", "") for n, d in evs if n == "content_block_delta")


# --- anthropic kind: the caller's own dialect


async def test_anthropic_caller_bytes_and_version_headers_reach_anthropic_unchanged(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    raw = b'{"model":"claude-test",  "max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    headers = {
        "authorization": "Bearer caller-token",
        "anthropic-version": "2026-10-21",
        "anthropic-beta": "beta-1,beta-2",
        "content-type": "application/json",
    }
    async with http.post(sc.url + PATH, data=raw, headers=headers) as r:
        body = await r.json()
    assert r.status == 200
    assert body["content"] == [{"type": "text", "text": "Hello from the fake Anthropic."}]
    sent = claude.seen[0]
    assert sent.body == raw
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert sent.headers["anthropic-beta"] == "beta-1,beta-2"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in sent.headers
    assert tokens(sc, "claude") == (11, 5)


async def test_anthropic_version_defaults_to_the_backend_setting(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude), CLAUDE_MODEL="claude-pinned"))
    await post(http, sc.url, message(), PATH)
    sent = claude.seen[0]
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json["model"] == "claude-pinned"


async def test_anthropic_stream_is_relayed_event_by_event_with_event_lines(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    r = await post(http, sc.url, message(stream=True), PATH)
    evs = named_events(r.text)
    assert all(name for name, _ in evs)
    assert evs[0][0] == "message_start"
    assert evs[-1][0] == "message_stop"
    assert text_of(evs) == "Hello from the fake Anthropic."
    assert tokens(sc, "claude") == (11, 5)


async def test_anthropic_tool_use_stream_reaches_an_anthropic_caller_whole(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    claude.script(AScript(tool=("weather", {"city": "Rome"})))
    sc = await sidecar(chain(("claude", claude)))
    r = await post(http, sc.url, message(stream=True), PATH)
    evs = named_events(r.text)
    parts = [d["delta"]["partial_json"] for n, d in evs if n == "content_block_delta"]
    assert "".join(parts) == '{"city":"Rome"}'
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("script", "error_type"),
    [
        (AScript(text=LONG, end="error", after=3), "overloaded_error"),
        (AScript(text=LONG, end="cut", after=3), "api_error"),
    ],
    ids=["error_event", "cut"],
)
async def test_broken_stream_ends_with_one_anthropic_error_event_and_no_message_stop(
    claude: FakeAnthropic,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    script: AScript,
    error_type: str,
) -> None:
    claude.script(script)
    backup = await fake()
    sc = await sidecar(chain(("claude", claude), ("backup", backup)))
    r = await post(http, sc.url, message(stream=True), PATH)
    evs = named_events(r.text)
    assert "message_stop" not in [n for n, _ in evs]
    assert [n for n, _ in evs if n == "error"] == ["error"]
    name, data = evs[-1]
    assert name == "error"
    assert data["type"] == "error"
    assert data["error"]["type"] == error_type
    assert text_of(evs) == "w0 w1 w2"
    assert backup.seen == []


async def test_anthropic_errors_reach_an_anthropic_caller_as_they_are(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    claude.script(AScript(status=400, error_type="invalid_request_error"))
    sc = await sidecar(chain(("claude", claude)))
    r = await post(http, sc.url, message(), PATH)
    assert r.status == 400
    assert r.json["type"] == "error"
    assert r.json["error"] == {"type": "invalid_request_error", "message": "fake 400"}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_529_on_anthropic_falls_back_to_an_openai_backend_for_an_anthropic_caller(
    claude: FakeAnthropic,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    stream: bool,
) -> None:
    claude.script(AScript(status=529, error_type="overloaded_error"))
    backup = await fake()
    sc = await sidecar(chain(("claude", claude), ("backup", backup)))
    r = await post(http, sc.url, message(stream), PATH)
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == "claude=overloaded"
    if stream:
        assert text_of(named_events(r.text)) == "Hello from the fake."
    else:
        assert r.json["content"][0]["text"] == "Hello from the fake."


# --- openai kind: translated


async def test_anthropic_caller_is_served_by_an_openai_backend(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake()
    sc = await sidecar(chain(("gpt", gpt)))
    body = message(system="be brief", stop_sequences=["END"])
    r = await post(http, sc.url, body, PATH, headers={"anthropic-version": "2026-10-21"})
    assert r.status == 200
    assert r.json["type"] == "message"
    assert r.json["role"] == "assistant"
    assert r.json["model"] == "claude-test"
    assert r.json["content"] == [{"type": "text", "text": "Hello from the fake."}]
    assert r.json["stop_reason"] == "end_turn"
    assert r.json["usage"]["input_tokens"] == 7
    assert r.json["usage"]["output_tokens"] == 5
    sent = gpt.seen[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert sent.json["stop"] == ["END"]
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "anthropic-version" not in sent.headers
    assert tokens(sc, "gpt") == (7, 5)


async def test_anthropic_caller_streams_from_an_openai_backend(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake()
    sc = await sidecar(chain(("gpt", gpt)))
    r = await post(http, sc.url, message(stream=True), PATH)
    evs = named_events(r.text)
    assert [n for n, _ in evs] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert text_of(evs) == "Hello from the fake."
    assert evs[-2][1]["usage"]["output_tokens"] == 4
    assert gpt.seen[0].json["stream_options"] == {"include_usage": True}
    assert tokens(sc, "gpt") == (7, 4)


async def test_openai_stream_without_done_still_ends_with_one_message_stop(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake(OScript(end="no_done", usage=False))
    sc = await sidecar(chain(("gpt", gpt)))
    r = await post(http, sc.url, message(stream=True), PATH)
    names = [n for n, _ in named_events(r.text)]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("message_stop") == 1


@pytest.mark.parametrize("end", ["error", "cut", "malformed"])
async def test_broken_openai_stream_ends_with_an_anthropic_error_event(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, end: str
) -> None:
    gpt = await fake(OScript(text=LONG, end=end, after=3))
    sc = await sidecar(chain(("gpt", gpt)))
    r = await post(http, sc.url, message(stream=True), PATH)
    evs = named_events(r.text)
    assert evs[-1][0] == "error"
    assert evs[-1][1]["type"] == "error"
    assert "message_stop" not in [n for n, _ in evs]
    assert text_of(evs) == "w0 w1 w2"


async def test_openai_errors_reach_an_anthropic_caller_in_anthropic_shape(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("gpt", await fake(OScript(status=429)))))
    r = await post(http, sc.url, message(), PATH)
    assert r.status == 429
    assert r.headers["x-anyllm-fallback-exhausted"] == "true"
    assert r.json == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "fake 429"},
    }


async def test_openai_error_event_before_content_falls_back_for_an_anthropic_caller(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    overloaded = {"message": "busy", "type": "server_error", "code": "server_is_overloaded"}
    gpt = await fake(OScript(end="error_first", error=overloaded))
    backup = await fake()
    sc = await sidecar(chain(("gpt", gpt), ("backup", backup)))
    r = await post(http, sc.url, message(stream=True), PATH)
    assert r.headers["x-sidecar-failures"] == "gpt=overloaded"
    assert text_of(named_events(r.text)) == "Hello from the fake."


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "m"}]},
            "mcp_servers",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
    ],
    ids=["mcp_servers", "server_tool"],
)
async def test_untranslatable_anthropic_request_is_an_anthropic_400_with_nothing_sent(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    extra: dict[str, Any],
    param: str,
) -> None:
    gpt = await fake()
    sc = await sidecar(chain(("gpt", gpt)))
    r = await post(http, sc.url, message(**extra), PATH)
    assert r.status == 400
    assert r.json["type"] == "error"
    assert r.json["error"]["type"] == "invalid_request_error"
    assert gpt.seen == []
    assert r.headers["x-sidecar-failures"] == "gpt=unsupported"


async def test_untranslatable_request_is_still_served_by_an_anthropic_backend(
    claude: FakeAnthropic, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake()
    sc = await sidecar(chain(("gpt", gpt), ("claude", claude)))
    mcp = [{"type": "url", "url": "https://mcp.example", "name": "m"}]
    r = await post(http, sc.url, message(mcp_servers=mcp), PATH)
    assert r.status == 200
    assert r.headers["x-sidecar-backend"] == "claude"
    assert gpt.seen == []


async def test_azure_serves_an_anthropic_caller_at_its_deployment_url(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    az = await fake()
    env = {
        "SIDECAR_BACKENDS": "az",
        "AZ_KIND": "azure",
        "AZ_BASE_URL": az.url.removesuffix("/v1"),
        "AZ_API_KEY": "az-key-0123456789",
        "AZ_DEPLOYMENT": "gpt4o-eu",
        "AZ_API_VERSION": "2024-10-21",
    }
    sc = await sidecar(env)
    r = await post(http, sc.url, message(), PATH)
    assert r.status == 200
    assert r.json["content"][0]["text"] == "Hello from the fake."
    sent = az.seen[0]
    assert sent.path == "/openai/deployments/gpt4o-eu/chat/completions"
    assert sent.query == "api-version=2024-10-21"
    assert sent.headers["api-key"] == "az-key-0123456789"
    assert "authorization" not in sent.headers


# --- bedrock kind: pivoted through OpenAI


async def test_anthropic_caller_is_served_by_bedrock(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, message(system="be brief"), PATH)
    assert r.status == 200
    assert r.json["type"] == "message"
    assert r.json["content"] == [{"type": "text", "text": "Hello from the fake Bedrock."}]
    assert r.json["usage"]["input_tokens"] == 9
    sent = bedrock.seen[0].json
    assert sent["system"] == [{"text": "be brief"}]
    assert sent["inferenceConfig"] == {"maxTokens": 100}
    assert tokens(sc, "aws") == (9, 4)


async def test_anthropic_caller_streams_a_bedrock_tool_call(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(BScript(tool=("weather", {"city": "Oslo"})))
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, message(stream=True), PATH)
    evs = named_events(r.text)
    start = next(d for n, d in evs if n == "content_block_start")
    assert start["content_block"]["name"] == "weather"
    parts = [d["delta"]["partial_json"] for n, d in evs if n == "content_block_delta"]
    assert "".join(parts) == '{"city":"Oslo"}'
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert evs[-2][1]["usage"]["output_tokens"] == 4
    assert evs[-1][0] == "message_stop"
    assert tokens(sc, "aws") == (9, 4)


async def test_bedrock_throttling_reaches_an_anthropic_caller_as_rate_limit_error(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(BScript(error="ThrottlingException"))
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, message(), PATH)
    assert r.status == 429
    assert r.json["error"]["type"] == "rate_limit_error"
    assert r.headers["x-sidecar-failures"] == "aws=rate_limited"


async def test_bedrock_exception_after_commit_ends_an_anthropic_stream_with_an_error_event(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    bedrock.script(BScript(text=LONG, end="exception", after=3))
    sc = await sidecar(chain(("aws", bedrock)))
    r = await post(http, sc.url, message(stream=True), PATH)
    evs = named_events(r.text)
    assert evs[-1][0] == "error"
    assert evs[-1][1]["error"]["type"] == "rate_limit_error"
    assert "message_stop" not in [n for n, _ in evs]


async def test_broken_anthropic_stream_is_continued_on_an_openai_prefill_backend(
    claude: FakeAnthropic, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    claude.script(AScript(text=LONG, end="cut", after=3))
    gpt = await fake()
    sc = await sidecar(chain(("claude", claude), ("gpt", gpt), GPT_PREFILL="true"))
    r = await post(http, sc.url, message(stream=True), PATH)
    evs = named_events(r.text)
    names = [n for n, _ in evs]
    assert text_of(evs) == "w0 w1 w2Hello from the fake."
    assert names.count("message_start") == 1
    assert names.count("content_block_start") == 1
    assert names[-1] == "message_stop"
    assert {d["index"] for n, d in evs if n == "content_block_delta"} == {0}
    assert gpt.seen[0].json["messages"][-1] == {"role": "assistant", "content": "w0 w1 w2"}


async def test_broken_openai_stream_is_continued_on_an_anthropic_prefill_backend(
    claude: FakeAnthropic, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake(OScript(text=LONG, end="cut", after=3))
    sc = await sidecar(chain(("gpt", gpt), ("claude", claude), CLAUDE_PREFILL="true"))
    r = await post(http, sc.url, message(stream=True), PATH)
    evs = named_events(r.text)
    names = [n for n, _ in evs]
    assert text_of(evs) == "w0 w1 w2Hello from the fake Anthropic."
    assert names.count("message_start") == 1
    assert names.count("content_block_start") == 1
    assert names[-1] == "message_stop"


# --- the output limit on OpenAI-family backends (README "Choices where the contract is silent")


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_reaches_api_openai_com_as_max_completion_tokens(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    o = await fake(reasoning_model=True)  # refuses max_tokens, as o-series and gpt-5 models do
    env = {"SIDECAR_BACKENDS": "o", "O_API_KEY": OPENAI_KEY}  # BASE_URL: api.openai.com
    sc = await sidecar(env, upstream=rehomed(DEFAULT_BASE_URL, o.url))
    r = await post(http, sc.url, message(stream=stream), PATH)
    assert r.status == 200, r.text
    sent = o.seen[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["max_completion_tokens"] == 100
    assert "max_tokens" not in sent.json


async def test_the_reasoning_model_fake_refuses_max_tokens_as_api_openai_com_does(
    fake: FakeFactory, http: aiohttp.ClientSession
) -> None:
    o = await fake(reasoning_model=True)
    async with http.post(o.url + "/chat/completions", json={"max_tokens": 5}) as r:
        assert (r.status, await r.json()) == (400, MAX_TOKENS_REFUSED)


async def test_max_tokens_reaches_an_openai_compatible_server_as_max_tokens(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    local = await fake()
    sc = await sidecar(chain(("local", local)))
    r = await post(http, sc.url, message(), PATH)
    assert r.status == 200, r.text
    assert local.seen[0].json["max_tokens"] == 100
    assert "max_completion_tokens" not in local.seen[0].json


@pytest.mark.parametrize(
    ("api_version", "field"),
    [
        (None, "max_completion_tokens"),
        ("2024-10-21", "max_completion_tokens"),
        ("2024-09-01-preview", "max_completion_tokens"),
        ("2024-06-01", "max_tokens"),
    ],
)
async def test_max_tokens_reaches_azure_in_the_field_its_api_version_reads(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    api_version: str | None,
    field: str,
) -> None:
    az = await fake()
    env = {
        "SIDECAR_BACKENDS": "az",
        "AZ_KIND": "azure",
        "AZ_BASE_URL": az.url.removesuffix("/v1"),
        "AZ_API_KEY": "azure-key-0123456789",
        "AZ_DEPLOYMENT": "o4-mini",
    }
    if api_version is not None:
        env["AZ_API_VERSION"] = api_version
    sc = await sidecar(env)
    r = await post(http, sc.url, message(), PATH)
    assert r.status == 200, r.text
    sent = az.seen[0].json
    assert sent[field] == 100
    assert {"max_tokens", "max_completion_tokens"} & sent.keys() == {field}
