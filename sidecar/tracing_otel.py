"""The OpenTelemetry side of `sidecar.tracing`, imported only when tracing is on (the otel extra).

The provider is the app's own, never the global one: two sidecars in one process (the tests, the
demo) keep their spans apart, and nothing here reads the process-wide context. Parents are
passed explicitly: the caller's W3C context → the SERVER span → each CLIENT span → the upstream.
Export runs in the SDK's batch thread over its own blocking HTTP client, so flushing and shutdown
go through a worker thread: on the event loop they would block every request (and deadlock
against a receiver served by the same loop).
"""

import asyncio
import time
from collections.abc import Mapping, Sequence

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sidecar.tracing import PROVIDER_NAMES, AttemptInfo, AttemptSpan, RequestSpan, TracingSettings

_PROPAGATOR = TraceContextTextMapPropagator()
# The batch processor's own default (5 s) would delay every trace; one second is still a batch.
_SCHEDULE_DELAY_MS = 1000
_EXPORT_TIMEOUT_S = 10.0


def _sampler(name: str, ratio: float) -> Sampler:
    root: Sampler
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        root = ALWAYS_ON
    elif base == "always_off":
        root = ALWAYS_OFF
    else:
        root = TraceIdRatioBased(ratio)
    return ParentBased(root) if name.startswith("parentbased_") else root


class OtelAttempt:
    __slots__ = ("_ended", "_headers", "_span", "_started")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._started = time.monotonic()
        self._ended = False
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers, context=set_span_in_context(span))
        self._headers = headers

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def committed(self) -> None:
        ttft = round(time.monotonic() - self._started, 6)
        self._span.add_event("llm_sidecar.commit", {"llm_sidecar.time_to_first_token_s": ttft})

    def answered(
        self,
        *,
        model: str | None,
        finish_reasons: Sequence[str],
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        span = self._span
        if model:
            span.set_attribute("gen_ai.response.model", model)
        if finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
        if input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)

    def failed(self, cls: str) -> None:
        self._span.set_attribute("error.type", cls)
        self._span.set_status(Status(StatusCode.ERROR))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._span.end()


class OtelRequest:
    __slots__ = ("_context", "_ended", "_span", "_tracing")
    traced = True

    def __init__(self, tracing: "OtelTracing", span: Span) -> None:
        self._tracing = tracing
        self._span = span
        self._context = set_span_in_context(span)
        self._ended = False

    def attempt(self, info: AttemptInfo) -> AttemptSpan:
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": info.operation,
            "gen_ai.provider.name": PROVIDER_NAMES.get(info.kind, info.kind),
            "llm_sidecar.backend": info.backend,
            "llm_sidecar.attempt": info.attempt,
        }
        if info.model:
            attributes["gen_ai.request.model"] = info.model
        if info.server_address:
            attributes["server.address"] = info.server_address
        if info.server_port is not None:
            attributes["server.port"] = info.server_port
        name = f"{info.operation} {info.model}" if info.model else info.operation
        span = self._tracing.tracer.start_span(
            name, context=self._context, kind=SpanKind.CLIENT, attributes=attributes
        )
        return OtelAttempt(span)

    def skipped(self, backend: str, cls: str) -> None:
        self._span.add_event(
            "llm_sidecar.skip", {"llm_sidecar.backend": backend, "error.type": cls}
        )

    def end(self, *, chain: str | None, status: int, exhausted: bool) -> None:
        if self._ended:
            return
        self._ended = True
        span = self._span
        if chain is not None:
            span.set_attribute("llm_sidecar.chain", chain)
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("llm_sidecar.exhausted", exhausted)
        if status >= 500:
            # HTTP semantic conventions: a SERVER span is an error on 5xx only.
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class OtelTracing:
    def __init__(self, settings: TracingSettings, *, version: str) -> None:
        resource = Resource(
            {
                **settings.resource,
                "service.name": settings.service_name,
                "service.version": version,
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
            }
        )
        self.provider = TracerProvider(
            resource=resource,
            sampler=_sampler(settings.sampler, settings.sampler_ratio),
            shutdown_on_exit=False,
        )
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint,
            headers=dict(settings.headers),
            timeout=_EXPORT_TIMEOUT_S,
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=_SCHEDULE_DELAY_MS)
        )
        self.tracer = self.provider.get_tracer("llm-sidecar", version)

    def request(self, route: str, path: str, headers: Mapping[str, str]) -> RequestSpan:
        parent: Context = _PROPAGATOR.extract(headers)
        span = self.tracer.start_span(
            f"POST {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "POST",
                "http.route": path,
                "llm_sidecar.route": route,
            },
        )
        return OtelRequest(self, span)

    async def flush(self) -> None:
        await asyncio.to_thread(self.provider.force_flush)

    async def close(self) -> None:
        await asyncio.to_thread(self.provider.shutdown)
