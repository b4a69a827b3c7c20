"""The transport toward backends: `Upstream`, and the HTTP one (`sidecar.http1`, whose errors
become `UpstreamError` here; Bedrock's transport, `sidecar.upstream_bedrock`, maps botocore's
likewise). Anything with `send` and `close` is an `Upstream`: tests hand `create_app` a fake one.

One connection pool per backend (its `MAX_CONNECTIONS` is a per-backend pool). Redirects are
never followed. Deadlines (first token, response, stream idle, the chain's budget) are the chain's
and the relay's business: they wrap these calls in their own timers.
"""

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from sidecar.call import UpstreamRequest
from sidecar.failure import FailureClass
from sidecar.http1 import Connection, Exchange, Http1Error, Pool, request_head, target
from sidecar.settings import Backend


class UpstreamError(Exception):
    def __init__(self, cls: FailureClass, detail: str) -> None:
        super().__init__(detail)
        self.cls = cls
        self.detail = detail


# A complete stream's body often ends a read after its terminator (`[DONE]`, `message_stop`):
# that tail is read in the background, so that the connection goes back to the pool instead of
# costing the next request a new TCP and TLS handshake. A tail longer than TAIL_S or TAIL_BYTES
# closes the connection, and so does any tail past TAIL_POOL_SHARE of the pool: an upstream that
# keeps streams open after their terminator never ties up the rest.
TAIL_S = 2.0
TAIL_BYTES = 64 * 1024
TAIL_POOL_SHARE = 0.1


class Tails:
    """The background tail reads of one backend, cancelled when it closes."""

    def __init__(self, pool_size: int) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit = max(1, int(pool_size * TAIL_POOL_SHARE))
        self._closed = False

    def spawn(
        self, read: Callable[[], Coroutine[Any, Any, None]], then: Callable[[], None]
    ) -> bool:
        """Starts `read()`, and calls `then()` once it is over; False, and nothing started, when
        as many tails are being read."""
        if self._closed or len(self._tasks) >= self._limit:
            return False
        task = asyncio.ensure_future(read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A done callback, not a `finally` in `read`: a task cancelled before its first step
        # never runs its body (closing the backend right after a finish), and the connection
        # would be left to the garbage collector.
        task.add_done_callback(lambda _: then())
        return True

    async def cancel(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    @property
    def content_type(self) -> str: ...

    async def read(self) -> bytes:
        """The whole body; `UpstreamError` if it is cut."""

    async def chunk(self) -> Any:
        """The next part of the body as it arrives (bytes, or a decoded event); b"" at a clean
        end; `UpstreamError` if it is cut."""

    def close(self) -> None:
        """Drop the connection: the upstream sees the cancel at once."""

    def finish(self) -> None:
        """The answer is complete: keep the connection for the next request."""


class Upstream(Protocol):
    async def send(self, req: UpstreamRequest) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class HttpResponse:
    """A response read off a `sidecar.http1` connection. Its connection goes back to the pool
    as soon as the whole body is in; what is left is read from the response's buffer."""

    __slots__ = ("_conn", "_ex", "_tails", "headers", "status")

    def __init__(self, conn: Connection, ex: Exchange, tails: Tails | None = None) -> None:
        self._conn = conn
        self._ex = ex
        self._tails = tails
        self.status = ex.status
        assert ex.headers is not None
        self.headers: Mapping[str, str] = ex.headers

    @property
    def content_type(self) -> str:
        raw = self.headers.get("content-type")
        if not raw:
            return "application/octet-stream"
        return raw.partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        ex = self._ex
        if ex.complete:  # the usual case: the body came with the head
            return ex.take()
        parts = []
        while not ex.complete:
            if ex.error is not None:
                raise UpstreamError(FailureClass.SERVER_ERROR, ex.error.what)
            await ex.wait()
            parts.append(ex.take())
            self._conn.took(ex)
        parts.append(ex.take())
        return b"".join(parts)

    async def chunk(self) -> bytes:
        """The next bytes of the body as they arrive; b"" at a clean end."""
        ex = self._ex
        while not ex.chunks:
            if ex.error is not None:
                raise UpstreamError(FailureClass.STREAM_INTERRUPTED, ex.error.what)
            if ex.complete:
                return b""
            await ex.wait()
        data = ex.take()
        self._conn.took(ex)
        return data

    def __del__(self) -> None:
        # Never left holding a place of the pool, whatever its owner forgot. Once the loop is
        # closed (collected at shutdown) there is no pool left to hold, and no loop to close on.
        if not self._ex.released:
            with contextlib.suppress(RuntimeError):
                self._conn.abandon(self._ex)

    def close(self) -> None:
        # An abandoned body drops the connection, so that the upstream sees the cancel at once
        # rather than keep generating tokens.
        self._conn.abandon(self._ex)

    def finish(self) -> None:
        """The answer is complete: keep the connection once the body has ended (see TAIL_S)."""
        if self._ex.released:
            return  # at the end of the body, the connection is already pooled
        if self._tails is None or not self._tails.spawn(self._read_tail, self.close):
            self.close()

    async def _read_tail(self) -> None:
        # Read to the body's end, which pools the connection; any other end drops it (the
        # `then` of Tails.spawn is close()).
        with contextlib.suppress(TimeoutError, UpstreamError):
            async with asyncio.timeout(TAIL_S):
                seen = 0
                while chunk := await self.chunk():
                    seen += len(chunk)
                    if seen > TAIL_BYTES:
                        return


_CLASSES = {"timeout": FailureClass.TIMEOUT, "invalid": FailureClass.INVALID_RESPONSE}


def _upstream_error(e: Http1Error) -> UpstreamError:
    """Before an answer's head every way to fail is a connect error, but for these two."""
    return UpstreamError(_CLASSES.get(e.kind, FailureClass.CONNECT_ERROR), e.what)


class HttpUpstream:
    """The connection pool and sender for one backend (`sidecar.http1`)."""

    def __init__(self, backend: Backend) -> None:
        s = backend.settings
        self.name = backend.name
        self._tails = Tails(s.max_connections)
        self._pool = Pool(s.max_connections, s.connect_timeout_s)

    async def send(self, req: UpstreamRequest) -> UpstreamResponse:
        t = target(req.url, req.encoded)
        body = req.body
        head = request_head(req.method, t, req.headers, len(body))
        pool = self._pool
        fresh = False
        while True:
            try:
                conn = await pool.connection(t, fresh=fresh)
            except Http1Error as e:
                raise _upstream_error(e) from None
            ex = conn.start(head, body, head_only=req.method == "HEAD")
            try:
                while ex.headers is None and ex.error is None:
                    await ex.wait()
            except BaseException:
                conn.abandon(ex)
                raise
            if ex.headers is not None:
                return HttpResponse(conn, ex, self._tails)
            error = ex.error
            assert error is not None
            conn.abandon(ex)
            # A kept connection that the server had closed before it read this request: once
            # more, on a new connection, whose own failure is the answer.
            fresh = True
            if not (error.kind == "closed" and conn.reused and not ex.received):
                raise _upstream_error(error)

    async def close(self) -> None:
        await self._tails.cancel()
        self._pool.close()
