"""Traces of real requests through the sidecar, exported to a loopback OTLP/HTTP receiver that
decodes the protobuf: one SERVER span per request, one CLIENT span per upstream attempt, the
caller's W3C context continued and each attempt's own sent upstream."""

import aiohttp
from backends.kinds import chain
from conftest import (
    CALLER_SPAN,
    CALLER_TRACE,
    PROMPT,
    TRACEPARENT,
    FakeClock,
    FakeFactory,
    Running,
    SidecarFactory,
    chain_env,
    chat,
    post,
)
from fakes.anthropic_upstream import FakeAnthropic
from fakes.openai_upstream import Script
from fakes.otlp_receiver import OtlpReceiver, ReceivedSpan


async def _spans(sc: Running, receiver: OtlpReceiver, count: int) -> list[ReceivedSpan]:
    await sc.app.tracing.flush()
    return await receiver.wait_for(count)


def _clients(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start_ns)


async def test_a_fallback_is_one_server_span_with_one_client_span_per_attempt(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    receiver: OtlpReceiver,
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    env = chain_env(a, b, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    sc = await sidecar(env)
    body = chat(messages=[{"role": "user", "content": PROMPT}])
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
    r = await post(http, sc.url, body, headers=headers)
    assert r.status == 200
    spans = await _spans(sc, receiver, 3)
    assert len(spans) == 3
    (server,) = [s for s in spans if s.kind == "server"]
    first, second = _clients(spans)
    assert (server.trace_id, server.parent_id) == (CALLER_TRACE, CALLER_SPAN)
    assert server.attributes["llm_sidecar.route"] == "chat_completions"
    assert server.attributes["llm_sidecar.chain"] == "default"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["llm_sidecar.exhausted"] is False
    for client in (first, second):
        assert (client.trace_id, client.parent_id) == (CALLER_TRACE, server.span_id)
        assert client.name == "chat gpt-test"
        assert client.attributes["gen_ai.operation.name"] == "chat"
        assert client.attributes["gen_ai.provider.name"] == "openai"
        assert client.attributes["gen_ai.request.model"] == "gpt-test"
        assert client.attributes["server.address"] == "127.0.0.1"
    assert [c.attributes["llm_sidecar.backend"] for c in (first, second)] == ["b0", "b1"]
    assert [c.attributes["llm_sidecar.attempt"] for c in (first, second)] == [1, 2]
    failure = r.headers["x-sidecar-failures"].split("=")[1]
    assert first.attributes["error.type"] == failure and first.status_error
    assert "error.type" not in second.attributes
    assert second.attributes["gen_ai.response.model"] == "gpt-test"
    assert second.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert second.attributes["gen_ai.usage.input_tokens"] == 7
    assert second.attributes["gen_ai.usage.output_tokens"] == 5
    # Each attempt carried its own CLIENT span upstream, in the caller's trace.
    for fake_, client in ((a, first), (b, second)):
        sent = fake_.seen[0].headers
        assert sent["traceparent"] == f"00-{CALLER_TRACE}-{client.span_id}-01"
        assert sent["tracestate"] == "vendor=1"
    recorded = repr([(s.attributes, [e.attributes for e in s.events]) for s in spans])
    assert PROMPT not in recorded and "sk-canary" not in recorded


async def test_a_stream_marks_its_commit_and_its_span_ends_with_the_stream(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    receiver: OtlpReceiver,
) -> None:
    a = await fake(Script(text="one two three four", chunk_delay_s=0.05))
    sc = await sidecar(chain_env(a, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
    r = await post(http, sc.url, chat(stream=True))
    assert r.status == 200
    spans = await _spans(sc, receiver, 2)
    (server,) = [s for s in spans if s.kind == "server"]
    (client,) = _clients(spans)
    (commit,) = client.events
    assert commit.name == "llm_sidecar.commit"
    assert commit.attributes["llm_sidecar.time_to_first_token_s"] > 0
    # The later chunks arrive after the commit point: the span lasts until the stream's end.
    assert (client.end_ns - client.start_ns) / 1e9 > 0.15
    assert client.end_ns <= server.end_ns
    assert client.attributes["gen_ai.usage.output_tokens"] == 4
    assert client.attributes["gen_ai.response.finish_reasons"] == ["stop"]


async def test_a_skipped_backend_is_an_event_of_the_server_span(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    receiver: OtlpReceiver,
) -> None:
    empty = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    a, b = await fake(Script(headers=empty)), await fake()
    env = chain_env(a, b, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    sc = await sidecar(env, clock=FakeClock())
    await post(http, sc.url, chat())
    await post(http, sc.url, chat())
    spans = await _spans(sc, receiver, 4)
    servers = sorted((s for s in spans if s.kind == "server"), key=lambda s: s.start_ns)
    assert [e.name for e in servers[0].events] == []
    assert [(e.name, e.attributes) for e in servers[1].events] == [
        ("llm_sidecar.skip", {"llm_sidecar.backend": "b0", "error.type": "circuit_open"})
    ]
    assert len([s for s in spans if s.kind == "client"]) == 2


async def test_an_exhausted_chain_is_an_error_server_span(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    receiver: OtlpReceiver,
) -> None:
    a = await fake(Script(status=503))
    sc = await sidecar(chain_env(a, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
    r = await post(http, sc.url, chat())
    assert r.status >= 500
    spans = await _spans(sc, receiver, 2)
    (server,) = [s for s in spans if s.kind == "server"]
    assert server.status_error
    assert server.attributes["llm_sidecar.exhausted"] is True


async def test_off_the_callers_trace_context_goes_upstream_unchanged(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
    assert (await post(http, sc.url, chat(), headers=headers)).status == 200
    assert a.seen[0].headers["traceparent"] == TRACEPARENT
    assert a.seen[0].headers["tracestate"] == "vendor=1"
    assert (await post(http, sc.url, chat())).status == 200
    assert "traceparent" not in a.seen[1].headers


async def test_a_responses_stream_translated_for_anthropic_is_a_chat_span_with_its_finish(
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    receiver: OtlpReceiver,
) -> None:
    sc = await sidecar(chain(("claude", claude), OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
    body = {"model": "claude-test", "input": "hi", "store": False, "stream": True}
    r = await post(http, sc.url, body, path="/v1/responses")
    assert r.status == 200
    spans = await _spans(sc, receiver, 2)
    (server,) = [s for s in spans if s.kind == "server"]
    (client,) = _clients(spans)
    assert server.attributes["llm_sidecar.route"] == "responses"
    assert client.name == "chat claude-test"
    assert client.attributes["gen_ai.provider.name"] == "anthropic"
    assert client.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert [e.name for e in client.events] == ["llm_sidecar.commit"]
