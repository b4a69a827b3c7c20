"""FallbackChain.forward(call) → Outcome: each backend in order until one answers (CONTRACT §5).

A backend's turn is at most `1 + RETRIES` attempts; only `RETRYABLE` classes are retried, after a
jittered exponential backoff or an upstream Retry-After of at most `SIDECAR_RETRY_AFTER_WAIT_MAX_S`
(a longer one ends the turn). A turn that ends in a class of `SIDECAR_FALLBACK_ON` moves on; any
other class is the caller's answer. Nothing is committed until an attempt has a complete body or,
for streams, its first content event; the whole search is bounded by `SIDECAR_REQUEST_TIMEOUT_S`.
The chain knows no provider: backends translate, `upstream` does the I/O.
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import orjson

from sidecar.backends.base import BackendAdapter, InvalidResponse, Untranslatable
from sidecar.call import Call, StreamAdapter, StreamStep, UpstreamRequest
from sidecar.circuit import Circuit, CircuitState, retry_after_header
from sidecar.dialects.caller import error_body
from sidecar.failure import RETRYABLE, FailureClass, classify_status, status_of
from sidecar.metrics import BackendSeries, Metrics
from sidecar.redact import Redactor
from sidecar.retry_after import parse_retry_after
from sidecar.settings import Backend, GlobalSettings
from sidecar.upstream import Upstream, UpstreamError, UpstreamResponse

F = FailureClass
log = logging.getLogger("sidecar.chain")

_MAX_BACKOFF_S = 8.0


@dataclass(slots=True)
class Member:
    """A configured backend with everything it needs at run time; shared by every chain."""

    config: Backend
    adapter: BackendAdapter
    upstream: Upstream
    circuit: Circuit

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(slots=True)
class AttemptRecord:
    backend: str
    cls: FailureClass | None
    status: int | None
    ms: float


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(slots=True)
class Committed:
    """A stream at its commit point: the caller may now be sent `head`, then the rest."""

    member: Member
    series: BackendSeries
    response: UpstreamResponse
    adapter: StreamAdapter
    head: bytes
    step: StreamStep
    redact: Callable[[bytes], bytes]
    chain: "FallbackChain"
    call: Call
    headers: dict[str, str]


@dataclass(slots=True)
class Failure:
    cls: FailureClass
    detail: str
    status: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None
    budget_spent: bool = False
    content_type: str = "application/json"


@dataclass(slots=True)
class Outcome:
    chain: str
    attempts: list[AttemptRecord] = field(default_factory=list)
    sent: int = 0
    backend: str | None = None
    reply: Reply | None = None
    stream: Committed | None = None
    exhausted: bool = False
    # A stream-recovery continuation: its adapter drops the stream's opening events.
    resume: bool = False

    def headers(self) -> dict[str, str]:
        h = {"x-sidecar-attempts": str(self.sent)}
        if self.backend is not None:
            h["x-sidecar-backend"] = self.backend
        failures = [f"{a.backend}={a.cls}" for a in self.attempts if a.cls is not None]
        if failures:
            h["x-sidecar-failures"] = ",".join(failures)
        if self.exhausted:
            h["x-anyllm-fallback-exhausted"] = "true"
        return h


class FallbackChain:
    def __init__(
        self,
        name: str,
        members: Sequence[Member],
        settings: GlobalSettings,
        metrics: Metrics,
        redactor: Redactor,
    ) -> None:
        self.name = name
        self._redact = redactor.bytes
        self.members = tuple(members)
        self._settings = settings
        self._fallback_on = settings.fallback_classes
        self._series = [metrics.series(name, m.name) for m in self.members]
        self._exhausted = metrics.exhausted.labels(name)

    async def forward(self, call: Call) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.request_timeout_s
        out = Outcome(self.name)
        last: Failure | None = None
        untranslatable: Untranslatable | None = None
        for member, series in zip(self.members, self._series, strict=True):
            if loop.time() >= deadline:
                break
            if not member.adapter.supports(call.route):
                self._skip(out, member, series, F.UNSUPPORTED)
                continue
            try:
                req = member.adapter.build(call)
            except Untranslatable as e:
                untranslatable = untranslatable or e
                self._skip(out, member, series, F.UNSUPPORTED)
                continue
            except Exception:  # a request shape the translation did not expect
                log.warning("cannot translate a request for %s", member.name, exc_info=True)
                untranslatable = untranslatable or Untranslatable(
                    f"the request cannot be translated for backend {member.name!r}"
                )
                self._skip(out, member, series, F.UNSUPPORTED)
                continue
            if not member.circuit.acquire():
                self._skip(out, member, series, F.CIRCUIT_OPEN)
                continue
            result = await self._turn(out, member, series, call, req, deadline)
            if not isinstance(result, Failure):
                return out
            last = result
        return self._exhaust(out, call, last, untranslatable, loop.time() >= deadline)

    def _skip(self, out: Outcome, m: Member, series: BackendSeries, cls: FailureClass) -> None:
        series.skipped.inc()
        series.failures[cls].inc()
        out.attempts.append(AttemptRecord(m.name, cls, None, 0.0))

    async def _turn(
        self,
        out: Outcome,
        m: Member,
        series: BackendSeries,
        call: Call,
        req: UpstreamRequest,
        deadline: float,
    ) -> Failure | None:
        """One backend's turn. None: the caller has its answer in `out`."""
        retries = m.config.settings.retries
        attempt = 0
        try:
            while True:
                result = await self._attempt(out, m, series, call, req, deadline)
                if not isinstance(result, Failure):
                    m.circuit.record_success()
                    return None
                wait = self._retry_wait(m, result, attempt, retries, deadline)
                if wait is None:
                    break
                attempt += 1
                await asyncio.sleep(wait)
        except BaseException:
            m.circuit.release()
            raise
        return self._end_turn(out, m, call, result)

    def _retry_wait(
        self, m: Member, f: Failure, attempt: int, retries: int, deadline: float
    ) -> float | None:
        if f.cls not in RETRYABLE or attempt >= retries:
            return None
        if f.retry_after_s is not None:
            if f.retry_after_s > self._settings.retry_after_wait_max_s:
                return None
            wait = f.retry_after_s
        else:
            base = m.config.settings.retry_backoff_s * (2**attempt)
            wait = min(base, _MAX_BACKOFF_S) * random.uniform(0.5, 1.0)
        if asyncio.get_running_loop().time() + wait >= deadline:
            return None
        return wait

    def _end_turn(self, out: Outcome, m: Member, call: Call, f: Failure) -> Failure | None:
        if f.budget_spent:
            # The chain's budget, not this backend, cut the attempt short: the caller gets the
            # budget's 504 and the circuit learns nothing.
            m.circuit.release()
            return f
        self._record(m, f)
        if f.cls not in self._fallback_on:
            out.reply = self._failure_reply(call, f, m.name)
            return None
        return f

    def _record(self, m: Member, f: Failure) -> None:
        """How a backend's turn that ended in `f` counts for its circuit."""
        if f.cls in self._fallback_on:
            open_now = f.cls is F.QUOTA_EXHAUSTED or (
                f.cls is F.RATE_LIMITED and f.retry_after_s is not None
            )
            m.circuit.record_failure(retry_after_s=f.retry_after_s, open_now=open_now)
        elif f.status is not None:
            m.circuit.record_neutral()  # it answered, if not to our liking: it is alive
        else:
            m.circuit.release()

    async def _attempt(
        self,
        out: Outcome,
        m: Member,
        series: BackendSeries,
        call: Call,
        req: UpstreamRequest,
        deadline: float,
    ) -> Failure | None:
        s = m.config.settings
        loop = asyncio.get_running_loop()
        start = loop.time()
        own = s.first_token_timeout_s if call.stream else s.response_timeout_s
        limit = min(own, deadline - start)
        out.sent += 1
        out.backend = m.name
        try:
            async with asyncio.timeout(limit):
                resp = await m.upstream.send(req)
                result = await self._read(out, m, series, call, resp, start)
        except TimeoutError:
            what = "request budget" if limit < own else "first token" if call.stream else "response"
            result = Failure(F.TIMEOUT, f"{what} timeout", budget_spent=limit < own)
        except UpstreamError as e:
            cls = F.SERVER_ERROR if e.cls is F.STREAM_INTERRUPTED else e.cls
            result = Failure(cls, e.detail)
        ms = (loop.time() - start) * 1000
        series.attempt_seconds.observe(ms / 1000)
        if result is None:
            series.success.inc()
            out.attempts.append(AttemptRecord(m.name, None, resp.status, ms))
            return None
        series.failure.inc()
        series.failures[result.cls].inc()
        out.attempts.append(AttemptRecord(m.name, result.cls, result.status, ms))
        return result

    async def _read(
        self,
        out: Outcome,
        m: Member,
        series: BackendSeries,
        call: Call,
        resp: UpstreamResponse,
        start: float,
    ) -> Failure | None:
        try:
            if not 200 <= resp.status < 300:
                return await self._error(m, call, resp)
            if m.adapter.reads_stream(call, resp.content_type):
                return await self._until_commit(out, m, series, call, resp, start)
            body = await resp.read()
        finally:
            if out.stream is None:
                resp.close()
        try:
            answer = m.adapter.answer(call, body)
        except InvalidResponse as e:
            return Failure(F.INVALID_RESPONSE, str(e), status=resp.status)
        except Exception:  # a shape the translation did not expect: the upstream's fault
            log.warning("unreadable answer from %s", m.name, exc_info=True)
            return Failure(F.INVALID_RESPONSE, "upstream answer has an unexpected shape")
        headers = m.adapter.response_headers(call, resp.headers)
        content_type = headers.pop("content-type", None) or answer.content_type
        out.reply = Reply(resp.status, answer.body, headers, content_type)
        series.count_tokens(answer.usage.prompt, answer.usage.completion)
        return None

    async def _error(self, m: Member, call: Call, resp: UpstreamResponse) -> Failure:
        body = await resp.read()
        cls = classify_status(resp.status, body)
        assert cls is not None
        retry_after = parse_retry_after(resp.headers, now=time.time())
        # Pass-through errors keep the upstream's content type; translated ones are JSON.
        headers = m.adapter.response_headers(call, resp.headers)
        content_type = headers.pop("content-type", None) or "application/json"
        if retry_after is not None and "retry-after" in resp.headers:
            headers["retry-after"] = resp.headers["retry-after"]
        return Failure(
            cls,
            f"upstream answered {resp.status}",
            status=resp.status,
            body=self._redact(m.adapter.error_body(call, resp.status, body)),
            headers=headers,
            retry_after_s=retry_after,
            content_type=content_type,
        )

    async def _until_commit(
        self,
        out: Outcome,
        m: Member,
        series: BackendSeries,
        call: Call,
        resp: UpstreamResponse,
        start: float,
    ) -> Failure | None:
        adapter = m.adapter.stream(call)
        adapter.resume = out.resume
        head: list[bytes] = []
        while True:
            chunk = await resp.chunk()
            try:
                step = adapter.feed(chunk) if chunk else adapter.end()
            except Exception:  # a shape the translation did not expect: the upstream's fault
                log.warning("unreadable stream event from %s", m.name, exc_info=True)
                return Failure(F.INVALID_RESPONSE, "upstream stream event has an unexpected shape")
            committed = step.content or step.finished
            if step.error is not None and not committed:
                cls, body = step.error
                return Failure(cls, "error event before the first content", body=self._redact(body))
            if step.out:
                head.append(step.out)
            if committed:
                break
            if step.done:
                return Failure(F.SERVER_ERROR, "stream ended before any content")
            if not chunk:
                return Failure(F.SERVER_ERROR, "stream ended before any content")
        series.first_token_seconds.observe(asyncio.get_running_loop().time() - start)
        step.out = b"".join(head)
        headers = m.adapter.response_headers(call, resp.headers)
        out.stream = Committed(
            m, series, resp, adapter, step.out, step, self._redact, self, call, headers
        )
        return None

    async def recover(
        self, committed: Committed, attempts: list[AttemptRecord]
    ) -> Committed | None:
        """Stream recovery (CONTRACT §5): the first later backend with `PREFILL=true` and a
        closed circuit gets the request plus the text already delivered as a trailing assistant
        message. One attempt only: a backend that rejects the prefill ends the recovery."""
        call = committed.call
        # One plain-text choice only (CONTRACT §5): n > 1 interleaves choices in one stream.
        if call.body is None or call.body.get("n") not in (None, 1):
            return None
        if not all(isinstance(t, str) for t in committed.adapter.text):
            return None
        text = "".join(committed.adapter.text)
        later = list(zip(self.members, self._series, strict=True))
        start = next(i for i, (m, _) in enumerate(later) if m is committed.member) + 1
        for m, series in later[start:]:
            eligible = m.config.settings.prefill and m.circuit.state is CircuitState.CLOSED
            if not eligible or not m.adapter.supports(call.route):
                continue
            cont = _with_prefill(call, text)
            try:
                req = m.adapter.build(cont)
            except Untranslatable:
                continue
            if not m.circuit.acquire():
                continue
            return await self._continue(m, series, cont, req, attempts)
        return None

    async def _continue(
        self,
        m: Member,
        series: BackendSeries,
        call: Call,
        req: UpstreamRequest,
        attempts: list[AttemptRecord],
    ) -> Committed | None:
        # The caller's headers are long sent; the attempt still belongs in the request's log.
        out = Outcome(self.name, attempts=attempts, resume=True)
        deadline = asyncio.get_running_loop().time() + m.config.settings.first_token_timeout_s
        try:
            result = await self._attempt(out, m, series, call, req, deadline)
        except BaseException:
            m.circuit.release()
            raise
        if result is None and out.stream is not None:
            m.circuit.record_success()
            return out.stream
        series.recovery_failure.inc()
        if result is None:
            m.circuit.release()
        else:
            self._record(m, result)
        return None

    def _failure_reply(self, call: Call, f: Failure, backend: str) -> Reply:
        if f.status is not None and f.body is not None and f.cls is not F.INVALID_RESPONSE:
            return Reply(f.status, f.body, dict(f.headers), f.content_type)
        status = status_of(f.cls)
        if f.body is not None and f.status is None and f.cls is not F.INVALID_RESPONSE:
            # An in-band error event before content: its own body, a status of the same meaning.
            return Reply(status, _event_body(f.body), dict(f.headers))
        message = f"backend {backend!r} failed: {f.detail} ({f.cls})"
        return Reply(status, error_body(call.dialect, status, message, code=f.cls.value))

    def _exhaust(
        self,
        out: Outcome,
        call: Call,
        last: Failure | None,
        untranslatable: Untranslatable | None,
        budget_spent: bool,
    ) -> Outcome:
        out.exhausted = True
        self._exhausted.inc()
        if budget_spent:
            msg = f"no backend of chain {self.name!r} answered within SIDECAR_REQUEST_TIMEOUT_S"
            out.reply = Reply(504, error_body(call.dialect, 504, msg, code="timeout"))
        elif last is not None:
            out.reply = self._failure_reply(call, last, out.backend or "")
        elif open_ := {a.backend for a in out.attempts if a.cls is F.CIRCUIT_OPEN}:
            circuits = [m.circuit for m in self.members if m.name in open_]
            msg = f"every backend of chain {self.name!r} is cooling down (circuit open)"
            out.reply = Reply(
                503,
                error_body(call.dialect, 503, msg, code="circuit_open"),
                {"retry-after": retry_after_header(circuits)},
            )
        elif untranslatable is not None:
            out.reply = Reply(
                400,
                error_body(call.dialect, 400, untranslatable.message, param=untranslatable.param),
            )
        else:
            msg = f"no backend of chain {self.name!r} serves this route"
            out.reply = Reply(400, error_body(call.dialect, 400, msg, code="unsupported"))
        return out


def _with_prefill(call: Call, text: str) -> Call:
    assert call.body is not None
    messages = list(call.body["messages"])
    last = messages[-1] if messages else None
    if (
        isinstance(last, dict)
        and last.get("role") == "assistant"
        and isinstance(last.get("content"), str)
    ):
        # The caller prefilled the answer itself: what was delivered continues that prefill.
        text = last["content"] + text
        messages.pop()
    # Anthropic rejects a prefill that ends in whitespace; every backend accepts it stripped.
    messages.append({"role": "assistant", "content": text.rstrip()})
    body = {**call.body, "messages": messages, "stream": True}
    return replace(call, body=body, raw=orjson.dumps(body), stream=True)


def _event_body(event: bytes) -> bytes:
    # `data: {...}\n\n` (OpenAI) or `event: error\ndata: {...}\n\n` (Anthropic) → the JSON.
    for line in event.splitlines():
        if line.startswith(b"data:"):
            return line[5:].strip()
    return event
