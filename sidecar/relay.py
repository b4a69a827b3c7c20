"""The answer back to the caller: a JSON reply, or a committed stream relayed as it arrives.

After the commit point nothing can fall back: a cut, a stall longer than `STREAM_IDLE_TIMEOUT_S`,
a malformed event or an in-band error ends the stream with one terminal error event in the
caller's dialect and no terminator, so a truncated answer never looks complete. A stream that
finished (finish_reason / stop_reason) but lost its terminator gets one added.
"""

import asyncio
from collections.abc import Mapping

from aiohttp import web

from sidecar.chain import Committed, Reply
from sidecar.failure import FailureClass
from sidecar.upstream import UpstreamError

F = FailureClass

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def reply(r: Reply, headers: Mapping[str, str]) -> web.Response:
    resp = web.Response(body=r.body, status=r.status, headers={**r.headers, **headers})
    resp.content_type = r.content_type
    return resp


class StreamRelay:
    """Relays one committed stream; `abort()` ends it early with a terminal error (drain)."""

    __slots__ = ("_aborted", "c", "failure")

    def __init__(self, committed: Committed) -> None:
        self.c = committed
        self.failure: FailureClass | None = None
        self._aborted = False

    def abort(self) -> None:
        self._aborted = True
        self.c.response.close()

    async def run(
        self, request: web.Request, headers: Mapping[str, str], idle_timeout: float
    ) -> web.StreamResponse:
        c = self.c
        resp = web.StreamResponse(status=200, headers={**SSE_HEADERS, **headers})
        try:
            await resp.prepare(request)
            await resp.write(c.head)
            if c.step.error is not None:
                # The batch that committed also carried the failure.
                await self._fail(resp, F.STREAM_INTERRUPTED, "", event=c.step.error[1])
            elif not c.step.done:
                await self._pump(resp, idle_timeout)
        finally:
            c.response.close()
            usage = c.adapter.usage
            c.series.prompt_tokens.inc(usage.prompt)
            c.series.completion_tokens.inc(usage.completion)
        await resp.write_eof()
        return resp

    async def _pump(self, resp: web.StreamResponse, idle_timeout: float) -> None:
        c, adapter = self.c, self.c.adapter
        finished = c.step.finished
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    chunk = await c.response.chunk()
            except TimeoutError:
                return await self._fail(resp, F.STREAM_TIMEOUT, "upstream stream stalled")
            except UpstreamError:
                return await self._fail(resp, F.STREAM_INTERRUPTED, "upstream stream was cut off")
            step = adapter.feed(chunk) if chunk else adapter.end()
            if step.out:
                await resp.write(step.out)
            if step.error is not None:
                return await self._fail(resp, F.STREAM_INTERRUPTED, "", event=step.error[1])
            finished = finished or step.finished
            if step.done:
                return None
            if not chunk:
                if finished:
                    await resp.write(adapter.terminator())
                    return None
                return await self._fail(resp, F.STREAM_INTERRUPTED, "upstream stream ended early")

    async def _fail(
        self, resp: web.StreamResponse, cls: FailureClass, message: str, event: bytes = b""
    ) -> None:
        if self._aborted:
            cls, message, event = F.STREAM_INTERRUPTED, "the sidecar is shutting down", b""
        self.failure = cls
        self.c.series.failures[cls].inc()
        await resp.write(self.c.redact(event) or self.c.adapter.terminal_error(message, cls.value))
