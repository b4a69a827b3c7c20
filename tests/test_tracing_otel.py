"""The OpenTelemetry spans (`sidecar.tracing_otel`), exported to a loopback OTLP/HTTP receiver
that decodes the protobuf: the SERVER span, one CLIENT span per attempt in the caller's trace,
their attributes, and sampling. Traces of real requests through the sidecar are
tests/test_tracing_requests.py's."""

from collections.abc import AsyncIterator

import pytest_asyncio
from conftest import CALLER_SPAN, CALLER_TRACE, PROMPT, TRACEPARENT, attempt_info
from fakes.otlp_receiver import OtlpReceiver
from multidict import CIMultiDict

from sidecar.app import build_tracing
from sidecar.tracing import Tracing, tracing_settings


@pytest_asyncio.fixture
async def tracing(receiver: OtlpReceiver) -> AsyncIterator[Tracing]:
    settings = tracing_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-key=ck-1",
            "OTEL_SERVICE_NAME": "sidecar-under-test",
        }
    )
    t = build_tracing(settings, version="9.9.9")
    yield t
    await t.close()


async def _fallback_trace(tracing: Tracing) -> tuple[dict[str, str], dict[str, str]]:
    request = tracing.request(
        "chat_completions",
        "/v1/chat/completions",
        CIMultiDict({"traceparent": TRACEPARENT, "tracestate": "vendor=1", "x-body": PROMPT}),
    )
    request.skipped("broken", "circuit_open")
    first = request.attempt(attempt_info("azure1", 1))
    first.failed("rate_limited")
    first.end()
    second = request.attempt(attempt_info("b1", 2))
    second.committed()
    second.answered(
        model="gpt-4o-mini-2024-07-18",
        finish_reasons=["stop"],
        input_tokens=11,
        output_tokens=7,
    )
    second.end()
    second.end()  # the relay and a cleanup path may both end it: once counts
    request.end(chain="default", status=200, exhausted=False)
    await tracing.flush()
    return dict(first.headers()), dict(second.headers())


async def test_a_fallback_is_one_server_span_with_one_client_span_per_attempt(
    tracing: Tracing, receiver: OtlpReceiver
) -> None:
    first_headers, second_headers = await _fallback_trace(tracing)
    spans = await receiver.wait_for(3)
    assert len(spans) == 3
    (server,) = [s for s in spans if s.kind == "server"]
    clients = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start_ns)
    assert [c.attributes["llm_sidecar.attempt"] for c in clients] == [1, 2]
    assert server.trace_id == CALLER_TRACE
    assert server.parent_id == CALLER_SPAN
    assert all(c.trace_id == CALLER_TRACE and c.parent_id == server.span_id for c in clients)
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes == {
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "llm_sidecar.route": "chat_completions",
        "llm_sidecar.chain": "default",
        "http.response.status_code": 200,
        "llm_sidecar.exhausted": False,
    }
    assert [(e.name, e.attributes) for e in server.events] == [
        ("llm_sidecar.skip", {"llm_sidecar.backend": "broken", "error.type": "circuit_open"})
    ]
    assert server.resource["service.name"] == "sidecar-under-test"
    assert server.resource["service.version"] == "9.9.9"
    # Each attempt carries its own CLIENT span id upstream, in the caller's trace.
    for headers, client in zip((first_headers, second_headers), clients, strict=True):
        assert headers["traceparent"] == f"00-{CALLER_TRACE}-{client.span_id}-01"
        assert headers["tracestate"] == "vendor=1"
    assert receiver.content_types == ["application/x-protobuf"] * len(receiver.content_types)
    assert receiver.headers[0]["x-collector-key"] == "ck-1"


async def test_client_spans_carry_the_genai_attributes_and_the_failure_class(
    tracing: Tracing, receiver: OtlpReceiver
) -> None:
    await _fallback_trace(tracing)
    spans = await receiver.wait_for(3)
    failed, answered = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start_ns)
    assert failed.name == answered.name == "chat gpt-4o-mini"
    assert failed.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
        "server.port": 8443,
        "llm_sidecar.backend": "azure1",
        "llm_sidecar.attempt": 1,
        "error.type": "rate_limited",
    }
    assert failed.status_error
    assert not answered.status_error
    assert answered.attributes["gen_ai.provider.name"] == "openai"
    assert answered.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert answered.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert answered.attributes["gen_ai.usage.input_tokens"] == 11
    assert answered.attributes["gen_ai.usage.output_tokens"] == 7
    (commit,) = answered.events
    assert commit.name == "llm_sidecar.commit"
    assert commit.attributes["llm_sidecar.time_to_first_token_s"] >= 0


