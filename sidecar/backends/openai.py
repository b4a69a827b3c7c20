"""Kind `openai`: any OpenAI-compatible server (OpenAI, vLLM, Ollama, LM Studio, Gemini).

The caller's bytes go upstream unchanged unless the body must change: a model override or map,
or `stream_options.include_usage` added to a stream so that tokens can be counted.

Anthropic callers (`/v1/messages`) are served by the chat completions operation, translated both
ways by `sidecar.dialects.anthropic`; that path is kept apart so the OpenAI one parses nothing more.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from sidecar.backends.base import (
    Answer,
    BackendAdapter,
    InvalidResponse,
    StreamAdapter,
    Untranslatable,
    UpstreamRequest,
    Usage,
    json_object_body,
)
from sidecar.backends.pivot import (
    END,
    AnthropicSink,
    InBandError,
    Item,
    PivotStream,
    SSESource,
    json_object,
    malformed,
)
from sidecar.call import Call, Route
from sidecar.dialects.anthropic import (
    anthropic_request_to_openai,
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError
from sidecar.dialects.openai import OpenAIStream, usage_of
from sidecar.dialects.sse import SSEEvent
from sidecar.failure import classify_error_event

_OPERATIONS = {Route.CHAT_COMPLETIONS: "chat/completions", Route.EMBEDDINGS: "embeddings"}
_RELAYED_HEADERS = ("x-ratelimit-",)


class OpenAIBackend(BackendAdapter):
    routes = frozenset(
        {Route.CHAT_COMPLETIONS, Route.MESSAGES, Route.EMBEDDINGS, Route.PASSTHROUGH}
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._base = self.backend.base_url.rstrip("/")
        self._static = {k.lower(): v for k, v in self.backend.headers.items()}
        self._static.update(self.credentials())

    def credentials(self) -> dict[str, str]:
        key = self.backend.settings.api_key
        return {"authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    def url(self, call: Call) -> str:
        if call.route is Route.PASSTHROUGH:
            return f"{self._base}/{call.path}" + (f"?{call.query}" if call.query else "")
        return f"{self._base}/{_OPERATIONS[call.route]}"

    def sent_model(self, call: Call) -> str | None:
        return self.model_for(call.model)

    def build(self, call: Call) -> UpstreamRequest:
        if call.route is Route.MESSAGES:
            return self._build_messages(call)
        headers = dict(call.headers)
        headers.update(self._static)
        headers["x-request-id"] = call.request_id
        return UpstreamRequest(call.method, self.url(call), headers, self._body(call))

    def _body(self, call: Call) -> bytes:
        body = call.body
        if body is None:
            return call.raw
        model = self.sent_model(call)
        add_usage = call.stream and not call.include_usage
        if model == body.get("model") and not add_usage:
            return call.raw
        changed = dict(body)
        if model is not None:
            changed["model"] = model
        if add_usage:
            opts = changed.get("stream_options")
            changed["stream_options"] = {
                **(opts if isinstance(opts, dict) else {}),
                "include_usage": True,
            }
        return orjson.dumps(changed)

    def _build_messages(self, call: Call) -> UpstreamRequest:
        assert call.body is not None
        try:
            body = anthropic_request_to_openai(call.body)
        except TranslationError as e:
            raise Untranslatable(e.message, e.param) from None
        model = self.sent_model(call)
        if model is not None:
            body["model"] = model
        headers = {k: v for k, v in call.headers.items() if not k.startswith("anthropic-")}
        headers.update(self._static)
        headers["x-request-id"] = call.request_id
        # url() rules (Azure's included) are per route; Anthropic callers get chat completions.
        url = self.url(dataclasses.replace(call, route=Route.CHAT_COMPLETIONS))
        return UpstreamRequest(call.method, url, headers, orjson.dumps(body))

    def caller_model(self, call: Call) -> str:
        return call.model or self.sent_model(call) or ""

    def answer(self, call: Call, body: bytes) -> Answer:
        if call.route is Route.PASSTHROUGH:
            return Answer(body)
        parsed = json_object_body(body)
        if call.route is Route.CHAT_COMPLETIONS and not isinstance(parsed.get("choices"), list):
            raise InvalidResponse("upstream answered 2xx without choices")
        answer = Answer(body)
        if (usage := usage_of(parsed)) is not None:
            answer.usage = usage
        if call.route is Route.MESSAGES:
            answer.body = self._anthropic_answer(call, parsed)
        return answer

    def _anthropic_answer(self, call: Call, parsed: dict[str, Any]) -> bytes:
        if not isinstance(parsed.get("choices"), list):
            raise InvalidResponse("upstream answered 2xx without choices")
        try:
            return orjson.dumps(openai_response_to_anthropic(parsed, model=self.caller_model(call)))
        except InvalidUpstreamResponse as e:
            raise InvalidResponse(e.message) from None

    def error_body(self, call: Call, status: int, body: bytes) -> bytes:
        if call.route is not Route.MESSAGES:
            return body
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = body
        return orjson.dumps(openai_error_to_anthropic(status, parsed))

    def stream(self, call: Call) -> StreamAdapter:
        if call.route is Route.MESSAGES:
            return PivotStream(OpenAISource(), AnthropicSink(model=self.caller_model(call)))
        return OpenAIStream(include_usage=call.include_usage)

    def response_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k.lower().startswith(_RELAYED_HEADERS)}


class OpenAISource(SSESource):
    """OpenAI SSE read as chunks, for Anthropic callers."""

    def __init__(self) -> None:
        super().__init__()
        self._usage = Usage()

    def _items(self, events: list[SSEEvent]) -> list[Item]:
        items: list[Item] = []
        for ev in events:
            if ev.data == "[DONE]":
                items.append(END)
                break
            obj = json_object(ev.data)
            if obj is None:
                items.append(malformed())
                break
            if "error" in obj:
                items.append(InBandError(classify_error_event(obj), obj))
                break
            if (usage := usage_of(obj)) is not None:
                self._usage = usage
            items.append(obj)
        return items

    @property
    def usage(self) -> Usage:
        return self._usage
