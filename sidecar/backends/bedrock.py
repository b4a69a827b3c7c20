"""Kind `bedrock`: Converse / ConverseStream (or, with `API=invoke`, InvokeModel /
InvokeModelWithResponseStream for Claude) through aiobotocore (`sidecar.upstream_bedrock`).

With `API=invoke` the body is Anthropic's Messages body (`anthropic_version:
bedrock-2023-05-31`, no `model` or `stream`, betas as `anthropic_beta`): an Anthropic caller's own,
byte for byte but for those fields, so thinking, `cache_control` and citations reach Claude; an
OpenAI caller's translated as for kind `anthropic`. Answers and streams read as Anthropic's.

The request is the keyword arguments of `converse(**kw)`, carried in `UpstreamRequest.payload`;
OpenAI callers are translated by `sidecar.dialects.bedrock`, Anthropic callers pivot through the
OpenAI dialect both ways. The I/O seam hands back the answer as JSON, an error as
`{"__type": code, "message": …}` with its HTTP status, and a stream as decoded event dicts, an
in-stream exception being one more event, `{"throttlingException": {"message": …}}`.

Stream rules: content is a text or tool-input delta, or a `toolUse` block start; finished is
`messageStop`; done is the `metadata` event that follows it (ConverseStream has no terminator of
its own). An exception event before content is classified by its name, like the HTTP error of the
same name (`throttlingException` → `rate_limited`, `modelTimeoutException` → `timeout`, …).
"""

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import orjson

from sidecar.backends import responses
from sidecar.backends.anthropic import (
    DEFAULT_MAX_TOKENS,
    messages_answer,
    messages_stream,
)
from sidecar.backends.base import BackendAdapter, InvalidResponse, KindSpec, Untranslatable
from sidecar.call import Answer, Call, Route, StreamAdapter, UpstreamRequest, Usage
from sidecar.dialects.anthropic_request import (
    anthropic_request_to_openai,
    openai_request_to_anthropic,
)
from sidecar.dialects.anthropic_response import (
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)
from sidecar.dialects.bedrock import (
    INVOKE_ANTHROPIC_VERSION,
    Converse,
    ConverseStreamToOpenAI,
    CountTokens,
    Invoke,
    bedrock_error_to_openai,
    converse_response_to_openai,
    count_tokens_params,
    openai_request_to_converse,
)
from sidecar.dialects.errors import InvalidUpstreamResponse, TranslationError
from sidecar.dialects.openai import usage_of
from sidecar.dialects.pivot import (
    END,
    AnthropicSink,
    InBandError,
    Item,
    OpenAISink,
    PivotStream,
    Sink,
    Source,
    malformed,
)
from sidecar.failure import FailureClass, classify_error_event
from sidecar.settings import Backend, ConfigError
from sidecar.upstream import Upstream

JSON = dict[str, Any]

# HTTP status of each Bedrock exception (README "Errors and streams across dialects"), by
# lower-cased name, for the error type shown to the caller when the exception arrives inside a
# stream.
EXCEPTION_STATUS: Final[dict[str, int]] = {
    "validationexception": 400,
    "servicequotaexceededexception": 400,
    "accessdeniedexception": 403,
    "resourcenotfoundexception": 404,
    "modeltimeoutexception": 408,
    "modelerrorexception": 424,
    "modelstreamerrorexception": 424,
    "throttlingexception": 429,
    "modelnotreadyexception": 429,
    "internalserverexception": 500,
    "serviceunavailableexception": 503,
}


