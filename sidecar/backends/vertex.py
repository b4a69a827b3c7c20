"""Kind `vertex`: Gemini and Claude on Vertex AI, by the model's publisher.

    model                                        operation (under {BASE}/v1/projects/{PROJECT}/
                                                 locations/{REGION}/)
    -------------------------------------------  -------------------------------------------------
    publishers/google/models/{m}, or a bare      publishers/google/models/{m}:generateContent,
      model not starting with `claude`             :streamGenerateContent?alt=sse (the Gemini body)
    publishers/anthropic/models/{m}, or a bare   publishers/anthropic/models/{m}:rawPredict,
      `claude-…` model (`claude-sonnet-4-5@…`)     :streamRawPredict (the Anthropic Messages body,
                                                   `anthropic_version: vertex-2023-10-16`, no
                                                   `model`)

`BASE` is `https://{REGION}-aiplatform.googleapis.com` (`https://aiplatform.googleapis.com` for
`global`), or `BASE_URL`. The credential is a Google OAuth token that the transport
(`sidecar.upstream_google`) adds to every request. Gemini models read and answer like kind
`gemini`; Claude models like kind `anthropic`, Anthropic callers' bodies changing only by the
two fields above.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import orjson

from sidecar import headers as h
from sidecar.backends.anthropic import (
    DEFAULT_MAX_TOKENS,
    messages_answer,
    messages_error_body,
    messages_stream,
)
from sidecar.backends.base import KindSpec, Untranslatable, require
from sidecar.backends.gemini import GeminiBackend
from sidecar.call import Answer, Call, Route, StreamAdapter, UpstreamRequest
from sidecar.dialects.anthropic_request import openai_request_to_anthropic
from sidecar.dialects.errors import TranslationError
from sidecar.dialects.gemini import google_error
from sidecar.settings import Backend, ConfigError
from sidecar.upstream import Upstream

VERTEX_ANTHROPIC_VERSION: Final = "vertex-2023-10-16"
# Sampling parameters are a 400 only from 2026-10-21 on: OpenAI callers keep theirs.
_TRANSLATION_VERSION: Final = "2023-06-01"


def publisher_and_model(model: str) -> tuple[str, str]:
    for publisher in ("google", "anthropic"):
        prefix = f"publishers/{publisher}/models/"
        if model.startswith(prefix):
            return publisher, model[len(prefix) :]
    return ("anthropic" if model.startswith("claude") else "google"), model


class VertexBackend(GeminiBackend):
    def credentials(self) -> dict[str, str]:
        return {}  # the transport's token

    def _location(self) -> str:
        s = self.backend.settings
        return f"{self._base}/v1/projects/{s.project}/locations/{s.region}"

    def url(self, model: str, stream: bool) -> str:
        publisher, name = publisher_and_model(model)
        if publisher == "anthropic":
            op = "streamRawPredict" if stream else "rawPredict"
        else:
            op = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{self._location()}/publishers/{publisher}/models/{quote(name, safe='@.-_')}:{op}"

    def _claude(self, call: Call) -> bool:
        model = self.model_for(call.model)
        return model is not None and publisher_and_model(model)[0] == "anthropic"

    def build(self, call: Call) -> UpstreamRequest:
        if not self._claude(call) or call.route is Route.RESPONSES:
            return super().build(call)
        assert call.body is not None
        model = self.model_for(call.model)
        assert model is not None
        if call.route is Route.MESSAGES:
            body = {k: v for k, v in call.body.items() if k != "model"}
            headers = h.kept_by(call.headers, h.KEPT["anthropic"], "anthropic-beta")
        else:
            body = self._translated(call.body)
            headers = h.kept_by(call.headers, h.KEPT["anthropic"])
        body["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
        headers.update(self.static_headers)
        headers["content-type"] = "application/json"
        headers["x-request-id"] = call.request_id
        return UpstreamRequest("POST", self.url(model, call.stream), headers, orjson.dumps(body))

    def _translated(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            out = openai_request_to_anthropic(
                body, anthropic_version=_TRANSLATION_VERSION, default_max_tokens=DEFAULT_MAX_TOKENS
            )
        except TranslationError as e:
            raise Untranslatable(e.message, e.param) from None
        out.pop("model", None)
        return out

    def answer(self, call: Call, body: bytes) -> Answer:
        if not self._claude(call) or call.route is Route.RESPONSES:
            return super().answer(call, body)
        return messages_answer(call, body, self.caller_model(call))

    def error_body(self, call: Call, status: int, body: bytes) -> bytes:
        if not self._claude(call) or call.route is Route.RESPONSES:
            return super().error_body(call, status, body)
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        # Vertex itself (quota, auth, routing) answers in Google's shape, Claude in its own.
        if google_error(parsed):
            return super().error_body(call, status, body)
        return messages_error_body(call, status, body)

    def stream(self, call: Call) -> StreamAdapter:
        if not self._claude(call) or call.route is Route.RESPONSES:
            return super().stream(call)
        return messages_stream(call, self.caller_model(call))


def _base_url(b: Backend) -> str:
    region = b.settings.region or "global"  # unset, `_check` refuses it right after
    if region == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{region}-aiplatform.googleapis.com"


def _check(b: Backend, env: Mapping[str, str]) -> None:
    require(b, "PROJECT", "required for kind vertex")
    require(b, "REGION", "required for kind vertex (a location such as us-east5, or global)")
    file = b.settings.credentials_file
    if file is not None:
        _check_key_file(f"{b.prefix}CREDENTIALS_FILE", file)


def _check_key_file(var: str, file: Path) -> None:
    # Never echo the file: it holds a private key.
    try:
        info = json.loads(file.read_text())
    except OSError:
        raise ConfigError(var, "not a readable file") from None
    except ValueError:
        raise ConfigError(var, "not a JSON service-account key") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ConfigError(
            var,
            "not a service-account key (other credential types: GOOGLE_APPLICATION_CREDENTIALS)",
        )


def _upstream(b: Backend) -> Upstream:
    # google-auth loads only when a vertex backend exists.
    from sidecar.upstream_google import VertexUpstream

    return VertexUpstream(b)


SPEC = KindSpec(VertexBackend, default_base_url=_base_url, check=_check, upstream=_upstream)
