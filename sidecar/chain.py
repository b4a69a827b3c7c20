"""FallbackChain.forward(call) → Outcome: each backend in order until one answers (README "How a
request travels").

A backend's turn is at most `1 + RETRIES` attempts; only `RETRYABLE` classes are retried, after a
jittered exponential backoff or an upstream Retry-After of at most `SIDECAR_RETRY_AFTER_WAIT_MAX_S`
(a longer one ends the turn). A turn that ends in a class of `SIDECAR_FALLBACK_ON` moves on; any
other class is the caller's answer. Nothing is committed until an attempt has a complete body or,
for streams, its first content event; the whole search is bounded by `SIDECAR_REQUEST_TIMEOUT_S`.

The send path is a ladder, each step taking one `Attempt` and returning what happened as a value
(`Answered | Committed | Failure`): `_turn` (retries, circuit) → `_attempt` (deadline, metrics,
the attempt's record) → `_exchange` (the upstream response: closed here unless handed on as a
committed stream) → `_read` (status, body or stream). Only `forward` builds the `Outcome`. The
chain knows no provider and no route: backends translate, `upstream` does the I/O, `stream` reads
to the commit point.
"""

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from sidecar import replies
from sidecar.backends.base import BackendAdapter, InvalidResponse, Untranslatable
from sidecar.call import Answer, Call, UpstreamRequest
from sidecar.circuit import Circuit, CircuitState, retry_after_header
from sidecar.deadline import Deadline, Deadlines
from sidecar.failure import (
    RETRYABLE,
    Failure,
    FailureClass,
    before_commit,
    classify_status,
    opens_at_once,
)
from sidecar.metrics import BackendSeries, Metrics
from sidecar.ratelimit import Headroom, parse_ratelimit
from sidecar.redact import Redactor
from sidecar.replies import Reply
from sidecar.settings import Backend, GlobalSettings
from sidecar.stream import Committed, until_commit
from sidecar.tracing import OPERATIONS, UNTRACED, AttemptInfo, AttemptSpan
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
    # The upstream's own quota headers: no requests (or tokens) left skips it until the reset.
    headroom: Headroom = field(default_factory=lambda: Headroom(max_wait_s=300))

    @property
    def name(self) -> str:
        return self.config.name

    def available(self) -> bool:
        """Not held back by a rate-limit block, and the circuit lets a request through (which
        takes a half-open probe slot: the last check)."""
        return self.headroom.blocked() is None and self.circuit.acquire()

    def wait_s(self) -> float:
        """Until this backend may be tried again (0: it may)."""
        return max(self.circuit.cooldown_remaining_s(), self.headroom.remaining_s())


@dataclass(slots=True)
class AttemptRecord:
    backend: str
    cls: FailureClass | None
    status: int | None
    ms: float
    # False for a skip (unsupported, circuit open): nothing was sent.
    sent: bool = True
    # Sent, then ended by the caller leaving or the drain before it had a result.
    cancelled: bool = False


@dataclass(slots=True)
class Attempt:
    """One request to one backend: what every step of the send ladder needs."""

    member: Member
    series: BackendSeries
    call: Call
    request: UpstreamRequest
    deadline: float
    # Where each attempt is recorded, in order (the request's, or a recovery's).
    trail: list[AttemptRecord]
    # A stream-recovery continuation: its adapter drops the stream's opening events.
    resume: bool = False


@dataclass(slots=True)
class Answered:
    reply: Reply
    answer: Answer | None = None


Result = Answered | Committed | Failure


