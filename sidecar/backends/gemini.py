"""Kind `gemini`: the Gemini API natively, `{BASE_URL}/v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`, key in `x-goog-api-key`.

OpenAI callers are translated by `sidecar.dialects.gemini`; Anthropic callers pivot through the
OpenAI dialect both ways, as for Bedrock.

Stream rules: each SSE event is a whole `GenerateContentResponse`. Content is a text part (not a
thought) or a function call; a candidate's `finishReason`, or a prompt blocked before any
candidate (`promptFeedback.blockReason`), finishes the stream and ends it: Gemini sends no
terminator of its own. An `{"error": …}` event is an in-band error, classified like the HTTP
error of the same Google status (`RESOURCE_EXHAUSTED` → `rate_limited`, `UNAVAILABLE` →
`overloaded`), its `RetryInfo` read as that error's would be (`retry_after_s`).
"""

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

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
from sidecar.dialects.anthropic_request import anthropic_request_to_openai
from sidecar.dialects.anthropic_response import (
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError
from sidecar.dialects.gemini import (
    GeminiStreamToOpenAI,
    gemini_error_to_openai,
    gemini_response_to_openai,
    gemini_retry_delay_s,
    gemini_usage_to_openai,
    google_retry_delay_s,
    openai_request_to_gemini,
)
from sidecar.dialects.openai import usage_of
from sidecar.dialects.pivot import (
    END,
    AnthropicSink,
    InBandError,
    Item,
    OpenAISink,
    PivotStream,
    Sink,
    SSESource,
    malformed,
)
from sidecar.dialects.sse import SSEEvent, json_object
from sidecar.failure import FailureClass, classify_error_event, classify_status
from sidecar.settings import Backend

JSON = dict[str, Any]

# The OpenAI error code a caller sees for the classes whose meaning OpenAI has a code for.
_OPENAI_CODES: Final[dict[FailureClass, str]] = {
    FailureClass.QUOTA_EXHAUSTED: "insufficient_quota",
    FailureClass.CONTEXT_LENGTH: "context_length_exceeded",
}


class GeminiBackend(BackendAdapter):
    routes = frozenset({Route.CHAT_COMPLETIONS, Route.MESSAGES, Route.RESPONSES})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._base = self.backend.base_url.rstrip("/")

    def credentials(self) -> dict[str, str]:
        key = self.backend.api_key()
        assert key is not None  # settings require API_KEY or API_KEY_FILE for this kind
        return {"x-goog-api-key": key}

    def build(self, call: Call) -> UpstreamRequest:
        if call.route is Route.RESPONSES:
            return responses.build(self, call)
        assert call.body is not None
        model = self.model_for(call.model)
        if model is None:
            raise Untranslatable("a Gemini model is required", "model")
        try:
            openai = anthropic_request_to_openai(call.body) if _anthropic(call) else call.body
            body = openai_request_to_gemini(openai, model=model)
        except TranslationError as e:
            raise Untranslatable(e.message, e.param) from None
        headers = h.kept_by(call.headers, h.KEPT["gemini"])
        headers.update(self.static_headers)
        headers["content-type"] = "application/json"
        headers["x-request-id"] = call.request_id
        return UpstreamRequest("POST", self.url(model, call.stream), headers, orjson.dumps(body))

    def url(self, model: str, stream: bool) -> str:
        name = quote(model.removeprefix("models/"), safe="@.-_")
        op = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self._base}/v1beta/models/{name}:{op}"

    def caller_model(self, call: Call) -> str:
        return call.model or self.model_for(None) or ""

    def answer(self, call: Call, body: bytes) -> Answer:
        if call.route is Route.RESPONSES:
            return responses.answer(self, call, body, model=self.caller_model(call))
        parsed = json_object_body(body)
        try:
            openai = gemini_response_to_openai(parsed, model=self.caller_model(call))
            if _anthropic(call):
                openai = openai_response_to_anthropic(openai, model=self.caller_model(call))
        except InvalidUpstreamResponse as e:
            raise InvalidResponse(e.message) from None
        version = parsed.get("modelVersion")
        answer = Answer(orjson.dumps(openai), _usage(parsed.get("usageMetadata")))
        answer.model = version if isinstance(version, str) else None
        candidates = parsed.get("candidates")
        first = candidates[0] if isinstance(candidates, list) and candidates else {}
        reason = first.get("finishReason") if isinstance(first, dict) else None
        answer.finish_reasons = (reason,) if isinstance(reason, str) else ()
        return answer

    def error_body(self, call: Call, status: int, body: bytes) -> bytes:
        if call.route is Route.RESPONSES:
            return responses.error_body(self, call, status, body)
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        cls = classify_status(status, body)
        envelope = gemini_error_to_openai(parsed, status, _OPENAI_CODES.get(cls) if cls else None)
        if _anthropic(call):
            return orjson.dumps(openai_error_to_anthropic(status, envelope))
        return orjson.dumps(envelope)

    def retry_after_s(
        self, status: int, headers: Mapping[str, str], body: bytes, *, now: float
    ) -> float | None:
        # Google puts the wait in the body's RetryInfo; a Retry-After header, if one ever came,
        # is the HTTP word for it and goes first.
        from_header = super().retry_after_s(status, headers, body, now=now)
        return from_header if from_header is not None else gemini_retry_delay_s(body)

    def stream(self, call: Call) -> StreamAdapter:
        if call.route is Route.RESPONSES:
            return responses.stream(self, call, model=self.caller_model(call))
        model = self.caller_model(call)
        sink: Sink = AnthropicSink(model=model) if _anthropic(call) else OpenAISink()
        # Anthropic callers read the final usage from message_delta: the sink needs the chunk.
        include_usage = call.include_usage or _anthropic(call)
        return PivotStream(GeminiSource(model=model, include_usage=include_usage), sink)


