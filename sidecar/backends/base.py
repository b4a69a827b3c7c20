"""What every backend kind provides to the chain: pure request building and answer reading.

A backend never does I/O. It turns a `Call` into an `UpstreamRequest`, a complete upstream body
into the caller's dialect, and an upstream byte stream into caller events plus the signals the
commit point needs (`StreamStep`).
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sidecar.call import Answer, Call, Route, StreamAdapter, UpstreamRequest
from sidecar.retry_after import parse_retry_after
from sidecar.settings import Backend, ConfigError
from sidecar.upstream import Upstream


class InvalidResponse(Exception):
    """A 2xx upstream body that cannot be read."""


def json_object_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidResponse("upstream answered 2xx with a body that is not JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidResponse("upstream answered 2xx with a body that is not a JSON object")
    return parsed


class Untranslatable(Exception):
    """The request cannot be expressed for this backend without losing meaning (400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BackendAdapter(ABC):
    routes: frozenset[Route] = frozenset()

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.kind = backend.settings.kind
        # `{PREFIX}HEADERS` and the key as read at start, on every request the kind builds.
        self.static_headers = {k.lower(): v for k, v in backend.headers.items()}
        self.static_headers.update(self.credentials())

    def credentials(self) -> dict[str, str]:
        """The header carrying the backend's key as of now (`Backend.api_key`): the chain sets it
        again on each attempt when the key comes from a file that may have been rotated."""
        return {}

    def sent_model(self, call: Call) -> str | None:
        """The model the upstream is asked for (traces)."""
        return self.model_for(call.model)

    def supports(self, route: Route) -> bool:
        return route in self.routes

    def model_for(self, requested: str | None) -> str | None:
        s = self.backend.settings
        if s.model:
            return s.model
        if requested is not None:
            return self.backend.model_map.get(requested, requested)
        return None

    @abstractmethod
    def build(self, call: Call) -> UpstreamRequest: ...

    @abstractmethod
    def answer(self, call: Call, body: bytes) -> Answer: ...

    @abstractmethod
    def error_body(self, call: Call, status: int, body: bytes) -> bytes:
        """An upstream error body, in the caller's dialect."""

    @abstractmethod
    def stream(self, call: Call) -> StreamAdapter: ...

    def reads_stream(self, call: Call, content_type: str) -> bool:
        """Whether the answer to `call` is read as a stream (by the answer's content type)."""
        return call.stream

    def response_headers(self, call: Call, headers: Mapping[str, str]) -> dict[str, str]:
        """The upstream's headers the caller gets (see `sidecar.headers`); with a
        `content-type` when the answer keeps the upstream's own."""
        return {}

    def retry_after_s(
        self, status: int, headers: Mapping[str, str], body: bytes, *, now: float
    ) -> float | None:
        """How long an error answer asked us to wait (`now`: epoch seconds, for HTTP dates);
        None when it did not say. The Retry-After headers, unless the kind says it elsewhere."""
        return parse_retry_after(headers, now=now)


def _no_check(backend: Backend, env: Mapping[str, str]) -> None:
    return None


@dataclass(frozen=True, slots=True)
class KindSpec:
    """All a kind is, as the rest of the sidecar sees it; each `backends/<kind>.py` exports one as
    `SPEC`, and `sidecar.backends.KINDS` lists them."""

    adapter: Callable[[Backend], BackendAdapter]
    # Where requests go when `{PREFIX}BASE_URL` is not set ("": the setting is required); a
    # function of the backend where it depends on other settings (Vertex AI's region).
    default_base_url: str | Callable[[Backend], str] = ""
    # The kind's own settings rules: raise `ConfigError` naming the env var.
    check: Callable[[Backend, Mapping[str, str]], None] = _no_check
    # The transport; None for the HTTP one (`sidecar.upstream.HttpUpstream`).
    upstream: Callable[[Backend], Upstream] | None = None
    # `{PREFIX}RESPONSES` means something: the kind can serve `/responses` natively.
    native_responses: bool = False


def require(b: Backend, setting: str, why: str) -> None:
    """`{PREFIX}{SETTING}` must be set, for the reason given (API_KEY: or API_KEY_FILE)."""
    require_all(b, [(setting, why)])


def require_all(b: Backend, needs: list[tuple[str, str]]) -> None:
    """Each `(SETTING, why)` must be set; one error names every one missing. A key file counts
    as API_KEY."""
    missing = [(f"{b.prefix}{n}", why) for n, why in needs if not _is_set(b, n)]
    if missing:
        raise ConfigError(*missing[0], *missing[1:])


def _is_set(b: Backend, setting: str) -> bool:
    if setting == "API_KEY" and b.key_file is not None:
        return True
    return bool(getattr(b.settings, setting.lower()))
