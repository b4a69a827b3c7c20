"""Kind `anthropic` behind OpenAI callers, over loopback: translation, streams, errors, fallback."""

from typing import Any

import aiohttp
import pytest
from backends.kinds import ANTHROPIC_KEY, chain
from conftest import (
    LONG,
    FakeFactory,
    SidecarFactory,
    chat,
    post,
    sse_data,
    streamed_text,
    typed_tokens,
)
from fakes.anthropic_upstream import FakeAnthropic, Script, overloaded, rate_limited
from fakes.openai_upstream import Script as OScript

from sidecar.backends.anthropic import AnthropicSource
from sidecar.dialects.anthropic_stream import AnthropicStream
from sidecar.dialects.pivot import OpenAISink, PivotStream
from sidecar.failure import FailureClass


async def test_openai_caller_gets_an_anthropic_answer_as_a_chat_completion(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    r = await post(http, sc.url, chat(model="claude-x"), headers={"authorization": "Bearer app"})
    assert r.status == 200
    body = r.json
    assert body["object"] == "chat.completion"
    assert body["model"] == "claude-x"
    assert body["choices"][0]["message"]["content"] == "Hello from the fake Anthropic."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 11
    assert r.headers["x-sidecar-backend"] == "claude"
    sent = claude.seen[0]
    assert sent.path == "/v1/messages"
    assert sent.json["max_tokens"] == 4096
    assert sent.json["messages"] == [{"role": "user", "content": "hi"}]
    assert typed_tokens(sc, "claude", "prompt") == 11
    assert typed_tokens(sc, "claude", "completion") == 5


async def test_anthropic_upstream_gets_exactly_one_credential_and_the_configured_version(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    headers = {
        "authorization": "Bearer caller-token",
        "x-api-key": "caller-key",
        "anthropic-version": "2026-10-21",
        "anthropic-beta": "some-beta",
    }
    await post(http, sc.url, chat(), headers=headers)
    sent = claude.seen[0].headers
    assert sent["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in sent
    # An OpenAI caller's anthropic-* headers are not its own dialect's: the backend's version.
    assert sent["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in sent
    assert sent["x-request-id"]


async def test_sampling_parameters_are_dropped_under_version_2026_10_21(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude), CLAUDE_ANTHROPIC_VERSION="2026-10-21"))
    r = await post(http, sc.url, chat(temperature=0.2, top_p=0.9, max_tokens=50))
    assert r.status == 200
    sent = claude.seen[0]
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert "temperature" not in sent.json
    assert "top_p" not in sent.json
    assert sent.json["max_tokens"] == 50


async def test_openai_caller_streams_an_anthropic_answer(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    r = await post(http, sc.url, chat(stream=True, stream_options={"include_usage": True}))
    assert r.status == 200
    assert streamed_text(r.text) == "Hello from the fake Anthropic."
    events = sse_data(r.text)
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 11
    finishes = [c["choices"][0]["finish_reason"] for c in events[:-2]]
    assert finishes[-1] == "stop"
    assert typed_tokens(sc, "claude", "prompt") == 11
    assert typed_tokens(sc, "claude", "completion") == 5


async def test_anthropic_tool_call_streams_as_openai_tool_call_fragments(
    claude: FakeAnthropic, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    claude.script(Script(tool=("weather", {"city": "Rome", "days": 3})))
    sc = await sidecar(chain(("claude", claude)))
    r = await post(http, sc.url, chat(stream=True))
    calls = [
        tc
        for c in sse_data(r.text)
        if isinstance(c, dict)
        for ch in c["choices"]
        for tc in ch["delta"].get("tool_calls", [])
    ]
    assert calls[0]["id"] == "toolu_fake"
    assert calls[0]["function"]["name"] == "weather"
    arguments = "".join(tc["function"]["arguments"] for tc in calls)
    assert arguments == '{"city":"Rome","days":3}'
    assert {tc["index"] for tc in calls} == {0}
    assert sse_data(r.text)[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("script", "stream", "cls"),
    [
        (overloaded(), False, "overloaded"),
        (overloaded(), True, "overloaded"),
        (rate_limited(), False, "rate_limited"),
        (rate_limited(), True, "rate_limited"),
        (Script(end="error_first"), True, "overloaded"),
    ],
    ids=["529-json", "529-sse", "429-json", "429-sse", "error_event_before_content"],
)
async def test_anthropic_failures_fall_back_with_their_class(
    claude: FakeAnthropic,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    script: Script,
    cls: str,
    stream: bool,
) -> None:
    claude.script(script)
    backup = await fake()
    sc = await sidecar(chain(("claude", claude), ("backup", backup)))
    r = await post(http, sc.url, chat(stream))
    assert r.status == 200
    assert r.headers["x-sidecar-failures"] == f"claude={cls}"
    assert r.headers["x-sidecar-backend"] == "backup"
    labels = {"chain": "default", "backend": "claude", "class": cls}
    assert sc.metric("llm_sidecar_backend_failures_total", **labels) == 1


async def test_anthropic_client_error_reaches_an_openai_caller_in_openai_shape(
    claude: FakeAnthropic, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    claude.script(Script(status=400, error_type="invalid_request_error"))
    backup = await fake()
    sc = await sidecar(chain(("claude", claude), ("backup", backup)))
    r = await post(http, sc.url, chat())
    assert r.status == 400
    assert r.json["error"]["type"] == "invalid_request_error"
    assert r.json["error"]["message"] == "fake 400"
    assert r.headers["x-sidecar-failures"] == "claude=client_error"
    assert backup.seen == []


@pytest.mark.parametrize(
    ("script", "cls"),
    [
        (Script(text=LONG, end="error", after=3), "stream_interrupted"),
        (Script(text=LONG, end="cut", after=3), "stream_interrupted"),
    ],
    ids=["error_event", "cut"],
)
async def test_broken_anthropic_stream_after_commit_ends_with_an_openai_terminal_error(
    claude: FakeAnthropic,
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    script: Script,
    cls: str,
) -> None:
    claude.script(script)
    backup = await fake()
    sc = await sidecar(chain(("claude", claude), ("backup", backup)))
    r = await post(http, sc.url, chat(stream=True))
    events = sse_data(r.text)
    assert "[DONE]" not in events
    assert "error" in events[-1]
    assert [e for e in events if "error" in e] == [events[-1]]
    assert streamed_text(r.text) == "w0 w1 w2"
    assert backup.seen == []
    labels = {"chain": "default", "backend": "claude", "class": cls}
    assert sc.metric("llm_sidecar_backend_failures_total", **labels) == 1


@pytest.mark.parametrize(
    "extra",
    [{"n": 2}, {"response_format": {"type": "json_object"}}, {"logit_bias": {"1": 2}}],
    ids=["n", "json_object", "logit_bias"],
)
async def test_untranslatable_request_is_a_400_in_openai_shape_with_nothing_sent(
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    extra: dict[str, Any],
) -> None:
    sc = await sidecar(chain(("claude", claude)))
    r = await post(http, sc.url, chat(**extra))
    assert r.status == 400
    assert r.json["error"]["type"] == "invalid_request_error"
    assert r.json["error"]["param"] == next(iter(extra))
    assert claude.seen == []
    assert r.headers["x-sidecar-attempts"] == "0"
    assert r.headers["x-sidecar-failures"] == "claude=unsupported"


async def test_untranslatable_request_goes_to_a_backend_that_can_take_it(
    claude: FakeAnthropic, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    backup = await fake()
    sc = await sidecar(chain(("claude", claude), ("backup", backup)))
    r = await post(http, sc.url, chat(n=2))
    assert r.status == 200
    assert r.headers["x-sidecar-backend"] == "backup"
    assert r.headers["x-sidecar-failures"] == "claude=unsupported"
    assert backup.seen[0].json["n"] == 2


def test_malformed_anthropic_event_is_an_invalid_response() -> None:
    for adapter in (
        AnthropicStream(),
        PivotStream(AnthropicSource(model="m", include_usage=False), OpenAISink()),
    ):
        step = adapter.feed(b"event: content_block_delta\ndata: {not json\n\n")
        assert step.error is not None
        assert step.error[0] is FailureClass.INVALID_RESPONSE
        assert not step.content


def test_message_start_and_ping_are_not_content_but_a_text_delta_is() -> None:
    adapter = AnthropicStream()
    start = adapter.feed(
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
        b'{"input_tokens":3,"cache_read_input_tokens":2}}}\n\nevent: ping\ndata: {}\n\n'
    )
    assert not start.content
    assert start.out.count(b"event: ") == 2
    delta = adapter.feed(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    )
    assert delta.content
    assert adapter.text == ["hi"]
    assert adapter.usage.prompt == 5


async def test_broken_openai_stream_is_continued_on_an_anthropic_prefill_backend(
    claude: FakeAnthropic, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gpt = await fake(OScript(text=LONG, end="cut", after=3))
    sc = await sidecar(chain(("gpt", gpt), ("claude", claude), CLAUDE_PREFILL="true"))
    r = await post(http, sc.url, chat(stream=True))
    events = sse_data(r.text)
    assert streamed_text(r.text) == "w0 w1 w2Hello from the fake Anthropic."
    roles = [e for e in events if isinstance(e, dict) and e["choices"][0]["delta"].get("role")]
    assert len(roles) == 1
    assert events.count("[DONE]") == 1
    assert claude.seen[0].json["messages"][-1] == {"role": "assistant", "content": "w0 w1 w2"}
    labels = {"chain": "default", "backend": "claude", "outcome": "success"}
    assert sc.metric("llm_sidecar_stream_recoveries_total", **labels) == 1
