"""The transport toward backends: `Upstream`, and the HTTP one. aiohttp's exceptions become
`UpstreamError` here (Bedrock's transport, `sidecar.upstream_bedrock`, maps botocore's likewise).
Anything with `send` and `close` is an `Upstream`: tests hand `create_app` a fake one.

One pooled `ClientSession` per backend (its `MAX_CONNECTIONS` is a per-backend pool). Redirects are
never followed. Deadlines (first token, response, stream idle, the chain's budget) are the chain's
and the relay's business: they wrap these calls in `asyncio.timeout`.
"""

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import aiohttp
from yarl import URL

from sidecar.call import UpstreamRequest
from sidecar.failure import FailureClass
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
    __slots__ = ("_resp", "_tails", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, tails: Tails | None = None) -> None:
        self._resp = resp
        self._tails = tails
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    @property
    def content_type(self) -> str:
        return self._resp.content_type

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
            raise UpstreamError(FailureClass.SERVER_ERROR, _describe(e)) from None

    async def chunk(self) -> bytes:
        """The next bytes of the body as they arrive; b"" at a clean end."""
        try:
            return await self._resp.content.readany()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
            raise UpstreamError(FailureClass.STREAM_INTERRUPTED, _describe(e)) from None

    def close(self) -> None:
        # close(), not release(): an abandoned body must drop the connection so the upstream
        # sees the cancel at once rather than keep generating tokens.
        self._resp.close()

    def finish(self) -> None:
        """The answer is complete: keep the connection once the body has ended (see TAIL_S)."""
        resp = self._resp
        if resp.content.is_eof():
            resp.release()  # at the end of the body, the connection is already pooled
        elif self._tails is None or not self._tails.spawn(lambda: _read_tail(resp), resp.close):
            resp.close()


async def _read_tail(resp: aiohttp.ClientResponse) -> None:
    try:
        async with asyncio.timeout(TAIL_S):
            seen = 0
            while chunk := await resp.content.readany():
                seen += len(chunk)
                if seen > TAIL_BYTES:
                    break
            else:
                resp.release()
                return
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass  # Tails.spawn's `then` closes the response: the connection is dropped


class HttpUpstream:
    """The connection pool and sender for one backend."""

    def __init__(self, backend: Backend) -> None:
        s = backend.settings
        self.name = backend.name
        self._tails = Tails(s.max_connections)
        self._connector = aiohttp.TCPConnector(limit=s.max_connections, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout_s),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def send(self, req: UpstreamRequest) -> UpstreamResponse:
        try:
            resp = await self._session.request(
                req.method,
                URL(req.url, encoded=True) if req.encoded else req.url,
                headers=req.headers,
                data=req.body or None,
                allow_redirects=False,
            )
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamError(FailureClass.TIMEOUT, "connect timeout") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as e:
            raise UpstreamError(FailureClass.CONNECT_ERROR, _describe(e)) from None
        except aiohttp.ClientResponseError as e:
            raise UpstreamError(
                FailureClass.INVALID_RESPONSE, f"bad response: {e.message}"
            ) from None
        return HttpResponse(resp, self._tails)

    async def close(self) -> None:
        await self._tails.cancel()
        await self._session.close()


def _describe(e: BaseException) -> str:
    # Only the exception class: messages can carry the URL, and URLs may carry credentials.
    match e:
        case aiohttp.ClientConnectorDNSError():
            return "DNS lookup failed"
        case aiohttp.ClientConnectorCertificateError() | aiohttp.ClientSSLError():
            return "TLS handshake failed"
        case aiohttp.ClientConnectorError():
            return "connection refused"
        case aiohttp.ServerDisconnectedError():
            return "upstream closed the connection"
        case aiohttp.ClientPayloadError():
            return "upstream body was cut off"
        case asyncio.TimeoutError():
            return "timeout"
        case _:
            return type(e).__name__