def _usage(metadata: Any) -> Usage:
    counted = gemini_usage_to_openai(metadata if isinstance(metadata, dict) else {})
    return usage_of({"usage": counted}) or Usage()


def _anthropic(call: Call) -> bool:
    return call.route is Route.MESSAGES


class GeminiSource(SSESource):
    """Gemini SSE read into OpenAI chunks."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        super().__init__()
        self._tr = GeminiStreamToOpenAI(model=model, include_usage=include_usage)

    def _items(self, events: list[SSEEvent]) -> list[Item]:
        items: list[Item] = []
        for ev in events:
            obj = json_object(ev.data)
            if obj is None:
                items.append(malformed())
                break
            if "error" in obj:
                envelope = gemini_error_to_openai(obj, _status_of(obj))
                # A 200 stream's first event can be the 429 itself, RetryInfo and all.
                delay = google_retry_delay_s(obj)
                items.append(InBandError(classify_error_event(obj), envelope, delay))
                break
            try:
                items.extend(self._tr.feed(obj))
            except InvalidUpstreamResponse as e:
                error = {"message": e.message, "type": "invalid_response", "param": None}
                envelope = {"error": {**error, "code": "invalid_response"}}
                items.append(InBandError(FailureClass.INVALID_RESPONSE, envelope))
                break
            if self._tr.finished:
                items.append(END)
                break
        return items

    @property
    def usage(self) -> Usage:
        return usage_of({"usage": self._tr.usage}) or Usage()


def _status_of(obj: JSON) -> int:
    code = (obj.get("error") or {}).get("code")
    return code if isinstance(code, int) and 400 <= code < 600 else 500


def _check(b: Backend, env: Mapping[str, str]) -> None:
    require(b, "API_KEY", "required for kind gemini")


SPEC = KindSpec(
    GeminiBackend, default_base_url="https://generativelanguage.googleapis.com", check=_check
)
