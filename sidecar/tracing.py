"""Request traces (OpenTelemetry, GenAI semantic conventions): off unless OTEL_* configure them.

`tracing_settings(env)` decides from the standard variables; `sidecar.app.build_tracing(settings)`
returns `NO_TRACING` when they are off, and only otherwise imports `sidecar.tracing_otel` (and with
it the `otel` extra), so the default footprint carries no OpenTelemetry code at all.

Switching on (first matching row wins)

    variables                                               tracing
    ------------------------------------------------------  ------------------------------------
    OTEL_SDK_DISABLED=true                                  off
    OTEL_TRACES_EXPORTER=none                               off
    OTEL_TRACES_EXPORTER=otlp                               on
    OTEL_TRACES_EXPORTER=anything else                      startup error: only otlp is built in
    unset, OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT set         on
    unset, no endpoint                                      off (the spec's default would be
                                                            otlp; a sidecar that exports to
                                                            localhost:4318 unasked is a surprise)

On, the exporter is OTLP over HTTP/protobuf to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is), else
OTEL_EXPORTER_OTLP_ENDPOINT + `/v1/traces`, else `http://localhost:4318/v1/traces`; a PROTOCOL
other than `http/protobuf` is a startup error (gRPC is not bundled). OTEL_EXPORTER_OTLP_HEADERS,
OTEL_SERVICE_NAME (default `llm-sidecar`), OTEL_RESOURCE_ATTRIBUTES and OTEL_TRACES_SAMPLER(_ARG)
(default `parentbased_always_on`) are honoured; the SDK reads its remaining knobs (certificates,
compression, batch sizes) itself.

The spans: one SERVER span per request, one CLIENT span per upstream attempt under it, skips
as events of the SERVER span, the stream's commit point as an event of its CLIENT span. Only
names, models, counts, classes and statuses are recorded; never a message, a prompt, a header
value or a key.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urlsplit

DEFAULT_SERVICE_NAME = "llm-sidecar"
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
TRACE_HEADERS = ("traceparent", "tracestate")
_SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
# W3C Trace Context: version 00, non-zero ids (the all-zero ones are invalid by definition).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")

# gen_ai.provider.name per kind (OpenTelemetry GenAI semantic conventions, well-known values).
PROVIDER_NAMES: Mapping[str, str] = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
}


class TracingConfigError(Exception):
    def __init__(self, env_var: str, reason: str) -> None:
        super().__init__(f"{env_var}: {reason}")
        self.env_var = env_var
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TracingSettings:
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict)
    service_name: str = DEFAULT_SERVICE_NAME
    resource: Mapping[str, str] = field(default_factory=dict)
    sampler: str = "parentbased_always_on"
    sampler_ratio: float = 1.0

    def secrets(self) -> list[str]:
        # Exporter headers usually carry the collector's API key.
        return [v for v in self.headers.values() if v]


def tracing_settings(env: Mapping[str, str]) -> TracingSettings | None:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    exporters.discard("")
    if exporters - {"otlp", "none"}:
        unknown = sorted(exporters - {"otlp", "none"})[0]
        raise TracingConfigError(
            "OTEL_TRACES_EXPORTER", f"{unknown!r} is not built in (use otlp or none)"
        )
    endpoint_set = any(
        env.get(v) for v in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if "otlp" not in exporters and (exporters or not endpoint_set):
        return None
    _check_protocol(env)
    sampler, ratio = _sampler(env)
    resource = _pairs("OTEL_RESOURCE_ATTRIBUTES", env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    service = env.get("OTEL_SERVICE_NAME") or resource.get("service.name") or DEFAULT_SERVICE_NAME
    headers_var = (
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        if "OTEL_EXPORTER_OTLP_TRACES_HEADERS" in env
        else "OTEL_EXPORTER_OTLP_HEADERS"
    )
    return TracingSettings(
        endpoint=_endpoint(env),
        headers=_pairs(headers_var, env.get(headers_var, ""), secret=True),
        service_name=service,
        resource=resource,
        sampler=sampler,
        sampler_ratio=ratio,
    )


def _check_protocol(env: Mapping[str, str]) -> None:
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(var, "").strip()
        if value:
            if value != "http/protobuf":
                raise TracingConfigError(var, f"{value!r} is not supported (use http/protobuf)")
            return


def _endpoint(env: Mapping[str, str]) -> str:
    if traces := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        var, url = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces
    elif base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        var, url = "OTEL_EXPORTER_OTLP_ENDPOINT", base.rstrip("/") + "/v1/traces"
    else:
        return DEFAULT_ENDPOINT
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise TracingConfigError(var, "must be an http:// or https:// URL with a host")
    return url


def _sampler(env: Mapping[str, str]) -> tuple[str, float]:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in _SAMPLERS:
        raise TracingConfigError("OTEL_TRACES_SAMPLER", f"unknown sampler {name!r}")
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if not name.endswith("traceidratio") or not arg:
        return name, 1.0
    try:
        ratio = float(arg)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise TracingConfigError("OTEL_TRACES_SAMPLER_ARG", "must be a ratio from 0 to 1")
    return name, ratio


def _pairs(var: str, value: str, *, secret: bool = False) -> dict[str, str]:
    """The W3C-baggage-like `k=v,k2=v2` list of the OTel spec, percent-decoded."""
    pairs: dict[str, str] = {}
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            # Exporter headers carry keys: describe the item, never print it.
            shown = "an item" if secret else repr(item)
            raise TracingConfigError(var, f"{shown} is not key=value")
        pairs[unquote(key.strip())] = unquote(val.strip())
    return pairs


# The span interface the chain and the relay use. Implementations: the no-op ones below, and
# `sidecar.tracing_otel` when tracing is on.


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    backend: str
    kind: str
    operation: str  # gen_ai.operation.name: "chat", "embeddings", …
    model: str | None  # the model sent upstream
    server_address: str | None
    server_port: int | None
    attempt: int  # 1-based, across the whole request


class AttemptSpan(Protocol):
    def headers(self) -> Mapping[str, str]:
        """traceparent / tracestate to send upstream with this attempt."""
        ...

    def committed(self) -> None:
        """A stream reached its first content event (time to first token)."""
        ...

    def answered(
        self,
        *,
        model: str | None,
        finish_reasons: Sequence[str],
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None: ...

    def failed(self, cls: str) -> None: ...

    def end(self) -> None: ...


class RequestSpan(Protocol):
    # False for the no-op span: the chain then builds no `AttemptInfo`.
    traced: bool

    def attempt(self, info: AttemptInfo) -> AttemptSpan: ...

    def skipped(self, backend: str, cls: str) -> None: ...

    def end(self, *, chain: str | None, status: int, exhausted: bool) -> None: ...


class Tracing(Protocol):
    def request(self, route: str, path: str, headers: Mapping[str, str]) -> RequestSpan: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


def caller_trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's own trace context, passed on unchanged when the sidecar does not trace."""
    parent = headers.get("traceparent")
    if parent is None or not _TRACEPARENT.fullmatch(parent.strip()):
        return {}
    found = {"traceparent": parent.strip()}
    if state := headers.get("tracestate"):
        found["tracestate"] = state
    return found


