"""A lean HTTP/1.1 client for the backends: keep-alive connections on asyncio protocols, the
responses parsed by llhttp (`httptools`, the parser uvicorn serves with).

Why not aiohttp's `ClientSession`: per request it builds a `ClientRequest`, a `ClientResponse`,
a body payload, a writer task, timers and a multidict of headers or three; that is about as much
CPU as aiohttp's whole server side of the same exchange (README "Performance": a bare relay on
this client costs 0.47x the CPU per stream of the same relay on `ClientSession`). What the
sidecar needs of a client is narrow: one request out on a pooled connection, its response read
as it arrives. That is what this does, and no more:

- HTTP/1.1 over TCP or TLS (the system's trust store, the host checked), one request at a time
  per connection, kept alive unless either side says otherwise;
- at most `limit` connections in use per backend; a request past it waits for one;
- whether a connection was reused and whether anything came back on it, so that
  `sidecar.upstream` can retry once, on a new one, a request whose kept connection the server
  had closed before it read the request;
- bodies by Content-Length, chunked, or to the end of the connection; gzip and deflate answers
  decompressed (it asks for them, as aiohttp did);
- reading pauses while more than `HIGH_WATER` bytes wait to be read (a slow caller);
- no redirects, cookies, proxies, or `Expect: 100-continue`.

Errors are `Http1Error`s whose `what` names the failure without the URL (URLs may carry
credentials); `sidecar.upstream` maps them to failure classes.
"""

import asyncio
import socket
import ssl
import zlib
from base64 import b64encode
from collections import deque
from functools import lru_cache
from typing import NamedTuple, cast

import aiohappyeyeballs
import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

# Past this many buffered body bytes the connection stops reading until they are taken.
HIGH_WATER = 256 * 1024
# An idle connection older than this is closed rather than reused: a NAT or load balancer on
# the way may have forgotten it without a word (aiohttp's keep-alive timeout, too).
KEEPALIVE_S = 15.0
# How long a host's resolved addresses are used for new connections.
DNS_TTL_S = 60.0
# An answer's head past this many bytes is refused (aiohttp allowed 8190 bytes a line): an
# upstream must not grow the sidecar's memory with headers alone.
MAX_HEAD_BYTES = 64 * 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Http1Error(Exception):
    """`kind`: "connect" (nothing was answered), "timeout" (connect), "tls", "dns",
    "closed" (closed before an answer), "invalid" (not HTTP) or "cut" (the body ended early)."""

    def __init__(self, kind: str, what: str) -> None:
        super().__init__(what)
        self.kind = kind
        self.what = what


class Target(NamedTuple):
    tls: bool
    host: str
    port: int
    # What the request line and Host header carry.
    path: str
    host_header: str
    authorization: str | None


@lru_cache(maxsize=1024)
def target(url: str, encoded: bool) -> Target:
    """The parts of `url` a request needs; normalised by yarl unless `encoded` (sent as given)."""
    u = URL(url, encoded=encoded)
    if u.scheme not in _DEFAULT_PORTS or not u.raw_host:
        raise ValueError("the URL must be absolute, http or https")
    host = u.raw_host
    port = u.port or _DEFAULT_PORTS[u.scheme]
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == _DEFAULT_PORTS[u.scheme] else f"{shown}:{port}"
    auth = None
    if u.user is not None:
        auth = "Basic " + b64encode(f"{u.user}:{u.password or ''}".encode()).decode()
    return Target(u.scheme == "https", host, port, u.raw_path_qs, host_header, auth)


_tls_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _tls_context
    if _tls_context is None:
        _tls_context = ssl.create_default_context()
    return _tls_context


def _check(text: str) -> str:
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError("a header name or value may not contain CR, LF or NUL")
    return text


