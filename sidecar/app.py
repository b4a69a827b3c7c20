"""The one place objects are wired: `create_app(config, *, registry=, log_stream=, clock=,
jitter=, upstream=)` → `Sidecar`. `clock` and `jitter` drive the circuits; `upstream` builds each
backend's transport (by default its kind's: `sidecar.backends`), so tests can run the chain on a
fake one.

Two listeners: the proxy (`SIDECAR_HOST:PORT`) and the admin port (`/metrics`, `/livez`,
`/readyz`, `/status`). Shutdown (README "Lifecycle"): `/readyz` turns 503 at once; the proxy keeps
accepting for `SHUTDOWN_DELAY_S`, then stops; in-flight requests get up to `SHUTDOWN_GRACE_S`;
streams still open then end with a terminal error event.
"""

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import BinaryIO, cast

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.aiohttp import make_aiohttp_handler

from sidecar import __version__
from sidecar.chain import FallbackChain, Member
from sidecar.circuit import Circuit, CircuitState, uniform_jitter
from sidecar.config import spec
from sidecar.credentials import POLL_INTERVAL_S, FileCredential, watch
from sidecar.dialects import openai
from sidecar.listener import Server
from sidecar.logs import AccessLog
from sidecar.metrics import Metrics
from sidecar.ratelimit import Block, Headroom
from sidecar.redact import Redactor
from sidecar.routes import Proxy, quoted
from sidecar.settings import Backend, Config
from sidecar.tracing import NO_TRACING, Tracing, TracingConfigError, TracingSettings
from sidecar.upstream import HttpUpstream, Upstream

_STREAM_ABORT_WAIT_S = 1.0
AdminHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

UpstreamFactory = Callable[[Backend], Upstream]


