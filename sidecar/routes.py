"""Inbound handling: admission, auth, routing, body limits and validation → a `Call` → a chain.

Every error the sidecar writes itself is JSON in the caller's dialect (README "Routes and
headers"); nothing is forwarded until the request is known to be well-formed.
"""

import asyncio
import hmac
import logging
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from sidecar.call import Call, Dialect, Route
from sidecar.chain import AttemptRecord, FallbackChain, Outcome
from sidecar.dialects import responses_request
from sidecar.dialects.caller import error_body
from sidecar.headers import to_upstream
from sidecar.logs import AccessLog
from sidecar.metrics import Metrics
from sidecar.recovery import Recovery
from sidecar.replies import Reply
from sidecar.settings import Config
from sidecar.stream import StreamRelay
from sidecar.tracing import NO_TRACING, RequestSpan, Tracing

log = logging.getLogger("sidecar.routes")

# path → (route, method, caller dialect)
ROUTES: dict[str, tuple[Route, str, Dialect]] = {
    "/v1/chat/completions": (Route.CHAT_COMPLETIONS, "POST", Dialect.OPENAI),
    "/v1/messages": (Route.MESSAGES, "POST", Dialect.ANTHROPIC),
    "/v1/messages/count_tokens": (Route.COUNT_TOKENS, "POST", Dialect.ANTHROPIC),
    "/v1/responses": (Route.RESPONSES, "POST", Dialect.OPENAI),
    "/v1/embeddings": (Route.EMBEDDINGS, "POST", Dialect.OPENAI),
    "/v1/models": (Route.MODELS, "GET", Dialect.OPENAI),
}
_NEEDS_MESSAGES = frozenset({Route.CHAT_COMPLETIONS, Route.MESSAGES, Route.COUNT_TOKENS})

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_QUOTED_MAX = 64


def quoted(value: str) -> str:
    """A caller's value as an error message may quote it: escaped to printable ASCII (control
    characters and the lone surrogates of non-UTF-8 bytes included) and capped."""
    if len(value) <= _QUOTED_MAX:
        return ascii(value)
    return f"{value[:_QUOTED_MAX]!a}... ({len(value)} characters)"


class Rejected(Exception):
    def __init__(self, status: int, message: str, code: str, headers: Mapping[str, str] = {}):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers)


_SHUTTING_DOWN = Rejected(
    503, "the sidecar is shutting down; retry on another instance", "shutting_down"
)


@dataclass(slots=True)
class Inbound:
    route: Route
    dialect: Dialect
    chain: str = "none"
    model: str | None = None
    outcome: Outcome | None = None
    relay: StreamRelay | None = None
    recovery: Recovery | None = None
    # The drain ended it before it had an answer: it gets a 503, not a closed connection.
    shut_down: bool = False