def request_head(method: str, t: Target, headers: dict[str, str], length: int) -> bytes:
    lines = [f"{method} {t.path} HTTP/1.1\r\nhost: {t.host_header}\r\n"]
    if "accept" not in headers:
        lines.append("accept: */*\r\n")
    if "accept-encoding" not in headers:
        lines.append("accept-encoding: gzip, deflate\r\n")
    if t.authorization is not None and "authorization" not in headers:
        lines.append(f"authorization: {t.authorization}\r\n")
    if length or method in _BODY_METHODS:
        lines.append(f"content-length: {length}\r\n")
        if length and "content-type" not in headers:
            lines.append("content-type: application/octet-stream\r\n")
    for name, value in headers.items():
        if name != "host" and name != "content-length":
            lines.append(f"{_check(name)}: {_check(value)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


class Exchange:
    """One response as it arrives: its head, the body bytes not yet taken, how it ended."""

    __slots__ = (
        "_inflate",
        "_waiter",
        "buffered",
        "chunks",
        "complete",
        "error",
        "framed",
        "head_only",
        "headers",
        "received",
        "released",
        "status",
    )

    def __init__(self, head_only: bool) -> None:
        self.status = 0
        self.headers: CIMultiDictProxy[str] | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.error: Http1Error | None = None
        self.received = False
        # The connection went back to its pool (or was dropped): nothing more arrives.
        self.released = False
        self.head_only = head_only
        self._inflate: zlib._Decompress | None = None
        # Content-Length or chunked: the body does not end with the connection.
        self.framed = False
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self) -> None:
        """Until something more arrived (or the connection ended)."""
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def head(self, status: int, names: list[str], values: list[str]) -> None:
        self.status = status
        headers: CIMultiDict[str] = CIMultiDict(zip(names, values, strict=True))
        self.headers = CIMultiDictProxy(headers)
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = zlib.decompressobj(47)  # gzip or zlib, by the header it starts with
        self.framed = self.head_only or (
            "content-length" in headers
            or "chunked" in headers.get("transfer-encoding", "").lower()
            or status in (204, 304)
        )

    def body(self, data: bytes) -> None:
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error:
                self.error = Http1Error("cut", "upstream body was cut off")
                return
        if data:
            self.chunks.append(data)
            self.buffered += len(data)

    def end(self) -> None:
        if self._inflate is not None and (rest := self._inflate.flush()):
            self.chunks.append(rest)
            self.buffered += len(rest)
        self.complete = True

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        return data


