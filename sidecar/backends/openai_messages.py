"""Anthropic callers (`/v1/messages`) on OpenAI-family backends: the chat completions operation,
translated both ways. Imported on the first such request, so that a sidecar serving only OpenAI
callers never loads the Anthropic translations.
"""

from collections.abc import Mapping
from typing import Any

import orjson

from sidecar.backends.base import InvalidResponse, Untranslatable
from sidecar.call import Call, StreamAdapter, UpstreamRequest, Usage
from sidecar.dialects.anthropic_request import (
    anthropic_request_to_openai,
    without_cache_breakpoints,
)
from sidecar.dialects.anthropic_response import (
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError
from sidecar.dialects.openai import usage_of
from sidecar.dialects.pivot import (
    END,
    AnthropicSink,
    InBandError,
    Item,
    PivotStream,
    SSESource,
    malformed,
)
from sidecar.dialects.sse import SSEEvent, json_object
from sidecar.failure import classify_error_event


def build(
    call: Call,
    *,
    url: str,
    headers: Mapping[str, str],
    model: str | None,
    token_limit: str = "max_tokens",
) -> UpstreamRequest:
    """`url` is the backend's chat completions URL, `headers` its static ones, `token_limit`
    the field its upstream reads the output limit from (`openai.chat_token_limit`)."""
    assert call.body is not None
    try:
        openai = anthropic_request_to_openai(call.body, token_limit=token_limit)
        body = without_cache_breakpoints(openai)
    except TranslationError as e:
        raise Untranslatable(e.message, e.param) from None
    if model is not None:
        body["model"] = model
    sent = {k: v for k, v in call.headers.items() if not k.startswith("anthropic-")}
    sent.update(headers)
    sent["x-request-id"] = call.request_id
    return UpstreamRequest(call.method, url, sent, orjson.dumps(body))


def answer(parsed: dict[str, Any], *, model: str) -> bytes:
    if not isinstance(parsed.get("choices"), list):
        raise InvalidResponse("upstream answered 2xx without choices")
    try:
        return orjson.dumps(openai_response_to_anthropic(parsed, model=model))
    except InvalidUpstreamResponse as e:
        raise InvalidResponse(e.message) from None


def error_body(status: int, body: bytes) -> bytes:
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = body
    return orjson.dumps(openai_error_to_anthropic(status, parsed))


def stream(*, model: str) -> StreamAdapter:
    return PivotStream(OpenAISource(), AnthropicSink(model=model))


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