async def test_no_message_content_or_header_value_is_recorded(
    tracing: Tracing, receiver: OtlpReceiver
) -> None:
    await _fallback_trace(tracing)
    spans = await receiver.wait_for(3)
    recorded = repr([(s.attributes, [e.attributes for e in s.events]) for s in spans])
    assert PROMPT not in recorded
    assert "x-body" not in recorded


async def test_a_5xx_answer_marks_the_server_span_as_an_error(
    tracing: Tracing, receiver: OtlpReceiver
) -> None:
    request = tracing.request("messages", "/v1/messages", {})
    request.end(chain="default", status=503, exhausted=True)
    await tracing.flush()
    (server,) = await receiver.wait_for(1)
    assert server.status_error
    assert server.parent_id == ""
    assert server.attributes["error.type"] == "503"
    assert server.attributes["llm_sidecar.exhausted"] is True


async def test_an_attempt_without_a_model_is_named_by_its_operation(
    tracing: Tracing, receiver: OtlpReceiver
) -> None:
    request = tracing.request("embeddings", "/v1/embeddings", {})
    attempt = request.attempt(attempt_info("b0", 1, model=None))
    attempt.end()
    request.end(chain="default", status=200, exhausted=False)
    await tracing.flush()
    spans = await receiver.wait_for(2)
    (client,) = [s for s in spans if s.kind == "client"]
    assert client.name == "chat"
    assert "gen_ai.request.model" not in client.attributes


async def test_sampled_out_requests_export_nothing_but_still_propagate(
    receiver: OtlpReceiver,
) -> None:
    settings = tracing_settings(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_SAMPLER": "always_off"}
    )
    tracing = build_tracing(settings, version="x")
    try:
        request = tracing.request("chat_completions", "/v1/chat/completions", {})
        attempt = request.attempt(attempt_info("b0", 1))
        flags = int(attempt.headers()["traceparent"].rsplit("-", 1)[1], 16)
        assert flags & 1 == 0  # the sampled bit (bit 1 may say "random", W3C level 2)
        attempt.end()
        request.end(chain="default", status=200, exhausted=False)
        await tracing.flush()
    finally:
        await tracing.close()
    assert receiver.spans == []


async def test_a_parent_based_sampler_follows_the_callers_sampled_flag(
    receiver: OtlpReceiver,
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    tracing = build_tracing(
        tracing_settings({**env, "OTEL_TRACES_SAMPLER": "parentbased_always_off"}), version="x"
    )
    try:
        unsampled = f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
        for traceparent in (TRACEPARENT, unsampled, None):
            headers = {"traceparent": traceparent} if traceparent else {}
            request = tracing.request("chat_completions", "/v1/chat/completions", headers)
            request.end(chain="default", status=200, exhausted=False)
        await tracing.flush()
    finally:
        await tracing.close()
    # Only the caller's sampled trace is recorded: its flag wins over the root's always_off.
    assert [(s.trace_id, s.parent_id) for s in receiver.spans] == [(CALLER_TRACE, CALLER_SPAN)]


async def test_a_ratio_of_zero_samples_out_a_root_and_a_ratio_of_one_keeps_it(
    receiver: OtlpReceiver,
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_SAMPLER": "traceidratio"}
    for ratio, route in (("0", "dropped"), ("1", "kept")):
        settings = tracing_settings({**env, "OTEL_TRACES_SAMPLER_ARG": ratio})
        tracing = build_tracing(settings, version="x")
        try:
            tracing.request(route, "/v1/chat/completions", {}).end(
                chain="default", status=200, exhausted=False
            )
            await tracing.flush()
        finally:
            await tracing.close()
    assert [s.attributes["llm_sidecar.route"] for s in receiver.spans] == ["kept"]
