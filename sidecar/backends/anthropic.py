"""Kind `anthropic`: the Anthropic Messages API at `{BASE_URL}/v1/messages`, key in `x-api-key`.

Anthropic callers (`/v1/messages`) get their bytes through unchanged, signed `thinking` and
`redacted_thinking` history included, with their own `anthropic-version` / `anthropic-beta` (else
`ANTHROPIC_VERSION`). The body changes only when the model must, or when the history holds
unsigned thinking, which the sidecar relayed from another vendor and Anthropic would reject: it is
dropped. OpenAI callers
are translated both ways by `sidecar.dialects.anthropic_request`, `_response` and `_stream`,
under `ANTHROPIC_VERSION`.

Anthropic-to-Anthropic streams are relayed event by event by
`sidecar.dialects.anthropic_stream.AnthropicStream`.
"""

from collections.abc import Mapping
from typing import Any, Final

import orjson

from sidecar import headers as h
from sidecar.backends import responses
from sidecar.backends.base import (
    BackendAdapter,
    InvalidResponse,
    KindSpec,
    Untranslatable,
    json_object_body,
    require,
)
from sidecar.call import Answer, Call, Route, StreamAdapter, UpstreamRequest, Usage
from sidecar.dialects.anthropic_request import (
    UNSIGNED,
    openai_request_to_anthropic,
    without_unsigned_thinking,
)
from sidecar.dialects.anthropic_response import (
    anthropic_error_to_openai,
    anthropic_response_to_openai,
    anthropic_usage_to_openai,
)
from sidecar.dialects.anthropic_stream import AnthropicStream, AnthropicToOpenAIStream
from sidecar.dialects.error_types import anthropic_error_type
from sidecar.dialects.errors import TranslationError
from sidecar.dialects.openai import usage_of
from sidecar.dialects.pivot import (
    END,
    InBandError,
    Item,
    OpenAISink,
    PivotStream,
    SSESource,
    malformed,
)
from sidecar.dialects.sse import SSEEvent, json_object
from sidecar.failure import classify_error_event
from sidecar.settings import Backend

# Anthropic requires `max_tokens`; OpenAI callers often omit it. 4096 is what most SDKs and
# proxies default to: long enough for ordinary answers, and within every current model's limit.
DEFAULT_MAX_TOKENS: Final = 4096


