"""Tracing settings (`sidecar.tracing`): the OTEL_* variables read, tracing off unless an
exporter is configured, and the no-op spans that pass the caller's trace context on. The
OpenTelemetry spans themselves are tests/test_tracing_otel.py's."""

import subprocess
import sys

import pytest
from conftest import CALLER_SPAN, CALLER_TRACE, TRACEPARENT, attempt_info
from multidict import CIMultiDict

from sidecar.app import build_tracing
from sidecar.config import load_config
from sidecar.settings import ConfigError
from sidecar.tracing import (
    DEFAULT_ENDPOINT,
    NO_TRACING,
    TracingConfigError,
    TracingSettings,
    caller_trace_headers,
    tracing_settings,
)


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
    attempt = span.attempt(attempt_info("b0", 1))
    assert dict(attempt.headers()) == {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}


@pytest.mark.parametrize(
    "value",
    ["garbage", f"00-{'0' * 32}-{CALLER_SPAN}-01", f"00-{CALLER_TRACE}-{'0' * 16}-01", ""],
)
def test_an_invalid_caller_traceparent_is_dropped(value: str) -> None:
    assert caller_trace_headers({"traceparent": value, "tracestate": "x=1"}) == {}
    attempt = NO_TRACING.request("chat_completions", "/v1/chat/completions", {"traceparent": value})
    assert dict(attempt.attempt(attempt_info("b0", 1)).headers()) == {}


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