class _NoAttempt:
    __slots__ = ("_headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = headers

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def committed(self) -> None:
        pass

    def answered(
        self,
        *,
        model: str | None,
        finish_reasons: Sequence[str],
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        pass

    def failed(self, cls: str) -> None:
        pass

    def end(self) -> None:
        pass


_NO_ATTEMPT = _NoAttempt({})


class _NoRequest:
    __slots__ = ("_attempt",)
    traced = False

    def __init__(self, attempt: _NoAttempt) -> None:
        self._attempt = attempt

    def attempt(self, info: AttemptInfo) -> AttemptSpan:
        return self._attempt

    def skipped(self, backend: str, cls: str) -> None:
        pass

    def end(self, *, chain: str | None, status: int, exhausted: bool) -> None:
        pass


_NO_REQUEST = _NoRequest(_NO_ATTEMPT)
NO_REQUEST_SPAN: RequestSpan = _NO_REQUEST
NO_ATTEMPT_SPAN: AttemptSpan = _NO_ATTEMPT
# What the chain hands a no-op span: it reads nothing of it.
UNTRACED = AttemptInfo("", "", "", None, None, None, 0)

# gen_ai.operation.name per route; a route not listed is named by itself.
OPERATIONS: Mapping[str, str] = {
    "chat_completions": "chat",
    "messages": "chat",
    "responses": "chat",
    "embeddings": "embeddings",
}


class _NoTracing:
    def request(self, route: str, path: str, headers: Mapping[str, str]) -> RequestSpan:
        if "traceparent" not in headers:
            return _NO_REQUEST  # the common case costs one lookup and no allocation
        found = caller_trace_headers(headers)
        return _NoRequest(_NoAttempt(found)) if found else _NO_REQUEST

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


NO_TRACING: Tracing = _NoTracing()