class Sidecar:
    def __init__(
        self,
        config: Config,
        registry: CollectorRegistry | None = None,
        log_stream: BinaryIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = uniform_jitter,
        upstream: UpstreamFactory | None = None,
        credential_poll_s: float = POLL_INTERVAL_S,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metrics.configure(
            {c: [(b.name, b.settings.kind) for b in bs] for c, bs in config.chains.items()}
        )
        self.redactor = Redactor(config.secrets())
        self.tracing = build_tracing(config.tracing, version=__version__)
        for credential in config.credential_files():
            credential.on_reload = self._reloaded(credential)
        self._clock, self._jitter = clock, jitter
        self._upstream = upstream
        self._credential_poll_s = credential_poll_s
        self.members = {name: self._member(b) for name, b in config.backends.items()}
        s = config.settings
        self.chains = {
            name: FallbackChain(
                name,
                [self.members[b.name] for b in backends],
                s,
                self.metrics,
                self.redactor,
            )
            for name, backends in config.chains.items()
        }
        stream = log_stream if log_stream is not None else sys.stderr.buffer
        self.access_log = AccessLog(stream, s.log_level, s.log_format, self.redactor)
        self.proxy = Proxy(config, self.chains, self.metrics, self.access_log, self.tracing)
        self.admin_routes = self._admin_routes()
        self._runners: list[web.BaseRunner] = []
        self._proxy_site: web.TCPSite | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._proxy_server: web.Server | None = None
        self.ports: tuple[int, int] = (0, 0)

    def _member(self, b: Backend) -> Member:
        s = self.config.settings
        gauge = self.metrics.circuit.labels(b.name)

        def on_change(state: CircuitState) -> None:
            gauge.set(int(state))

        circuit = Circuit(
            failures_to_open=s.circuit_failures,
            cooldown_s=s.circuit_cooldown_s,
            max_cooldown_s=s.circuit_max_cooldown_s,
            retry_after_max_s=s.retry_after_max_s,
            clock=self._clock,
            jitter=self._jitter,
            on_change=on_change,
        )
        headroom = Headroom(
            max_wait_s=s.retry_after_max_s,
            clock=self._clock,
            on_quota=self.metrics.quota_reported(b.name),
        )
        kind = spec(b)
        make = self._upstream or kind.upstream or HttpUpstream
        return Member(b, kind.adapter(b), make(b), circuit, headroom)

    def _reloaded(self, credential: FileCredential) -> Callable[[bool], None]:
        count = self.metrics.credential_reloaded(credential.owner)

        def reloaded(ok: bool) -> None:
            if ok:
                self.redactor.add(credential.value)
            count(ok)

        return reloaded

    def _make_proxy_server(self) -> web.Server:
        # aiohttp's low-level server: the proxy routes by itself (routes.ROUTES), so the
        # application router and middleware chain would only add work to every request.
        # aiohttp arms its keep-alive timer when a connection opens and closes the connection
        # if no complete request head arrived by then: one setting bounds idle keep-alive
        # connections and slow headers (slowloris) alike.
        return Server(
            self.proxy.handle,
            handler_cancellation=True,
            keepalive_timeout=self.config.settings.idle_timeout_s,
            access_log=None,
        )

    def _admin_routes(self) -> dict[str, AdminHandler]:
        exposition = make_aiohttp_handler(self.registry)

        async def metrics(request: web.BaseRequest) -> web.StreamResponse:
            # An open circuit turns half-open by the clock, not by an event: read it now.
            for name, m in self.members.items():
                self.metrics.circuit.labels(name).set(int(m.circuit.state))
            # It reads only the query and the headers, which every request has.
            return await exposition(cast(web.Request, request))

        return {
            "/metrics": metrics,
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/status": self._status,
        }

    async def _admin(self, request: web.BaseRequest) -> web.StreamResponse:
        """Four GET routes, and JSON for anything else, as on the proxy port."""
        handler = self.admin_routes.get(request.path)
        if handler is None:
            return _admin_error(404, f"no admin route {quoted(request.path)}", "not_found", {})
        if request.method not in ("GET", "HEAD"):
            message = f"{quoted(request.method)} is not allowed on {request.path}"
            return _admin_error(405, message, "method_not_allowed", {"allow": "GET, HEAD"})
        return await handler(request)

    async def _livez(self, request: web.BaseRequest) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.BaseRequest) -> web.Response:
        if self.proxy.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready"})

    async def _status(self, request: web.BaseRequest) -> web.Response:
        body = orjson.dumps(self.status())
        return web.Response(body=body, content_type="application/json")

    def status(self) -> dict[str, object]:
        chains_of: dict[str, list[str]] = {name: [] for name in self.members}
        backends: list[dict[str, object]] = []
        for chain, members in self.config.chains.items():
            for b in members:
                chains_of[b.name].append(chain)
        for name, m in self.members.items():
            # Reading the state moves an expired cooldown to half-open; on_change sets the gauge.
            state = m.circuit.state
            block = m.headroom.blocked()
            backends.append(
                {
                    "name": name,
                    "kind": m.config.settings.kind,
                    "chains": chains_of[name],
                    "circuit": state.label,
                    "cooldown_remaining_s": round(m.circuit.cooldown_remaining_s(), 3),
                    "consecutive_failures": m.circuit.consecutive_failures,
                    # Skipped as if its circuit were open, until the upstream's quota resets.
                    "ratelimit_block": None if block is None else self._block(block),
                }
            )
        return {
            "version": __version__,
            "draining": self.proxy.draining,
            "inflight": self.proxy.inflight,
            "chains": {c: [b.name for b in bs] for c, bs in self.config.chains.items()},
            "backends": backends,
        }

    def _block(self, block: Block) -> dict[str, object]:
        return {
            "resource": block.resource.value,
            "reason": block.reason,
            "remaining_s": round(max(0.0, block.until - self._clock()), 3),
        }

    async def start(self) -> tuple[int, int]:
        s = self.config.settings
        admin_server = Server(self._admin, access_log=None)
        admin = web.ServerRunner(admin_server, shutdown_timeout=0.25)
        self._proxy_server = self._make_proxy_server()
        # Everything has been drained by the time the runners are cleaned up.
        proxy = web.ServerRunner(self._proxy_server, shutdown_timeout=0.25)
        self._flusher = asyncio.create_task(self.access_log.flusher())
        files = self.config.credential_files()
        self._watcher = asyncio.create_task(watch(files, self._credential_poll_s))
        for runner in (admin, proxy):
            await runner.setup()
            self._runners.append(runner)
        self._proxy_site = web.TCPSite(proxy, s.host, s.port, backlog=1024)
        admin_site = web.TCPSite(admin, s.admin_host, s.admin_port)
        await self._proxy_site.start()
        await admin_site.start()
        self.ports = (int(proxy.addresses[0][1]), int(admin.addresses[0][1]))
        return self.ports

    async def drain(self) -> None:
        """SIGTERM: not ready at once, keep serving for the delay, then drain within the grace."""
        s = self.config.settings
        self.proxy.draining = True
        await asyncio.sleep(s.shutdown_delay_s)
        if self._proxy_site is not None:
            await self._proxy_site.stop()
        if self._proxy_server is not None:
            # Stop accepting means on kept-alive connections too: idle ones close now, busy
            # ones after their current request.
            self._proxy_server.pre_shutdown()
        grace = max(s.shutdown_grace_s - _STREAM_ABORT_WAIT_S, s.shutdown_grace_s / 2)
        if await self.proxy.idle(grace):
            return
        self.proxy.abort()
        await self.proxy.idle(s.shutdown_grace_s - grace)

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        for task in (self._flusher, self._watcher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._flusher = self._watcher = None
        await asyncio.gather(*(m.upstream.close() for m in self.members.values()))
        await self.tracing.close()


def _admin_error(status: int, message: str, code: str, headers: dict[str, str]) -> web.Response:
    body = openai.error_body(message, status=status, code=code)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def build_tracing(settings: TracingSettings | None, *, version: str) -> Tracing:
    """`NO_TRACING` unless OTEL_* configure an exporter; only then is OpenTelemetry imported."""
    if settings is None:
        return NO_TRACING
    try:
        from sidecar.tracing_otel import OtelTracing
    except ImportError as e:
        raise TracingConfigError(
            "OTEL_TRACES_EXPORTER",
            f"tracing needs the otel extra: pip install 'llm-sidecar[otel]' ({e.name} is missing)",
        ) from None
    return OtelTracing(settings, version=version)


def create_app(
    config: Config,
    *,
    registry: CollectorRegistry | None = None,
    log_stream: BinaryIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = uniform_jitter,
    upstream: UpstreamFactory | None = None,
    credential_poll_s: float = POLL_INTERVAL_S,
) -> Sidecar:
    """`clock` and `jitter` drive every circuit (and the rate-limit gates): tests play long
    outages on a fake clock; `upstream` replaces the HTTP transport (tests of the chain on a fake
    one); `credential_poll_s` is how often credential files are looked at."""
    return Sidecar(config, registry, log_stream, clock, jitter, upstream, credential_poll_s)
