"""Kind `openai`: any OpenAI-compatible server (OpenAI, vLLM, Ollama, LM Studio, Gemini).

The caller's bytes go upstream unchanged unless the body must change: a model override or map,
or `stream_options.include_usage` added to a stream so that tokens can be counted.

Anthropic callers (`/v1/messages`) are served by the chat completions operation, translated both
ways in `sidecar.backends.openai_messages`, imported on the first such request: the OpenAI path
neither parses nor loads anything for them.

Responses callers (`/v1/responses`) get the `responses` operation, bytes through, with
`RESPONSES=native` (the default); with `RESPONSES=chat` (servers that only have chat
completions) they are translated by `sidecar.backends.responses`. A stream-recovery continuation
is always translated: only the chat operation continues a trailing assistant message.

A translated request (Anthropic's, or Responses through chat) carries its output limit in the
field `chat_token_limit` names for the upstream; a caller's own chat body keeps what it sent.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from sidecar.backends import passthrough, responses
from sidecar.backends.base import (
    BackendAdapter,
    InvalidResponse,
    KindSpec,
    json_object_body,
)
from sidecar.call import Answer, Call, Route, StreamAdapter, UpstreamRequest
from sidecar.dialects.openai import OpenAIStream, responses_usage, usage_of
from sidecar.dialects.responses_stream import ResponsesStream
from sidecar.headers import relayed
from sidecar.settings import Backend, ConfigError

_OPERATIONS = {
    Route.CHAT_COMPLETIONS: "chat/completions",
    Route.EMBEDDINGS: "embeddings",
    Route.RESPONSES: "responses",
}
_USAGE_FIRST = b'{"stream_options":{"include_usage":true},'


class OpenAIBackend(BackendAdapter):
    routes = frozenset(
        {
            Route.CHAT_COMPLETIONS,
            Route.MESSAGES,
            Route.RESPONSES,
            Route.EMBEDDINGS,
            Route.PASSTHROUGH,
        }
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._base = self.backend.base_url.rstrip("/")
        self.token_limit = chat_token_limit(self.backend)

    # Streams ask for the usage chunk so that tokens are counted (dropped if the caller did not).
    asks_usage = True

    def credentials(self) -> dict[str, str]:
        key = self.backend.api_key()
        return {"authorization": f"Bearer {key}"} if key else {}

    def url(self, call: Call) -> str:
        if call.route is Route.PASSTHROUGH:
            return f"{self._base}/{call.path}" + (f"?{call.query}" if call.query else "")
        return f"{self._base}/{_OPERATIONS[call.route]}"

    def sent_model(self, call: Call) -> str | None:
        return self.model_for(call.model)

    def translates(self, call: Call) -> bool:
        """A Responses call served through chat completions."""
        return call.route is Route.RESPONSES and (
            self.backend.settings.responses == "chat" or call.resume_from is not None
        )

    def build(self, call: Call) -> UpstreamRequest:
        if self.translates(call):
            return self.build(responses.chat_call(call, token_limit=self.token_limit)[0])
        if call.route is Route.MESSAGES:
            from sidecar.backends import openai_messages

            # url() rules (Azure's included) are per route; Anthropic callers get chat completions.
            url = self.url(dataclasses.replace(call, route=Route.CHAT_COMPLETIONS))
            return openai_messages.build(
                call,
                url=url,
                headers=self.static_headers,
                model=self.sent_model(call),
                token_limit=self.token_limit,
            )
        if call.route is Route.PASSTHROUGH:
            return passthrough.build(call, self.url(call), self.static_headers)
        headers = dict(call.headers)
        headers.update(self.static_headers)
        headers["x-request-id"] = call.request_id
        return UpstreamRequest(call.method, self.url(call), headers, self._body(call))

    def _body(self, call: Call) -> bytes:
        body = call.body
        assert body is not None  # every route but pass-through is parsed JSON
        model = self.sent_model(call)
        # Responses streams carry their usage in the final event.
        add_usage = (
            call.stream
            and not call.include_usage
            and self.asks_usage
            and call.route is not Route.RESPONSES
        )
        if model == body.get("model"):
            if not add_usage:
                return call.raw
            if "stream_options" not in body:
                # The one change is a new key: put it first rather than re-encode the body.
                return _USAGE_FIRST + call.raw.lstrip()[1:]
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

    def caller_model(self, call: Call) -> str:
        return call.model or self.sent_model(call) or ""

    def answer(self, call: Call, body: bytes) -> Answer:
        if call.route is Route.PASSTHROUGH:
            return passthrough.answer(body)
        if self.translates(call):
            return responses.answer(self, call, body, model=self.caller_model(call))
        parsed = json_object_body(body)
        if call.route is Route.RESPONSES:
            return _native_response(parsed, body)
        if call.route is Route.CHAT_COMPLETIONS and not isinstance(parsed.get("choices"), list):
            raise InvalidResponse("upstream answered 2xx without choices")
        answer = Answer(body, model=_text(parsed.get("model")))
        if (usage := usage_of(parsed)) is not None:
            answer.usage = usage
        if isinstance(choices := parsed.get("choices"), list):
            answer.finish_reasons = _finish_reasons(choices)
        if call.route is Route.MESSAGES:
            from sidecar.backends import openai_messages

            answer.body = openai_messages.answer(parsed, model=self.caller_model(call))
        return answer

    def error_body(self, call: Call, status: int, body: bytes) -> bytes:
        if self.translates(call):
            return responses.error_body(self, call, status, body)
        if call.route is not Route.MESSAGES:
            return body
        from sidecar.backends import openai_messages

        return openai_messages.error_body(status, body)

    def stream(self, call: Call) -> StreamAdapter:
        if call.route is Route.MESSAGES:
            from sidecar.backends import openai_messages

            return openai_messages.stream(model=self.caller_model(call))
        if call.route is Route.PASSTHROUGH:
            return passthrough.PassthroughStream()
        if self.translates(call):
            return responses.stream(self, call, model=self.caller_model(call))
        if call.route is Route.RESPONSES:
            return ResponsesStream()
        return OpenAIStream(include_usage=call.include_usage)

    def reads_stream(self, call: Call, content_type: str) -> bool:
        if call.route is Route.PASSTHROUGH:
            return passthrough.reads_stream(content_type)
        return call.stream

    def response_headers(self, call: Call, headers: Mapping[str, str]) -> dict[str, str]:
        if call.route is Route.PASSTHROUGH:
            return passthrough.response_headers(headers)
        return relayed(headers, "openai")


def _native_response(parsed: dict[str, Any], body: bytes) -> Answer:
    if not isinstance(parsed.get("output"), list):
        raise InvalidResponse("upstream answered 2xx without output")
    found = parsed.get("usage")
    return Answer(body, responses_usage(found), model=_text(parsed.get("model")))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _finish_reasons(choices: list[Any]) -> tuple[str, ...]:
    if len(choices) == 1:  # the common case, without building a generator
        reason = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
        return (reason,) if isinstance(reason, str) else ()
    reasons = (c.get("finish_reason") for c in choices if isinstance(c, dict))
    return tuple(r for r in reasons if isinstance(r, str))


DEFAULT_BASE_URL = "https://api.openai.com/v1"

# The first Azure API version with `max_completion_tokens`; older ones answer 400
# "Unrecognized request argument supplied" to it (and serve no o-series model).
AZURE_COMPLETION_TOKENS_SINCE: Final = "2024-09-01"


def chat_token_limit(b: Backend) -> str:
    """The chat completions field a translated request's output limit goes in (README "Choices
    where the contract is silent"):

        upstream                                              field
        ----------------------------------------------------  ---------------------
        kind azure: the v1 API, or API_VERSION >= 2024-09-01  max_completion_tokens
        kind azure: an older API_VERSION                      max_tokens
        kind openai at api.openai.com (or a regional          max_completion_tokens
          `*.api.openai.com`), or at Azure OpenAI's v1 API
          (`https://*.openai.azure.com/openai/v1`, and the
          `services.ai` and `cognitiveservices` hosts)
        kind openai at any other BASE_URL                     max_tokens

    OpenAI's reasoning models (o-series, gpt-5) refuse `max_tokens`, and every current OpenAI
    and Azure OpenAI chat model takes `max_completion_tokens`. Every OpenAI-compatible server
    takes `max_tokens`, not every one the other: Ollama documents `max_tokens` only, llama.cpp's
    server ignored `max_completion_tokens` until February 2026, vLLM before 0.6.2 and servers
    that forbid extra fields refuse it. Ignored, it would leave the answer with no limit at all.
    """
    s = b.settings
    if s.kind == "azure":
        current = s.api_version is None or s.api_version >= AZURE_COMPLETION_TOKENS_SINCE
        return "max_completion_tokens" if current else "max_tokens"
    url = urlsplit(b.base_url)
    host = url.hostname or ""
    if host == "api.openai.com" or host.endswith(".api.openai.com"):
        return "max_completion_tokens"
    if host.endswith(_AZURE_HOSTS) and url.path.rstrip("/") == "/openai/v1":
        return "max_completion_tokens"
    return "max_tokens"


# Azure OpenAI's resource hosts; at /openai/v1 they serve OpenAI's own API.
_AZURE_HOSTS = (".openai.azure.com", ".services.ai.azure.com", ".cognitiveservices.azure.com")


def _check(b: Backend, env: Mapping[str, str]) -> None:
    if b.api_key() is None and b.base_url == DEFAULT_BASE_URL:
        raise ConfigError(
            f"{b.prefix}API_KEY", "required for api.openai.com (set BASE_URL for a keyless server)"
        )


SPEC = KindSpec(
    OpenAIBackend, default_base_url=DEFAULT_BASE_URL, check=_check, native_responses=True
)