class BedrockBackend(BackendAdapter):
    routes = frozenset(
        {Route.CHAT_COMPLETIONS, Route.MESSAGES, Route.RESPONSES, Route.COUNT_TOKENS}
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.backend.settings
        region = s.region or "default-region"
        self._endpoint = (
            s.endpoint_url or f"https://bedrock-runtime.{region}.amazonaws.com"
        ).rstrip("/")

    @property
    def _invoke(self) -> bool:
        return self.backend.settings.api == "invoke"

    def build(self, call: Call) -> UpstreamRequest:
        if call.route is Route.RESPONSES:
            return responses.build(self, call)
        assert call.body is not None
        model = self.model_for(call.model)
        if model is None:
            raise Untranslatable("a Bedrock model id is required", "model")
        if self._invoke and call.route is not Route.COUNT_TOKENS:
            return self._invoke_request(call, model)
        try:
            body = anthropic_request_to_openai(call.body) if _anthropic(call) else call.body
            params = openai_request_to_converse(body, model_id=model, thinking=_own_thinking(call))
        except TranslationError as e:
            raise Untranslatable(e.message, e.param) from None
        # Informational (logs, errors): the seam calls the operation, not this URL.
        op = "converse-stream" if call.stream else "converse"
        payload: Converse | CountTokens = Converse(call.stream, params)
        if call.route is Route.COUNT_TOKENS:
            op, payload = "count-tokens", CountTokens(count_tokens_params(params))
        url = f"{self._endpoint}/model/{quote(model, safe='')}/{op}"
        headers = {"x-request-id": call.request_id}
        return UpstreamRequest("POST", url, headers, b"", payload=payload)

    def _invoke_request(self, call: Call, model: str) -> UpstreamRequest:
        assert call.body is not None
        if _anthropic(call):
            body = dict(call.body)
            betas = [b.strip() for b in call.headers.get("anthropic-beta", "").split(",")]
            if any(betas):
                body["anthropic_beta"] = [b for b in betas if b]
        else:
            try:
                body = openai_request_to_anthropic(
                    call.body, anthropic_version="2023-06-01", default_max_tokens=DEFAULT_MAX_TOKENS
                )
            except TranslationError as e:
                raise Untranslatable(e.message, e.param) from None
        body.pop("model", None)
        body.pop("stream", None)
        body["anthropic_version"] = INVOKE_ANTHROPIC_VERSION
        op = "invoke-with-response-stream" if call.stream else "invoke"
        url = f"{self._endpoint}/model/{quote(model, safe='')}/{op}"
        payload = Invoke(call.stream, model, orjson.dumps(body))
        return UpstreamRequest("POST", url, {"x-request-id": call.request_id}, b"", payload=payload)

    def caller_model(self, call: Call) -> str:
        return call.model or self.model_for(None) or ""

    def answer(self, call: Call, body: bytes) -> Answer:
        if call.route is Route.RESPONSES:
            return responses.answer(self, call, body, model=self.caller_model(call))
        if call.route is Route.COUNT_TOKENS:
            return _counted(body)
        if self._invoke:
            return messages_answer(call, body, self.caller_model(call))
        try:
            parsed = orjson.loads(body)
            openai = converse_response_to_openai(parsed, model=self.caller_model(call))
        except (orjson.JSONDecodeError, AttributeError):
            raise InvalidResponse("Bedrock answered with a body that cannot be read") from None
        except InvalidUpstreamResponse as e:
            raise InvalidResponse(e.message) from None
        usage = usage_of(openai) or Usage()
        stop = parsed.get("stopReason") if isinstance(parsed, dict) else None
        if _anthropic(call):
            openai = _to_anthropic(openai, self.caller_model(call))
        answer = Answer(orjson.dumps(openai), usage)
        answer.finish_reasons = (stop,) if isinstance(stop, str) else ()
        return answer

    def error_body(self, call: Call, status: int, body: bytes) -> bytes:
        if call.route is Route.RESPONSES:
            return responses.error_body(self, call, status, body)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = {}
        code = str(parsed.get("__type") or "") if isinstance(parsed, dict) else ""
        message = str(parsed.get("message") or "") if isinstance(parsed, dict) else ""
        envelope = bedrock_error_to_openai(code, message or f"Bedrock answered {status}", status)
        if _anthropic(call):
            return orjson.dumps(openai_error_to_anthropic(status, envelope))
        return orjson.dumps(envelope)

    def stream(self, call: Call) -> StreamAdapter:
        if call.route is Route.RESPONSES:
            return responses.stream(self, call, model=self.caller_model(call))
        model = self.caller_model(call)
        if self._invoke:
            return messages_stream(call, model)
        sink: Sink = AnthropicSink(model=model) if _anthropic(call) else OpenAISink()
        # Anthropic callers read the final usage from message_delta: the sink needs the chunk.
        include_usage = call.include_usage or _anthropic(call)
        return PivotStream(BedrockSource(model=model, include_usage=include_usage), sink)


def _anthropic(call: Call) -> bool:
    return call.route in (Route.MESSAGES, Route.COUNT_TOKENS)


def _counted(body: bytes) -> Answer:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    tokens = parsed.get("inputTokens") if isinstance(parsed, dict) else None
    if not isinstance(tokens, int):
        raise InvalidResponse("Bedrock answered CountTokens without inputTokens")
    return Answer(orjson.dumps({"input_tokens": tokens}))


def _own_thinking(call: Call) -> JSON | None:
    # An Anthropic caller's `thinking` reaches a Claude on Bedrock as it is, budget and all.
    thinking = call.body.get("thinking") if _anthropic(call) and call.body else None
    return thinking if isinstance(thinking, dict) else None


def _to_anthropic(openai: JSON, model: str) -> JSON:
    try:
        return openai_response_to_anthropic(openai, model=model)
    except InvalidUpstreamResponse as e:
        raise InvalidResponse(e.message) from None


class BedrockSource(Source):
    """ConverseStream event dicts read into OpenAI chunks."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self._tr = ConverseStreamToOpenAI(model=model, include_usage=include_usage)
        self._stopped = False

    def feed(self, data: Any) -> list[Item]:
        if not isinstance(data, dict) or not data:
            return [malformed()]
        name = next(iter(data))
        if name.endswith("Exception"):
            return [_exception(name, data[name])]
        try:
            items: list[Item] = list(self._tr.feed(data))
        except InvalidUpstreamResponse as e:
            error = {"message": e.message, "type": "invalid_response", "code": "invalid_response"}
            return [InBandError(FailureClass.INVALID_RESPONSE, {"error": error})]
        if name == "messageStop":
            self._stopped = True
        elif name == "metadata" and self._stopped:
            items.append(END)
        return items

    @property
    def usage(self) -> Usage:
        return self._tr.usage


def _exception(name: str, body: Any) -> InBandError:
    message = body.get("message") if isinstance(body, dict) else None
    status = EXCEPTION_STATUS.get(name.lower(), 500)
    # An error event is overloaded, rate_limited (or quota), else server_error (README "Errors
    # and streams across dialects").
    cls = classify_error_event({"__type": name})
    envelope = bedrock_error_to_openai(name, str(message or name), status)
    return InBandError(cls, envelope)


def _check(b: Backend, env: Mapping[str, str]) -> None:
    s = b.settings
    region = s.region or s.endpoint_url or s.aws_profile
    if not region and not any(
        v in env for v in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")
    ):
        raise ConfigError(f"{b.prefix}REGION", "required for kind bedrock (or AWS_REGION)")


def _upstream(b: Backend) -> Upstream:
    # aiobotocore loads only when a bedrock backend exists.
    from sidecar.upstream_bedrock import BedrockUpstream

    return BedrockUpstream(b)


SPEC = KindSpec(BedrockBackend, check=_check, upstream=_upstream)