@dataclass(slots=True)
class Outcome:
    chain: str
    attempts: list[AttemptRecord] = field(default_factory=list)
    reply: Reply | None = None
    stream: Committed | None = None
    exhausted: bool = False

    @property
    def sent(self) -> int:
        return sum(1 for a in self.attempts if a.sent)

    @property
    def backend(self) -> str | None:
        """Who answered; on exhaustion the last one tried; None when nothing was sent."""
        return next((a.backend for a in reversed(self.attempts) if a.sent), None)

    def headers(self) -> dict[str, str]:
        # One pass over the attempts: this runs for every answer.
        sent = 0
        backend = None
        failures = []
        for a in self.attempts:
            if a.sent:
                sent += 1
                backend = a.backend
            if a.cls is not None:
                failures.append(f"{a.backend}={a.cls}")
        h = {"x-sidecar-attempts": str(sent)}
        if backend is not None:
            h["x-sidecar-backend"] = backend
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
        self._deadlines: Deadlines | None = None

    def _deadline_at(self, loop: asyncio.AbstractEventLoop, when: float) -> Deadline:
        d = self._deadlines
        # Made on first use: a chain may be built before its loop runs.
        if d is None or d.loop is not loop:
            d = self._deadlines = Deadlines(loop)
        return d.at(when)

    async def forward(self, call: Call, trail: list[AttemptRecord] | None = None) -> Outcome:
        """`trail`, when given, is filled as the chain goes: a request cancelled half-way still
        knows every attempt it made."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.request_timeout_s
        trail = [] if trail is None else trail
        last: Failure | None = None
        untranslatable: Untranslatable | None = None
        for member, series in zip(self.members, self._series, strict=True):
            if loop.time() >= deadline:
                break
            req = self._request(member, series, call, trail)
            if isinstance(req, Untranslatable):
                untranslatable = untranslatable or req
                continue
            if req is None:
                continue
            result = await self._turn(Attempt(member, series, call, req, deadline, trail))
            if isinstance(result, Answered):
                return Outcome(self.name, trail, reply=result.reply)
            if isinstance(result, Committed):
                return Outcome(self.name, trail, stream=result)
            if result.cls not in self._fallback_on and not result.budget_spent:
                reply = replies.failure_reply(call.dialect, result, member.name)
                return Outcome(self.name, trail, reply=reply)
            last = result
        outcome = Outcome(self.name, trail, exhausted=True)
        outcome.reply = self._exhausted_reply(outcome, call, last, untranslatable, deadline)
        return outcome

    async def continuation(
        self, call: Call, *, after: str, trail: list[AttemptRecord]
    ) -> Committed | None:
        """One attempt at `call`, a stream, on the first backend after `after` that has
        `PREFILL=true`, a closed circuit and can take the request; None if there is none or it
        did not commit. Only one backend is tried, once (README "Stream recovery")."""
        pairs = list(zip(self.members, self._series, strict=True))
        start = next(i for i, (m, _) in enumerate(pairs) if m.name == after) + 1
        for m, series in pairs[start:]:
            eligible = m.config.settings.prefill and m.circuit.state is CircuitState.CLOSED
            if not eligible or not m.adapter.supports(call.route):
                continue
            try:
                req = m.adapter.build(call)
            except Untranslatable:
                continue
            if not m.available():
                continue
            deadline = asyncio.get_running_loop().time() + m.config.settings.first_token_timeout_s
            return await self._continue(Attempt(m, series, call, req, deadline, trail, True))
        return None

    async def _continue(self, a: Attempt) -> Committed | None:
        m = a.member
        try:
            result = await self._attempt(a)
        except BaseException:
            m.circuit.release()
            raise
        if isinstance(result, Committed):
            m.circuit.record_success()
            return result
        a.series.recovery_failure.inc()
        if isinstance(result, Failure):
            self._record(m, result)
        else:
            m.circuit.release()  # a complete JSON answer to a stream request: not a continuation
        return None

    def _request(
        self, m: Member, series: BackendSeries, call: Call, trail: list[AttemptRecord]
    ) -> UpstreamRequest | Untranslatable | None:
        """The request for `m`, or why it is skipped (None: skipped, nothing to tell the caller)."""
        if not m.adapter.supports(call.route):
            self._skip(trail, m, series, F.UNSUPPORTED, call)
            return None
        try:
            req = m.adapter.build(call)
        except Untranslatable as e:
            self._skip(trail, m, series, F.UNSUPPORTED, call)
            return e
        except Exception as e:  # a request shape the translation did not expect
            log.warning(
                "cannot translate a request for %s: %s",
                m.name,
                f"{type(e).__name__}: {e}"[:200],
                exc_info=True,
                extra={"fields": {"request_id": call.request_id, "backend": m.name}},
            )
            self._skip(trail, m, series, F.UNSUPPORTED, call)
            return Untranslatable(
                f"the request cannot be translated for backend {m.name!r}: its shape "
                f"is unexpected (request id {call.request_id})"
            )
        if not m.available():
            self._skip(trail, m, series, F.CIRCUIT_OPEN, call)
            return None
        return req

    def _skip(
        self,
        trail: list[AttemptRecord],
        m: Member,
        series: BackendSeries,
        cls: FailureClass,
        call: Call,
    ) -> None:
        series.skipped.inc()
        series.failures[cls].inc()
        trail.append(AttemptRecord(m.name, cls, None, 0.0, sent=False))
        call.trace.skipped(m.name, cls.value)

    async def _turn(self, a: Attempt) -> Result:
        """One backend's turn: its attempts, and what the turn's end means for its circuit."""
        m = a.member
        retries = m.config.settings.retries
        attempt = 0
        try:
            while True:
                result = await self._attempt(a)
                if not isinstance(result, Failure):
                    m.circuit.record_success()
                    return result
                wait = self._retry_wait(m, result, attempt, retries, a.deadline)
                if wait is None:
                    break
                attempt += 1
                await asyncio.sleep(wait)
        except BaseException:
            m.circuit.release()
            raise
        if result.budget_spent:
            # The chain's budget, not this backend, cut the attempt short: the caller gets the
            # budget's 504 and the circuit learns nothing.
            m.circuit.release()
        else:
            self._record(m, result)
        return result

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

    def _record(self, m: Member, f: Failure) -> None:
        """How a backend's turn that ended in `f` counts for its circuit."""
        if f.cls in self._fallback_on:
            open_now = opens_at_once(f.cls, f.retry_after_s)
            m.circuit.record_failure(retry_after_s=f.retry_after_s, open_now=open_now)
        elif f.status is not None:
            m.circuit.record_neutral()  # it answered, if not to our liking: it is alive
        else:
            m.circuit.release()

    async def _attempt(self, a: Attempt) -> Result:
        s = a.member.config.settings
        loop = asyncio.get_running_loop()
        start = loop.time()
        own = s.first_token_timeout_s if a.call.stream else s.response_timeout_s
        limit = min(own, a.deadline - start)
        status: int | None = None
        span = a.call.trace.attempt(self._attempt_info(a) if a.call.trace.traced else UNTRACED)
        try:
            async with self._deadline_at(loop, start + limit):
                result, status = await self._exchange(a, start, span)
        except TimeoutError:
            what = (
                "request budget" if limit < own else "first token" if a.call.stream else "response"
            )
            result = Failure(F.TIMEOUT, f"{what} timeout", budget_spent=limit < own)
        except UpstreamError as e:
            result = Failure(before_commit(e.cls), e.detail)
        except asyncio.CancelledError:
            span.end()
            ms = (loop.time() - start) * 1000
            a.trail.append(AttemptRecord(a.member.name, None, None, ms, cancelled=True))
            raise
        except BaseException:
            span.end()
            raise
        _traced(span, result)
        ms = (loop.time() - start) * 1000
        a.series.attempt_seconds.observe(ms / 1000)
        if isinstance(result, Failure):
            a.series.failure.inc()
            a.series.failures[result.cls].inc()
            a.trail.append(AttemptRecord(a.member.name, result.cls, result.status, ms))
        else:
            a.series.success.inc()
            a.trail.append(AttemptRecord(a.member.name, None, status, ms))
        return result

    def _attempt_info(self, a: Attempt) -> AttemptInfo:
        try:
            url = urlsplit(a.request.url)
            host, port = url.hostname, url.port
        except ValueError:
            host = port = None
        return AttemptInfo(
            backend=a.member.name,
            kind=a.member.adapter.kind,
            operation=OPERATIONS.get(a.call.route.value, a.call.route.value),
            model=a.member.adapter.sent_model(a.call),
            server_address=host,
            server_port=port,
            attempt=sum(1 for r in a.trail if r.sent) + 1,
        )

    async def _exchange(self, a: Attempt, start: float, span: AttemptSpan) -> tuple[Result, int]:
        m = a.member
        resp = await m.upstream.send(_outgoing(a, span))
        # Every answer says how much quota is left, errors included (a 429 most of all).
        m.headroom.observe(parse_ratelimit(resp.headers, now=time.time()))
        result: Result | None = None
        try:
            result = await self._read(a, resp, start)
        finally:
            # The one owner of the response from here on is a committed stream's relay.
            if not isinstance(result, Committed):
                resp.close()
        return result, resp.status

    async def _read(self, a: Attempt, resp: UpstreamResponse, start: float) -> Result:
        m, call = a.member, a.call
        if not 200 <= resp.status < 300:
            return await self._error(a, resp)
        if m.adapter.reads_stream(call, resp.content_type):
            adapter = m.adapter.stream(call)
            adapter.resume = a.resume
            return await until_commit(
                resp,
                adapter,
                backend=m.name,
                series=a.series,
                headers=m.adapter.response_headers(call, resp.headers),
                idle_timeout_s=m.config.settings.stream_idle_timeout_s,
                redact=self._redact,
                started=start,
            )
        body = await resp.read()
        try:
            answer = m.adapter.answer(call, body)
        except InvalidResponse as e:
            return Failure(F.INVALID_RESPONSE, str(e), status=resp.status)
        except Exception:  # a shape the translation did not expect: the upstream's fault
            log.warning("unreadable answer from %s", m.name, exc_info=True)
            return Failure(F.INVALID_RESPONSE, "upstream answer has an unexpected shape")
        headers = m.adapter.response_headers(call, resp.headers)
        content_type = headers.pop("content-type", None) or answer.content_type
        a.series.count_tokens(answer.usage)
        return Answered(Reply(resp.status, answer.body, headers, content_type), answer)

    async def _error(self, a: Attempt, resp: UpstreamResponse) -> Failure:
        m, call = a.member, a.call
        body = await resp.read()
        cls = classify_status(resp.status, body)
        assert cls is not None
        retry_after = m.adapter.retry_after_s(resp.status, resp.headers, body, now=time.time())
        # Pass-through errors keep the upstream's content type; translated ones are JSON.
        headers = m.adapter.response_headers(call, resp.headers)
        content_type = headers.pop("content-type", None) or "application/json"
        if retry_after is not None:
            given = resp.headers.get("retry-after")
            headers["retry-after"] = given or retry_after_header(retry_after)
        return Failure(
            cls,
            f"upstream answered {resp.status}",
            status=resp.status,
            body=self._redact(m.adapter.error_body(call, resp.status, body)),
            headers=headers,
            retry_after_s=retry_after,
            content_type=content_type,
        )

    def _exhausted_reply(
        self,
        out: Outcome,
        call: Call,
        last: Failure | None,
        untranslatable: Untranslatable | None,
        deadline: float,
    ) -> Reply:
        self._exhausted.inc()
        dialect = call.dialect
        if asyncio.get_running_loop().time() >= deadline:
            return replies.budget_spent(dialect, self.name)
        if last is not None:
            return replies.failure_reply(dialect, last, out.backend or "")
        if open_ := {a.backend for a in out.attempts if a.cls is F.CIRCUIT_OPEN}:
            wait_s = min(m.wait_s() for m in self.members if m.name in open_)
            return replies.circuits_open(dialect, self.name, wait_s)
        if untranslatable is not None:
            return replies.untranslatable(dialect, untranslatable.message, untranslatable.param)
        return replies.unsupported(dialect, self.name, call.route)


def _outgoing(a: Attempt, span: AttemptSpan) -> UpstreamRequest:
    """The request as this attempt sends it: with its trace context, and with the key as of now
    when the key is a file that may have been rotated since the request was built (an attempt
    in flight keeps the headers it was sent with)."""
    extra = span.headers()
    if a.member.config.key_file is not None:
        extra = {**extra, **a.member.adapter.credentials()}
    if not extra:
        return a.request
    return replace(a.request, headers={**a.request.headers, **extra})


def _traced(span: AttemptSpan, result: Result) -> None:
    """The attempt's CLIENT span learns how it ended; a committed stream's ends with the stream."""
    if isinstance(result, Failure):
        span.failed(result.cls.value)
    elif isinstance(result, Committed):
        span.committed()
        result.span = span
        return
    elif result.answer is not None:
        ans = result.answer
        span.answered(
            model=ans.model,
            finish_reasons=ans.finish_reasons,
            input_tokens=ans.usage.prompt,
            output_tokens=ans.usage.completion,
        )
    span.end()
