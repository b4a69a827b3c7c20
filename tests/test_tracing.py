import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from fakes.otlp_receiver import OtlpReceiver
from multidict import CIMultiDict

from sidecar.app import build_tracing
from sidecar.config import load_config
from sidecar.settings import ConfigError
from sidecar.tracing import (
    DEFAULT_ENDPOINT,
    NO_TRACING,
    AttemptInfo,
    Tracing,
    TracingConfigError,
    TracingSettings,
    caller_trace_headers,
    tracing_settings,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
PROMPT = "the secret plan is in the prompt"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
        {"OTEL_SERVICE_NAME": "app"},
    ],
)
def test_tracing_is_off_unless_an_exporter_is_configured(env: dict[str, str]) -> None:
    assert tracing_settings(env) is None


def test_otlp_exporter_alone_uses_the_spec_default_endpoint() -> None:
    s = tracing_settings({"OTEL_TRACES_EXPORTER": "otlp"})
    assert s == TracingSettings(endpoint=DEFAULT_ENDPOINT)


def test_an_endpoint_alone_switches_tracing_on_with_the_traces_path() -> None:
    s = tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert s is not None
    assert s.endpoint == "http://collector:4318/v1/traces"


def test_the_traces_endpoint_is_used_as_is_and_wins() -> None:
    s = tracing_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/otlp",
        }
    )
    assert s is not None
    assert s.endpoint == "https://traces.example/otlp"


def test_service_resource_headers_and_sampler_are_read() -> None:
    s = tracing_settings(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,deployment.environment=prod%20eu",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-key=abc%3D,tenant=t1",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    )
    assert s is not None
    assert s.service_name == "from-attrs"
    assert s.resource["deployment.environment"] == "prod eu"
    assert dict(s.headers) == {"x-key": "abc=", "tenant": "t1"}
    assert s.secrets() == ["abc=", "t1"]
    assert (s.sampler, s.sampler_ratio) == ("parentbased_traceidratio", 0.25)
    named = tracing_settings(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "svc", "OTEL_RESOURCE_ATTRIBUTES": ""}
    )
    assert named is not None
    assert named.service_name == "svc"


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"},
            "OTEL_TRACES_SAMPLER",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "2",
            },
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "novalue"},
            "OTEL_RESOURCE_ATTRIBUTES",
        ),
    ],
)
def test_bad_tracing_config_names_the_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(TracingConfigError) as e:
        tracing_settings(env)
    assert e.value.env_var == var


def test_a_malformed_exporter_header_is_described_never_printed() -> None:
    with pytest.raises(TracingConfigError) as e:
        tracing_settings({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "sk-123"})
    assert e.value.env_var == "OTEL_EXPORTER_OTLP_HEADERS"
    assert "sk-123" not in str(e.value)


def test_off_the_callers_trace_context_is_passed_on_unchanged() -> None:
    span = NO_TRACING.request(
        "chat_completions",
        "/v1/chat/completions",
        CIMultiDict({"Traceparent": TRACEPARENT, "tracestate": "vendor=1"}),
    )
    attempt = span.attempt(_info("b0", 1))
    assert dict(attempt.headers()) == {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}


@pytest.mark.parametrize(
    "value",
    ["garbage", f"00-{'0' * 32}-{CALLER_SPAN}-01", f"00-{CALLER_TRACE}-{'0' * 16}-01", ""],
)
def test_an_invalid_caller_traceparent_is_dropped(value: str) -> None:
    assert caller_trace_headers({"traceparent": value, "tracestate": "x=1"}) == {}
    attempt = NO_TRACING.request("chat_completions", "/v1/chat/completions", {"traceparent": value})
    assert dict(attempt.attempt(_info("b0", 1)).headers()) == {}


def test_off_no_opentelemetry_module_is_imported() -> None:
    # The whole start of a sidecar, as `serve` does it, with OTEL_* set but no exporter.
    code = (
        "import asyncio, sys, sidecar.app as a, sidecar.config as c, sidecar.tracing as t\n"
        "assert a.build_tracing(t.tracing_settings({}), version='x') is t.NO_TRACING\n"
        "env = {'SIDECAR_BACKENDS': 'p', 'P_BASE_URL': 'http://127.0.0.1:9/v1',\n"
        "       'SIDECAR_PORT': '0', 'SIDECAR_ADMIN_PORT': '0',\n"
        "       'OTEL_SERVICE_NAME': 'app', 'OTEL_RESOURCE_ATTRIBUTES': 'k=v'}\n"
        "async def main():\n"
        "    app = a.create_app(c.load_config(env))\n"
        "    await app.start()\n"
        "    await app.stop()\n"
        "    assert app.tracing is t.NO_TRACING\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_without_the_otel_extra_tracing_on_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sidecar.tracing_otel", None)
    with pytest.raises(TracingConfigError, match=r"llm-sidecar\[otel\]") as e:
        build_tracing(TracingSettings(endpoint=DEFAULT_ENDPOINT), version="x")
    assert e.value.env_var == "OTEL_TRACES_EXPORTER"


def _info(backend: str, attempt: int, model: str | None = "gpt-4o-mini") -> AttemptInfo:
    return AttemptInfo(
        backend=backend,
        kind="azure" if backend == "azure1" else "openai",
        operation="chat",
        model=model,
        server_address="127.0.0.1",
        server_port=8443,
        attempt=attempt,
    )


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = await OtlpReceiver().start()
    yield r
    await r.stop()


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
    first = request.attempt(_info("azure1", 1))
    first.failed("rate_limited")
    first.end()
    second = request.attempt(_info("b1", 2))
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
    attempt = request.attempt(_info("b0", 1, model=None))
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
        attempt = request.attempt(_info("b0", 1))
        flags = int(attempt.headers()["traceparent"].rsplit("-", 1)[1], 16)
        assert flags & 1 == 0  # the sampled bit (bit 1 may say "random", W3C level 2)
        attempt.end()
        request.end(chain="default", status=200, exhausted=False)
        await tracing.flush()
    finally:
        await tracing.close()
    assert receiver.spans == []


def test_tracing_on_without_the_otel_extra_fails_at_load_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http", None)
    env = {"SIDECAR_BACKENDS": "p", "P_API_KEY": "k", "OTEL_TRACES_EXPORTER": "otlp"}
    with pytest.raises(ConfigError, match=r"llm-sidecar\[otel\]") as e:
        load_config(env)
    assert e.value.env_var == "OTEL_TRACES_EXPORTER"


def test_bad_tracing_config_fails_at_load_naming_the_variable() -> None:
    env = {"SIDECAR_BACKENDS": "p", "P_API_KEY": "k", "OTEL_TRACES_EXPORTER": "jaeger"}
    with pytest.raises(ConfigError) as e:
        load_config(env)
    assert e.value.env_var == "OTEL_TRACES_EXPORTER"