class Proxy:
    def __init__(
        self,
        config: Config,
        chains: dict[str, FallbackChain],
        metrics: Metrics,
        access_log: AccessLog,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        s = config.settings
        self.access_log = access_log
        self.settings = s
        self.chains = chains
        self.metrics = metrics
        self.inflight = 0
        self.draining = False
        self.aborting = False
        self.streams: set[StreamRelay] = set()
        # Every request's task until it has its answer; a stream's relay ends it at shutdown.
        self._waiting: dict[asyncio.Task[Any], Inbound] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        # Read at scrape time: nothing to update on the request path.
        metrics.inflight.set_function(lambda: self.inflight)
        self.tracing = tracing
        # Looked up per request: SIDECAR_AUTH_TOKEN_FILE may be rotated, and the old token stops
        # working as soon as the new one is loaded.
        self._token = config.auth_token
        self._models = _model_list(config)
        self._model_by_id = {m["id"]: m for m in self._models}
        self._model_required = {
            name: not all(b.settings.model for b in backends)
            for name, backends in config.chains.items()
        }

    async def idle(self, within_s: float) -> bool:
        """Wait until no request is in flight; False if `within_s` passed first."""
        try:
            async with asyncio.timeout(max(within_s, 0)):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def abort(self) -> None:
        """The end of the grace: open streams get their terminal error event, requests still
        waiting for an answer a 503 in their caller's dialect."""
        self.aborting = True
        for relay in list(self.streams):
            relay.abort()
        for task, inbound in list(self._waiting.items()):
            if inbound.relay is None:
                inbound.shut_down = True
                task.cancel()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = _request_id(request)
        inbound = _route_of(request.path)
        trace = self.tracing.request(inbound.route.value, request.path, request.headers)
        status = 499
        self.inflight += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._waiting[task] = inbound
        try:
            resp = await self._serve(request, request_id, inbound, trace)
            status = resp.status
            return resp
        except Rejected as e:
            status = e.status
            return _rejection(e, inbound.dialect, request_id)
        except Exception:
            # A bug must still answer in the caller's dialect, never with aiohttp's plain text.
            log.exception("internal error")
            status = 500
            internal = Rejected(500, "internal error", "internal_error")
            return _rejection(internal, inbound.dialect, request_id)
        except asyncio.CancelledError:
            if inbound.shut_down and task is not None and not task.uncancel():
                status = 503
                resp = _rejection(_SHUTTING_DOWN, inbound.dialect, request_id)
                resp.force_close()
                return resp
            if not self.draining:  # at shutdown the server itself cancels what is left
                self.metrics.disconnects.labels(inbound.route.value).inc()
            if inbound.outcome is not None and inbound.outcome.stream is not None:
                status = 200  # the stream had started: that is what the caller got
            raise
        finally:
            if task is not None:
                self._waiting.pop(task, None)
            self.inflight -= 1
            if not self.inflight:
                self._idle.set()
            elapsed = time.perf_counter() - started
            exhausted = inbound.outcome is not None and inbound.outcome.exhausted
            trace.end(chain=inbound.chain, status=status, exhausted=exhausted)
            self._observe(inbound, status, elapsed)
            if self.access_log.enabled:
                self.access_log.write(
                    _fields(request, request_id, inbound, inbound.outcome, status, elapsed)
                )

    async def _serve(
        self, request: web.BaseRequest, request_id: str, inbound: Inbound, trace: RequestSpan
    ) -> web.StreamResponse:
        if self.inflight > self.settings.max_inflight:
            raise Rejected(503, "too many requests in flight", "overloaded", {"retry-after": "1"})
        self._authorize(request)
        route = inbound.route
        if route is Route.OTHER:
            raise Rejected(404, f"unknown route {quoted(request.path)}", "not_found")
        spec = ROUTES.get(request.path)
        if spec is not None and request.method != spec[1]:
            message = f"{quoted(request.method)} is not allowed on {request.path}"
            raise Rejected(405, message, "method", {"allow": spec[1]})
        if route is Route.MODELS:
            return _json(200, {"object": "list", "data": self._models}, request_id)
        model = self._local_model(request)
        if model is not None:
            # A model the list names is the sidecar's to describe: upstream it would be a 404.
            inbound.route = Route.MODELS
            return _json(200, model, request_id)
        raw = await self._body(request)
        call = self._call(request, request_id, inbound, raw)
        call.trace = trace
        chain = self.chains[call.chain]
        inbound.outcome = Outcome(chain.name)
        outcome = inbound.outcome = await chain.forward(call, inbound.outcome.attempts)
        headers = {"x-request-id": request_id, **outcome.headers()}
        if outcome.stream is not None:
            recovery = inbound.recovery = Recovery(chain, call)
            relay = inbound.relay = StreamRelay(outcome.stream, recovery)
            if self.aborting:  # committed after the drain ended open streams: end this one too
                relay.abort()
            self.streams.add(relay)
            try:
                resp = await relay.run(request, headers)
            finally:
                self.streams.discard(relay)
            if relay.client_gone:
                self.metrics.disconnects.labels(inbound.route.value).inc()
            return resp
        assert outcome.reply is not None
        return reply(outcome.reply, headers)

    def _local_model(self, request: web.BaseRequest) -> dict[str, str] | None:
        if request.method != "GET" or not request.path.startswith("/v1/models/"):
            return None
        return self._model_by_id.get(request.path[len("/v1/models/") :])

    def _authorize(self, request: web.BaseRequest) -> None:
        token = self._token()
        if token is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Rejected(401, "missing or invalid sidecar token", "invalid_api_key")

    async def _body(self, request: web.BaseRequest) -> bytes:
        limit = self.settings.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise Rejected(413, f"request body over {limit} bytes", "request_too_large")
        if request.content.is_eof():
            # The whole body is already buffered (the usual case for small requests).
            body = await request.content.read()
            if len(body) > limit:
                raise Rejected(413, f"request body over {limit} bytes", "request_too_large")
            return body
        buf = bytearray()
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                while chunk := await request.content.readany():
                    buf += chunk
                    if len(buf) > limit:
                        raise Rejected(413, f"request body over {limit} bytes", "request_too_large")
        except TimeoutError:
            raise Rejected(408, "request body not received in time", "timeout") from None
        return bytes(buf)

    def _call(
        self, request: web.BaseRequest, request_id: str, inbound: Inbound, raw: bytes
    ) -> Call:
        route = inbound.route
        body: dict[str, Any] | None = None
        if route is not Route.PASSTHROUGH:
            body = _json_object(raw)
            if route in _NEEDS_MESSAGES and not isinstance(body.get("messages"), list):
                raise Rejected(400, "'messages' must be a list", "invalid_request")
            if route is Route.RESPONSES and (why := responses_request.check(body)) is not None:
                raise Rejected(400, why, "invalid_request")
        model = body.get("model") if body is not None else _peek_model(raw)
        if model is not None and not isinstance(model, str):
            raise Rejected(400, "'model' must be a string", "invalid_request")
        chain = self._chain(request, model)
        inbound.chain, inbound.model = chain, model
        if body is not None and model is None and self._model_required[chain]:
            raise Rejected(400, "'model' is required", "invalid_request")
        stream = body is not None and body.get("stream") is True
        return Call(
            route=route,
            dialect=inbound.dialect,
            method=request.method,
            path=_raw_tail(request) if route is Route.PASSTHROUGH else "",
            query=request.rel_url.raw_query_string,
            raw=raw,
            body=body,
            stream=stream,
            model=model,
            headers=to_upstream(request.headers, passthrough=route is Route.PASSTHROUGH),
            request_id=request_id,
            chain=chain,
        )

    def _chain(self, request: web.BaseRequest, model: str | None) -> str:
        named = request.headers.get("x-sidecar-chain")
        if named is not None:
            if named not in self.chains:
                message = f"unknown chain {quoted(named)} in x-sidecar-chain"
                raise Rejected(400, message, "unknown_chain")
            return named
        if model is not None and model in self.chains:
            return model
        if "default" in self.chains:
            return "default"
        what = "no model" if model is None else f"no chain named {quoted(model)}"
        message = f"{what} and no default chain"
        raise Rejected(400, message, "unknown_chain")

    def _observe(self, inbound: Inbound, status: int, elapsed: float) -> None:
        route = inbound.route.value
        self.metrics.request(route, inbound.chain, status).inc()
        self.metrics.request_duration(route, inbound.chain).observe(elapsed)


def _route_of(path: str) -> Inbound:
    spec = ROUTES.get(path)
    if spec is not None:
        return Inbound(spec[0], spec[2])
    if path.startswith("/v1/") and len(path) > 4:
        return Inbound(Route.PASSTHROUGH, Dialect.OPENAI)
    return Inbound(Route.OTHER, Dialect.OPENAI)


def _raw_tail(request: web.BaseRequest) -> str:
    """The path after `/v1/` as the caller encoded it: pass-through sends these bytes on, and
    never lets a dot segment climb out of the backend's base URL."""
    tail = request.rel_url.raw_path[4:]
    if any(unquote(segment) in (".", "..") for segment in tail.split("/")):
        raise Rejected(400, "the path may not contain '.' or '..' segments", "invalid_path")
    return tail


def _request_id(request: web.BaseRequest) -> str:
    given = request.headers.get("x-request-id")
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    # An id, not a secret: a fast PRNG is enough, and it costs no syscall per request.
    return f"{random.getrandbits(128):032x}"


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Rejected(400, "request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise Rejected(400, "request body must be a JSON object", "invalid_request")
    return body


def _peek_model(raw: bytes) -> str | None:
    # Pass-through bodies are relayed as bytes, but a JSON `model` still selects the chain.
    if not raw.startswith(b"{"):
        return None
    try:
        model = orjson.loads(raw).get("model")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return model if isinstance(model, str) else None


def _model_list(config: Config) -> list[dict[str, str]]:
    ids = list(config.chains)
    for backend in config.backends.values():
        ids += [m for m in backend.model_map if m not in ids]
    return [{"id": i, "object": "model", "owned_by": "llm-sidecar"} for i in dict.fromkeys(ids)]


def reply(r: Reply, headers: Mapping[str, str]) -> web.Response:
    return web.Response(
        body=r.body,
        status=r.status,
        headers={**r.headers, **headers, "content-type": r.content_type},
    )


def _attempts(outcome: Outcome, recovery: Recovery | None) -> list[AttemptRecord]:
    # A stream recovery's attempt comes after the caller's headers were sent: the log has it.
    return outcome.attempts + recovery.attempts if recovery is not None else outcome.attempts


def _json(status: int, body: Any, request_id: str) -> web.Response:
    return reply(Reply(status, orjson.dumps(body)), {"x-request-id": request_id})


def _rejection(e: Rejected, dialect: Dialect, request_id: str) -> web.Response:
    body = error_body(dialect, e.status, e.message, code=e.code)
    resp = reply(Reply(e.status, body, e.headers), {"x-request-id": request_id})
    if e.status in (408, 413):
        # The rest of the body was never read: the connection cannot be reused.
        resp.force_close()
    return resp


def _attempt(a: AttemptRecord) -> dict[str, Any]:
    fields = {"backend": a.backend, "class": a.cls, "status": a.status, "ms": round(a.ms, 1)}
    if a.cancelled:
        fields["cancelled"] = True
    return fields


def _fields(
    request: web.BaseRequest,
    request_id: str,
    inbound: Inbound,
    outcome: Outcome | None,
    status: int,
    elapsed: float,
) -> dict[str, Any]:
    attempts = []
    served_by = None
    if outcome is not None:
        attempts = [_attempt(a) for a in _attempts(outcome, inbound.recovery)]
        if outcome.reply is not None or outcome.stream is not None:
            served_by = outcome.backend
    return {
        "request_id": request_id,
        "method": request.method,
        "route": inbound.route.value,
        "chain": inbound.chain,
        "model": inbound.model,
        "attempts": attempts,
        "served_by": served_by,
        "status": status,
        "duration_ms": round(elapsed * 1000, 1),
        "stream": inbound.relay.end if inbound.relay is not None else None,
    }
