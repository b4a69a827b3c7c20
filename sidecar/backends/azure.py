"""Kind `azure`: Azure OpenAI, classic deployment URLs (`API_VERSION` set) or the v1 API.

Classic: `{BASE_URL}/openai/deployments/{DEPLOYMENT}/{operation}?api-version=…`; the deployment
replaces the model. v1: `{BASE_URL}/openai/v1/{operation}` with `DEPLOYMENT` (if set) as the model.
The key goes in `api-key`, which both URL styles accept.
"""

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from sidecar.backends.base import KindSpec, require_all
from sidecar.backends.openai import OpenAIBackend
from sidecar.call import Call, Route
from sidecar.settings import Backend

_OPERATIONS = {
    Route.CHAT_COMPLETIONS: "chat/completions",
    Route.EMBEDDINGS: "embeddings",
    Route.RESPONSES: "responses",
}


# The first Azure API version that accepts `stream_options`; older ones answer 400 to it.
_STREAM_OPTIONS_SINCE = "2024-09-01"


class AzureBackend(OpenAIBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        version = self.backend.settings.api_version
        self.asks_usage = version is None or version >= _STREAM_OPTIONS_SINCE

    def credentials(self) -> dict[str, str]:
        key = self.backend.api_key()
        return {"api-key": key} if key else {}

    def url(self, call: Call) -> str:
        s = self.backend.settings
        root = self.backend.base_url.rstrip("/")
        op = call.path if call.route is Route.PASSTHROUGH else _OPERATIONS[call.route]
        if s.api_version and call.route is Route.RESPONSES:
            # Classic Azure serves Responses at the resource, the deployment as the model.
            return f"{root}/openai/responses?api-version={quote(s.api_version)}"
        if s.api_version:
            assert s.deployment is not None  # settings require it with API_VERSION
            query = f"api-version={quote(s.api_version)}"
            if call.route is Route.PASSTHROUGH and call.query:
                query = f"{call.query}&{query}"
            return f"{root}/openai/deployments/{quote(s.deployment)}/{op}?{query}"
        url = f"{root}/openai/v1/{op}"
        return url + (f"?{call.query}" if call.route is Route.PASSTHROUGH and call.query else "")

    def sent_model(self, call: Call) -> str | None:
        s = self.backend.settings
        if s.deployment and (not s.api_version or call.route is Route.RESPONSES):
            return s.deployment
        return self.model_for(call.model)


def _check(b: Backend, env: Mapping[str, str]) -> None:
    needs = [("BASE_URL", "required for kind azure (https://NAME.openai.azure.com)")]
    if b.settings.api_version:
        needs.append(("DEPLOYMENT", "required for kind azure when API_VERSION is set"))
    require_all(b, [*needs, ("API_KEY", "required for kind azure")])


SPEC = KindSpec(AzureBackend, check=_check, native_responses=True)