class AnthropicBackend(BackendAdapter):
    routes = frozenset(
        {Route.CHAT_COMPLETIONS, Route.MESSAGES, Route.RESPONSES, Route.COUNT_TOKENS}
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._url = self.backend.base_url.rstrip("/") + "/v1/messages"

    def credentials(self) -> dict[str, str]:
        key = self.backend.api_key()
        assert key is not None  # settings require API_KEY or API_KEY_FILE for this kind
        return {"x-api-key": key}

    def build(self, call: Call) -> UpstreamRequest:
        if call.route is Route.RESPONSES:
            return responses.build(self, call)
        caller_speaks_anthropic = call.route in (Route.MESSAGES, Route.COUNT_TOKENS)
        own = "anthropic-" if caller_speaks_anthropic else ""
        headers = h.kept_by(call.headers, h.KEPT["anthropic"], own)
        headers.update(self.static_headers)
        headers.setdefault("anthropic-version", self.backend.settings.anthropic_version)
        headers["x-request-id"] = call.request_id
        body = self._messages_body(call) if caller_speaks_anthropic else self._chat_body(call)
        url = self._url + "/count_tokens" if call.route is Route.COUNT_TOKENS else self._url
        return UpstreamRequest("POST", url, headers, body)

    def _messages_body(self, call: Call) -> bytes:
        assert call.body is not None
        model = self.model_for(call.model)
        # A cheap byte search keeps the common body untouched: signed thinking goes as it came.
        signed = None if UNSIGNED.search(call.raw) is None else without_unsigned_thinking(call.body)
        if signed is None and (model is None or model == call.body.get("model")):
            return call.raw
        body = signed if signed is not None else call.body
        return orjson.dumps(body if model is None else {**body, "model": model})

    def _chat_body(self, call: Call) -> bytes:
        assert call.body is not None
        try:
            body = openai_request_to_anthropic(
                call.body,
                anthropic_version=self.backend.settings.anthropic_version,
                default_max_tokens=DEFAULT_MAX_TOKENS,
            )
        except TranslationError as e:
            raise Untranslatable(e.message, e.param) from None
        model = self.model_for(call.model)
        if model is not None:
            body["model"] = model
        return orjson.dumps(body)

    def caller_model(self, call: Call) -> str:
        # Translated answers name the model the caller asked for (the dialects' convention).
        return call.model or self.model_for(None) or ""

    def answer(self, call: Call, body: bytes) -> Answer:
        if call.route is Route.RESPONSES:
            return responses.answer(self, call, body, model=self.caller_model(call))
        if call.route is Route.COUNT_TOKENS:
            if not isinstance(json_object_body(body).get("input_tokens"), int):
                raise InvalidResponse("upstream answered 2xx without input_tokens")
            return Answer(body)
        return messages_answer(call, body, self.caller_model(call))

    def error_body(self, call: Call, status: int, body: bytes) -> bytes:
        if call.route is Route.RESPONSES:
            return responses.error_body(self, call, status, body)
        return messages_error_body(call, status, body)

    def stream(self, call: Call) -> StreamAdapter:
        if call.route is Route.RESPONSES:
            return responses.stream(self, call, model=self.caller_model(call))
        return messages_stream(call, self.caller_model(call))

    def response_headers(self, call: Call, headers: Mapping[str, str]) -> dict[str, str]:
        return h.relayed(headers, "anthropic")


# The Messages API's answers as each caller reads them: shared with Claude on Vertex AI.


def messages_answer(call: Call, body: bytes, model: str) -> Answer:
    parsed = json_object_body(body)
    if not isinstance(parsed.get("content"), list):
        raise InvalidResponse("upstream answered 2xx without content")
    usage = parsed.get("usage")
    openai_usage = anthropic_usage_to_openai(usage if isinstance(usage, dict) else {})
    tokens = usage_of({"usage": openai_usage}) or Usage()
    upstream_model, stop = parsed.get("model"), parsed.get("stop_reason")
    answer = Answer(body, tokens, model=upstream_model if isinstance(upstream_model, str) else None)
    answer.finish_reasons = (stop,) if isinstance(stop, str) else ()
    if call.route is not Route.MESSAGES:
        translated = anthropic_response_to_openai(parsed, model=model)
        answer.body = orjson.dumps(translated)
    return answer


def messages_error_body(call: Call, status: int, body: bytes) -> bytes:
    parsed = json_object(body.decode("utf-8", "replace"))
    if call.route in (Route.MESSAGES, Route.COUNT_TOKENS):
        if parsed is not None and parsed.get("type") == "error":
            return body
        message = body.decode("utf-8", "replace").strip() or f"upstream answered {status}"
        error = {"type": anthropic_error_type(status), "message": message}
        return orjson.dumps({"type": "error", "error": error})
    return orjson.dumps(anthropic_error_to_openai(parsed if parsed is not None else body))


def messages_stream(call: Call, model: str) -> StreamAdapter:
    if call.route is Route.MESSAGES:
        return AnthropicStream()
    source = AnthropicSource(model=model, include_usage=call.include_usage)
    return PivotStream(source, OpenAISink())


class AnthropicSource(SSESource):
    """Anthropic SSE read into OpenAI chunks, for OpenAI callers."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        super().__init__()
        self._tr = AnthropicToOpenAIStream(model=model, include_usage=include_usage)
        self._include_usage = include_usage

    def _items(self, events: list[SSEEvent]) -> list[Item]:
        items: list[Item] = []
        for ev in events:
            obj = json_object(ev.data)
            if obj is None:
                items.append(malformed())
                break
            name = ev.event or str(obj.get("type"))
            if name == "error":
                items.append(InBandError(classify_error_event(obj), anthropic_error_to_openai(obj)))
                break
            items.extend(self._tr.feed(name, obj))
            if name == "message_stop":
                items.append(END)
                break
        return items

    def finish(self) -> list[dict[str, Any]]:
        # The usage chunk that message_stop would have brought.
        return self._tr.feed("message_stop", {}) if self._include_usage else []

    @property
    def usage(self) -> Usage:
        return self._tr.usage


def _check(b: Backend, env: Mapping[str, str]) -> None:
    require(b, "API_KEY", "required for kind anthropic")


SPEC = KindSpec(AnthropicBackend, default_base_url="https://api.anthropic.com", check=_check)
