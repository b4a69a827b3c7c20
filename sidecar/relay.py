"""The answer back to the caller: a JSON reply, or a committed stream relayed as it arrives.

After the commit point nothing can fall back: a cut, a stall longer than `STREAM_IDLE_TIMEOUT_S`,
a malformed event or an in-band error ends the stream with one terminal error event in the
caller's dialect and no terminator, so a truncated answer never looks complete. A stream that
finished (finish_reason / stop_reason) but lost its terminator gets one added.

Stream recovery (CONTRACT §5): when a text-only stream in one choice breaks, the chain may hand
over a continuation from a later `PREFILL=true` backend; its content is relayed into the same
stream so the caller receives one whole answer. If the continuation fails in any way, the caller
gets the terminal error of the original failure, never the continuation's.
"""

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from sidecar.chain import AttemptRecord, Committed, Reply
from sidecar.failure import FailureClass
from sidecar.upstream import UpstreamError, UpstreamResponse

F = FailureClass
log = logging.getLogger("sidecar.relay")

# Lower-case names throughout, so that a merge replaces rather than doubles a header.
SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def reply(r: Reply, headers: Mapping[str, str]) -> web.Response:
    return web.Response(
        body=r.body,
        status=r.status,
        headers={**r.headers, **headers, "content-type": r.content_type},
    )


@dataclass(slots=True)
class Broken:
    cls: FailureClass
    message: str
    # The upstream's own error event, already in the caller's dialect, if it sent one.
    event: bytes = b""


class StreamRelay:
    """Relays one committed stream; `abort()` ends it early with a terminal error (drain)."""

    __slots__ = ("_aborted", "_attempts", "_current", "_recovering", "c", "client_gone", "end")

    def __init__(self, committed: Committed, attempts: list[AttemptRecord]) -> None:
        self.c = committed
        self._attempts = attempts
        # How the stream ended, for the log line: "complete", "recovered" or a failure class.
        self.end = "complete"
        self._current = committed
        self._recovering: asyncio.Future[Committed | None] | None = None
        self._aborted = False
        self.client_gone = False

    def abort(self) -> None:
        self._aborted = True
        self._current.response.close()
        if self._recovering is not None:
            self._recovering.cancel()

    async def run(
        self, request: web.BaseRequest, headers: Mapping[str, str], idle_timeout: float
    ) -> web.StreamResponse:
        c = self.c
        resp = web.StreamResponse(status=200, headers={**SSE_HEADERS, **c.headers, **headers})
        complete = False  # the upstream's stream ended as it should
        try:
            await resp.prepare(request)
            broken = await self._relay(resp, c, idle_timeout)
            complete = broken is None
            if broken is not None and not self._aborted:
                c.response.close()  # hang up now: it must not go on generating during a recovery
                c.series.failures[broken.cls].inc()
                self.end = broken.cls.value
                if await self._recover(resp):
                    self.end, broken = "recovered", None
            if broken is not None:
                if self._aborted:  # the shutdown's doing, not the backend's
                    broken = Broken(F.STREAM_INTERRUPTED, "the sidecar is shutting down")
                    self.end = "shutdown"
                await self._terminal(resp, broken)
            await resp.write_eof()
        except ConnectionResetError:
            self.client_gone = True
        finally:
            self._close(c, complete)
        return resp

    async def _relay(
        self, resp: web.StreamResponse, c: Committed, idle_timeout: float
    ) -> Broken | None:
        await resp.write(c.head)
        if c.step.error is not None:
            # The batch that committed also carried the failure.
            return Broken(F.STREAM_INTERRUPTED, "", c.step.error[1])
        if c.step.done:
            return None
        return await self._pump(resp, c, idle_timeout)

    async def _pump(
        self, resp: web.StreamResponse, c: Committed, idle_timeout: float
    ) -> Broken | None:
        dog = _IdleWatchdog(c.response, idle_timeout)
        try:
            return await self._watched(resp, c, dog)
        finally:
            dog.stop()

    async def _watched(
        self, resp: web.StreamResponse, c: Committed, dog: "_IdleWatchdog"
    ) -> Broken | None:
        adapter = c.adapter
        finished = c.step.finished
        now = asyncio.get_running_loop().time
        while True:
            try:
                chunk = await c.response.chunk()
            except UpstreamError:
                chunk = None
            if self._aborted:
                return Broken(F.STREAM_INTERRUPTED, "the sidecar is shutting down")
            if dog.fired:
                return Broken(F.STREAM_TIMEOUT, "upstream stream stalled")
            if chunk is None:
                return Broken(F.STREAM_INTERRUPTED, "upstream stream was cut off")
            dog.seen = now()
            try:
                step = adapter.feed(chunk) if chunk else adapter.end()
            except Exception:  # a shape the translation did not expect: the upstream's fault
                log.warning("unreadable stream event", exc_info=True)
                return Broken(F.STREAM_INTERRUPTED, "upstream sent a malformed stream event")
            if step.out:
                await resp.write(step.out)
                dog.seen = now()  # time spent waiting on a slow caller is not upstream silence
            if step.error is not None:
                return Broken(F.STREAM_INTERRUPTED, "", step.error[1])
            finished = finished or step.finished
            if step.done:
                return None
            if not chunk:
                if finished:
                    await resp.write(adapter.terminator())
                    return None
                return Broken(F.STREAM_INTERRUPTED, "upstream stream ended early")

    async def _recover(self, resp: web.StreamResponse) -> bool:
        c = self.c
        if not c.adapter.text_only or c.call.body is None:
            return False
        # A task, so that a shutdown can cancel a continuation still waiting for its first token.
        self._recovering = asyncio.ensure_future(c.chain.recover(c, self._attempts))
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
            idle = cont.member.config.settings.stream_idle_timeout_s
            complete = await self._relay(resp, cont, idle) is None
        finally:
            self._close(cont, complete)
        if complete:
            cont.series.recovery_success.inc()
            return True
        cont.series.recovery_failure.inc()
        return False

    async def _terminal(self, resp: web.StreamResponse, broken: Broken) -> None:
        c = self.c
        event = c.redact(broken.event) if broken.event else b""
        await resp.write(event or c.adapter.terminal_error(broken.message, broken.cls.value))

    def _close(self, c: Committed, complete: bool) -> None:
        # A complete stream's connection is kept for the next request; any other is dropped,
        # so that the upstream stops generating at once.
        if complete and not self._aborted:
            c.response.finish()
        else:
            c.response.close()
        c.series.count_tokens(c.adapter.usage.prompt, c.adapter.usage.completion)


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
