"""A stream's whole life, from the upstream's first byte to the caller's last.

1. `until_commit` reads the upstream until its first content event (README "How a request
   travels"): role-only chunks, pings and `message_start` do not count; an error event, a
   malformed one or an end before content is a `Failure` the chain may fall back on. Nothing
   has reached the caller yet; the chain's first-token deadline bounds this part.
2. `StreamRelay.run` sends the caller what was held back, then pumps the rest as it arrives,
   under the idle watchdog (`STREAM_IDLE_TIMEOUT_S`). After commit nothing can fall back: a cut,
   a stall, a malformed event or an in-band error ends the stream with one terminal error event
   in the caller's dialect and no terminator, so a truncated answer never looks complete. A stream
   that finished (finish_reason / stop_reason) but lost its terminator gets one added.
3. When the stream breaks, the relay may ask its `recover` callback (`sidecar.recovery`) for a
   continuation and pump that into the same stream; if that fails in any way, the caller gets the
   terminal error of the original failure, never the continuation's.
4. Whatever happens, the relay ends each upstream response it pumped: a complete one is kept for
   the pool (`finish`), any other is closed at once so that the upstream stops generating.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from sidecar.call import StreamAdapter, StreamStep
from sidecar.failure import Failure, FailureClass
from sidecar.metrics import BackendSeries
from sidecar.tracing import NO_ATTEMPT_SPAN, AttemptSpan
from sidecar.upstream import UpstreamError, UpstreamResponse

F = FailureClass
log = logging.getLogger("sidecar.stream")

# Lower-case names throughout, so that a merge replaces rather than doubles a header.
SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


@dataclass(slots=True)
class Committed:
    """A stream at its commit point: the caller may now be sent `head`, then the rest."""

    backend: str
    series: BackendSeries
    response: UpstreamResponse
    adapter: StreamAdapter
    head: bytes
    step: StreamStep
    headers: dict[str, str]
    idle_timeout_s: float
    redact: Callable[[bytes], bytes]
    # The attempt's CLIENT span: it ends with the stream.
    span: AttemptSpan = NO_ATTEMPT_SPAN


Recover = Callable[[Committed], Awaitable[Committed | None]]


def _feed(adapter: StreamAdapter, chunk: bytes) -> StreamStep | None:
    """One read through the adapter; None when the upstream sent what it cannot read."""
    try:
        return adapter.feed(chunk) if chunk else adapter.end()
    except Exception:  # a shape the translation did not expect: the upstream's fault
        log.warning("unreadable stream event", exc_info=True)
        return None


async def until_commit(
    resp: UpstreamResponse,
    adapter: StreamAdapter,
    *,
    backend: str,
    series: BackendSeries,
    headers: dict[str, str],
    idle_timeout_s: float,
    redact: Callable[[bytes], bytes],
    started: float,
) -> Committed | Failure:
    head: list[bytes] = []
    while True:
        chunk = await resp.chunk()
        step = _feed(adapter, chunk)
        if step is None:
            return Failure(F.INVALID_RESPONSE, "upstream stream event has an unexpected shape")
        committed = step.content or step.finished
        if step.error is not None and not committed:
            cls, body = step.error
            # The event's wait counts as an error answer's Retry-After would.
            return Failure(
                cls,
                "error event before the first content",
                body=redact(body),
                retry_after_s=step.retry_after_s,
            )
        if step.out:
            head.append(step.out)
        if committed:
            break
        if step.done or not chunk:
            return Failure(F.SERVER_ERROR, "stream ended before any content")
    series.first_token_seconds.observe(asyncio.get_running_loop().time() - started)
    step.out = b"".join(head)
    return Committed(
        backend, series, resp, adapter, step.out, step, headers, idle_timeout_s, redact
    )


class StreamRelay:
    """Relays one committed stream; `abort()` ends it early with a terminal error (drain)."""

    __slots__ = (
        "_aborted",
        "_current",
        "_recover",
        "_recovering",
        "_tail",
        "c",
        "client_gone",
        "end",
    )

    def __init__(self, committed: Committed, recover: Recover | None = None) -> None:
        self.c = committed
        self._recover = recover
        # How the stream ended, for the log line: "complete", "recovered" or a failure class.
        self.end = "complete"
        self._current = committed
        self._recovering: asyncio.Future[Committed | None] | None = None
        self._aborted = False
        self.client_gone = False
        # The last bytes of a stream that ended well, held back to go out with the end of the
        # body: one write (and one syscall) for both, instead of one each.
        self._tail = b""

    def abort(self) -> None:
        self._aborted = True
        self._current.response.close()
        if self._recovering is not None:
            self._recovering.cancel()

    async def run(self, request: web.BaseRequest, headers: Mapping[str, str]) -> web.StreamResponse:
        c = self.c
        resp = web.StreamResponse(status=200, headers={**SSE_HEADERS, **c.headers, **headers})
        complete = False  # the upstream's stream ended as it should
        try:
            await resp.prepare(request)
            broken = await self._relay(resp, c)
            complete = broken is None
            if broken is not None and not self._aborted:
                c.response.close()  # hang up now: it must not go on generating during a recovery
                c.series.failures[broken.cls].inc()
                self.end = broken.cls.value
                if await self._continue(resp):
                    self.end, broken = "recovered", None
            if broken is not None:
                if self._aborted:  # the shutdown's doing, not the backend's
                    broken = Failure(F.STREAM_INTERRUPTED, "the sidecar is shutting down")
                    self.end = "shutdown"
                self._tail = self._terminal(broken)
            await resp.write_eof(self._tail)
        except ConnectionResetError:
            self.client_gone = True
        finally:
            self._close(c, complete)
        return resp

    async def _relay(self, resp: web.StreamResponse, c: Committed) -> Failure | None:
        if c.step.done and c.step.error is None:
            self._tail = c.head  # the whole answer came with the read that committed it
            return None
        await resp.write(c.head)
        if c.step.error is not None:
            # The batch that committed also carried the failure.
            return Failure(F.STREAM_INTERRUPTED, "", body=c.step.error[1])
        dog = _IdleWatchdog(c.response, c.idle_timeout_s)
        try:
            return await self._pump(resp, c, dog)
        finally:
            dog.stop()

    async def _pump(
        self, resp: web.StreamResponse, c: Committed, dog: "_IdleWatchdog"
    ) -> Failure | None:
        adapter = c.adapter
        finished = c.step.finished
        now = asyncio.get_running_loop().time
        while True:
            try:
                chunk: bytes | None = await c.response.chunk()
            except UpstreamError:
                chunk = None
            if self._aborted:
                return Failure(F.STREAM_INTERRUPTED, "the sidecar is shutting down")
            if dog.fired:
                return Failure(F.STREAM_TIMEOUT, "upstream stream stalled")
            if chunk is None:
                return Failure(F.STREAM_INTERRUPTED, "upstream stream was cut off")
            dog.seen = now()
            step = _feed(adapter, chunk)
            if step is None:
                return Failure(F.STREAM_INTERRUPTED, "upstream sent a malformed stream event")
            if step.error is None:
                finished = finished or step.finished
                if step.done:
                    self._tail = step.out
                    return None
                if not chunk and finished:
                    self._tail = step.out + adapter.terminator()
                    return None
            if step.out:
                await resp.write(step.out)
                dog.seen = now()  # time spent waiting on a slow caller is not upstream silence
            if step.error is not None:
                return Failure(F.STREAM_INTERRUPTED, "", body=step.error[1])
            if not chunk:
                return Failure(F.STREAM_INTERRUPTED, "upstream stream ended early")

    async def _continue(self, resp: web.StreamResponse) -> bool:
        if self._recover is None:
            return False
        # A task, so that a shutdown can cancel a continuation still waiting for its first token.
        self._recovering = asyncio.ensure_future(self._recover(self.c))
        try:
            cont = await self._recovering
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._aborted and task is not None and not task.cancelling():
                return False
            raise
        finally:
            self._recovering = None
        if cont is None:
            return False
        if self._aborted:
            self._close(cont, False)
            cont.series.recovery_failure.inc()
            return False
        self._current = cont
        complete = False
        try:
            complete = await self._relay(resp, cont) is None
        finally:
            self._close(cont, complete)
        if complete:
            cont.series.recovery_success.inc()
            return True
        cont.series.recovery_failure.inc()
        return False

    def _terminal(self, broken: Failure) -> bytes:
        c = self.c
        event = c.redact(broken.body) if broken.body else b""
        return event or c.adapter.terminal_error(broken.detail, broken.cls.value)

    def _close(self, c: Committed, complete: bool) -> None:
        # A complete stream's connection is kept for the next request; any other is dropped,
        # so that the upstream stops generating at once.
        if complete and not self._aborted:
            c.response.finish()
        else:
            c.response.close()
        usage = c.adapter.usage
        c.series.count_tokens(usage)
        if complete:
            c.span.answered(
                model=None,
                finish_reasons=c.adapter.finish_reasons,
                input_tokens=usage.prompt,
                output_tokens=usage.completion,
            )
        else:
            c.span.failed(self.end if self.end in F.__members__.values() else "stream_interrupted")
        c.span.end()


class _IdleWatchdog:
    """`STREAM_IDLE_TIMEOUT_S` with one timer per stream rather than one per read: a read only
    stamps the time, and the timer, when due, re-arms itself or closes the upstream response,
    which ends the pending read."""

    __slots__ = ("_handle", "_idle", "_loop", "_response", "fired", "seen")

    def __init__(self, response: UpstreamResponse, idle: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle = idle
        self._response = response
        self.fired = False
        self.seen = self._loop.time()
        self._handle = self._loop.call_at(self.seen + idle, self._check)

    def _check(self) -> None:
        due = self.seen + self._idle
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self.fired = True
        self._response.close()

    def stop(self) -> None:
        self._handle.cancel()