class Connection(asyncio.Protocol):
    """One connection, and the exchange on it (one at a time)."""

    def __init__(self, pool: "Pool", key: tuple[bool, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.reused = False
        self.lost = False
        self.idle_since = 0.0
        self._paused = False
        self._names: list[str] = []
        self._values: list[str] = []
        self._head_bytes = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            # Bytes while idle: this connection cannot be trusted again.
            self.close()
            return
        ex.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            if ex.released:
                self.close()  # not HTTP after a complete answer: the parser cannot go on
            elif ex.error is None:
                if ex.headers is None:
                    ex.error = Http1Error("invalid", f"bad response: {type(e).__name__}")
                else:
                    ex.error = Http1Error("cut", "upstream body was cut off")
        if ex.headers is None and ex.error is None:
            # All of it was head (llhttp buffers a header line until it ends): count it.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                ex.error = Http1Error("invalid", "bad response: its head is too large")
        if ex.error is not None and not ex.released:
            self._drop(ex)
        elif (
            not ex.released
            and ex.buffered > HIGH_WATER
            and self.transport is not None
            and not self._paused
        ):
            self._paused = True
            self.transport.pause_reading()
        ex.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        ex = self.ex
        if ex is None:
            return
        if not ex.complete and ex.error is None:
            if ex.headers is None:
                ex.error = Http1Error("closed", "upstream closed the connection")
            elif not ex.framed:
                ex.end()  # a body that ends with the connection has ended
            else:
                ex.error = Http1Error("cut", "upstream body was cut off")
        self._drop(ex)
        ex.wake()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.ex is None:
            # Bytes after the answer, in its packet: the parser is mid-message or failed.
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._names.append(name.decode("utf-8", "surrogateescape"))
        self._values.append(value.decode("utf-8", "surrogateescape"))

    def on_headers_complete(self) -> None:
        names, values = self._names, self._values
        self._names, self._values = [], []
        status = self._parser.get_status_code()
        ex = self.ex
        if ex is None:  # an answer nobody asked for
            self.close()
            return
        if ex.headers is not None or status < 200:
            return  # an interim answer (100 Continue): the real one follows
        ex.head(status, names, values)
        if ex.head_only:
            self._done(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is not None and not ex.complete:
            ex.body(body)

    def on_message_complete(self) -> None:
        ex = self.ex
        # Not after a decompression error: that exchange is dropped, not complete.
        if ex is not None and ex.headers is not None and not ex.complete and ex.error is None:
            self._done(ex)

    # the exchange's side

    def start(self, head: bytes, body: bytes, head_only: bool) -> Exchange:
        self.ex = ex = Exchange(head_only)
        self._head_bytes = 0
        assert self.transport is not None
        if len(body) < 65536:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        return ex

    def _done(self, ex: Exchange) -> None:
        """The whole answer is in: the connection goes back to the pool at once, as aiohttp's
        did; what the exchange holds is read from its buffer."""
        ex.end()
        if not ex.released:
            ex.released = True
            self.ex = None
            self._resume()
            self.pool.release(self, keep=not ex.head_only and self._parser.should_keep_alive())

    def _drop(self, ex: Exchange) -> None:
        if not ex.released:
            ex.released = True
            self.ex = None
            self.pool.discard(self)
        if not ex.complete and ex.error is None:
            # Dropped from this side (a close, a deadline): a read waiting on it ends now.
            ex.error = Http1Error("cut", "upstream body was cut off")
            ex.wake()

    def took(self, ex: Exchange) -> None:
        """The reader took what was buffered: read on, if reading was paused for it."""
        if self._paused and self.ex is ex:
            self._resume()

    def _resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def abandon(self, ex: Exchange) -> None:
        """The reader gave up on `ex` before its end: the connection is dropped."""
        if not ex.released:
            self._drop(ex)

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """The connections of one backend: at most `limit` in use at once, idle ones kept."""

    def __init__(self, limit: int, connect_timeout_s: float) -> None:
        self.limit = limit
        self.connect_timeout_s = connect_timeout_s
        self.in_use = 0
        self._idle: dict[tuple[bool, str, int], list[Connection]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._dns: dict[tuple[str, int], tuple[float, list[aiohappyeyeballs.AddrInfoType]]] = {}
        self.closed = False

    async def _slot(self) -> None:
        while self.in_use >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif self.in_use < self.limit:
                    self._wake_one()  # it was this one's turn: pass it on
                raise
        self.in_use += 1

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _free(self) -> None:
        self.in_use -= 1
        self._wake_one()

    async def connection(self, t: Target, *, fresh: bool = False) -> Connection:
        """A connection to `t`, counted as in use until `release` or `discard`; a new one if
        `fresh`, else a kept one when there is one."""
        if self.closed:
            raise Http1Error("connect", "the backend is closed")
        await self._slot()
        try:
            key = (t.tls, t.host, t.port)
            idle = None if fresh else self._idle.get(key)
            if idle:
                stale = asyncio.get_running_loop().time() - KEEPALIVE_S
                while idle:
                    conn = idle.pop()
                    if conn.idle_since < stale:
                        conn.close()
                    elif not conn.lost:
                        conn.reused = True
                        return conn
            return await self._connect(t, key)
        except BaseException:
            self._free()
            raise

    async def _connect(self, t: Target, key: tuple[bool, str, int]) -> Connection:
        loop = asyncio.get_running_loop()
        sock = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                addresses = await self._resolve(t.host, t.port)
                # Happy eyeballs (RFC 8305), as aiohttp does: an address family that black-holes
                # its packets costs 0.25 s, not the connect timeout.
                sock = await aiohappyeyeballs.start_connection(
                    addresses, happy_eyeballs_delay=0.25, interleave=1
                )
                _, conn = await loop.create_connection(
                    lambda: Connection(self, key),
                    sock=sock,
                    ssl=_tls() if t.tls else None,
                    server_hostname=t.host if t.tls else None,
                )
        except BaseException as e:
            if sock is not None:
                sock.close()
            match e:
                case TimeoutError():
                    raise Http1Error("timeout", "connect timeout") from None
                case ssl.SSLError() | ssl.CertificateError():
                    raise Http1Error("tls", "TLS handshake failed") from None
                case socket.gaierror():
                    raise Http1Error("dns", "DNS lookup failed") from None
                case OSError():
                    raise Http1Error("connect", "connection refused") from None
            raise
        return conn

    async def _resolve(self, host: str, port: int) -> list[aiohappyeyeballs.AddrInfoType]:
        """The host's addresses, kept for DNS_TTL_S (aiohttp's `ttl_dns_cache` was the same)."""
        now = asyncio.get_running_loop().time()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
        )
        infos: list[aiohappyeyeballs.AddrInfoType] = list(found)
        if not infos:
            raise socket.gaierror("no address")
        self._dns[(host, port)] = (now + DNS_TTL_S, infos)
        return infos

    def release(self, conn: Connection, *, keep: bool) -> None:
        """The answer on `conn` is complete: kept for the next request, if it may be."""
        transport = conn.transport
        if keep and not conn.lost and not self.closed and transport and not transport.is_closing():
            conn.idle_since = now = asyncio.get_running_loop().time()
            idle = self._idle.setdefault(conn.key, [])
            while idle and idle[0].idle_since < now - KEEPALIVE_S:
                idle.pop(0).close()
            idle.append(conn)
        else:
            conn.close()
        self._free()

    def discard(self, conn: Connection) -> None:
        conn.close()
        self._free()

    def forget(self, conn: Connection) -> None:
        """`conn` was closed (by either side): out of the idle list, if it was there."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
