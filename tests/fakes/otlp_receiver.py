"""An OTLP/HTTP trace receiver on loopback: `POST /v1/traces`, protobuf decoded with the
official `opentelemetry-proto` messages, spans kept flat with their attributes as Python values.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

KINDS = {
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_INTERNAL: "internal",
}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


@dataclass
class Event:
    name: str
    attributes: dict[str, Any]


@dataclass
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[Event]
    status_error: bool
    start_ns: int
    end_ns: int
    resource: dict[str, Any] = field(default_factory=dict)


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.content_types: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(self.app, access_log=None)
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        self.content_types.append(request.content_type)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for rs in message.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                self.spans.extend(self._span(s, resource) for s in ss.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    @staticmethod
    def _span(s: Span, resource: dict[str, Any]) -> ReceivedSpan:
        return ReceivedSpan(
            name=s.name,
            kind=KINDS.get(s.kind, str(s.kind)),
            trace_id=s.trace_id.hex(),
            span_id=s.span_id.hex(),
            parent_id=s.parent_span_id.hex(),
            attributes=_attributes(s.attributes),
            events=[Event(e.name, _attributes(e.attributes)) for e in s.events],
            status_error=s.status.code == s.status.STATUS_CODE_ERROR,
            start_ns=s.start_time_unix_nano,
            end_ns=s.end_time_unix_nano,
            resource=resource,
        )

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ReceivedSpan]:
        async with asyncio.timeout(timeout_s):
            while len(self.spans) < count:
                await asyncio.sleep(0.02)
        return self.spans
