"""`sidecar.http1` on real loopback sockets: how an answer's body is framed and read, when a
connection is kept and when it is dropped, what goes out on the wire, TLS, and the pool's limit.
The failure classes these become are `test_upstream`'s business."""

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import sidecar.http1 as http1
from sidecar.http1 import Connection, Exchange, Http1Error, Pool, request_head, target


@dataclass
class Raw:
    """A TCP server that a test scripts byte for byte; it records each request head it reads
    and the client port of each connection."""

    url: str = ""
    heads: list[bytes] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Raw], Awaitable[None]]


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[Raw]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script, tls: ssl.SSLContext | None = None) -> Raw:
        r = Raw()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            r.ports.append(writer.get_extra_info("peername")[1])
            try:
                await script(reader, writer, r)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                writer.close()
                r.closed.set()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        scheme = "https" if tls else "http"
        r.url = f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"
        return r

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def head_of(reader: asyncio.StreamReader, r: Raw) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    r.heads.append(head)
    return head


def answer(body: bytes, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def keep_answering(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
    while True:
        await head_of(reader, r)
        w.write(answer(b"ok"))
        await w.drain()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool(limit=10, connect_timeout_s=2)
    yield p
    p.close()


async def exchange(pool: Pool, url: str, method: str = "GET") -> tuple[Connection, Exchange]:
    t = target(url, False)
    conn = await pool.connection(t)
    ex = conn.start(request_head(method, t, {}, 0), b"", head_only=method == "HEAD")
    while ex.headers is None and ex.error is None:
        await ex.wait()
    return conn, ex


async def body_of(ex: Exchange) -> bytes:
    parts = []
    while not ex.complete and ex.error is None:
        await ex.wait()
        parts.append(ex.take())
    if ex.error is not None:
        raise ex.error
    return b"".join([*parts, ex.take()])


async def test_a_content_length_answer_returns_its_connection_to_the_pool_when_complete(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    r = await raw(keep_answering)
    for _ in range(3):
        _, ex = await exchange(pool, r.url)
        assert ex.released and pool.in_use == 0  # pooled before the body was even read
        assert await body_of(ex) == b"ok"
    assert len(r.ports) == 1 and len(r.heads) == 3


async def test_a_chunked_body_is_read_as_its_chunks_arrive_and_the_connection_kept(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    gate = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await w.drain()
        await gate.wait()
        w.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await keep_answering(reader, w, r)

    r = await raw(chunked)
    _, ex = await exchange(pool, r.url)
    while not ex.chunks:
        await ex.wait()
    assert (ex.take(), ex.complete) == (b"first", False)
    gate.set()
    assert await body_of(ex) == b"second"
    await exchange(pool, r.url)
    assert len(r.ports) == 1


async def test_a_body_without_a_length_ends_with_the_connection_which_is_not_kept(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    async def until_close(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")

    r = await raw(until_close)
    _, ex = await exchange(pool, r.url)
    assert await body_of(ex) == b"all of it"
    assert pool.in_use == 0 and not pool._idle.get((False, "127.0.0.1", ex_port(r)))


def ex_port(r: Raw) -> int:
    return int(r.url.rsplit(":", 1)[1].split("/")[0])


async def test_an_answer_with_connection_close_is_not_reused(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    async def closing(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(answer(b"ok", "Connection: close"))
        await w.drain()
        await asyncio.sleep(1)

    r = await raw(closing)
    for _ in range(2):
        _, ex = await exchange(pool, r.url)
        assert await body_of(ex) == b"ok"
    assert len(r.ports) == 2


async def test_a_head_answer_has_no_body_whatever_its_content_length_says(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    async def head(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        await asyncio.sleep(1)

    r = await raw(head)
    async with asyncio.timeout(0.5):
        _, ex = await exchange(pool, r.url, method="HEAD")
        assert (ex.status, await body_of(ex)) == (200, b"")
    assert r.heads[0].startswith(b"HEAD /x HTTP/1.1\r\n")


async def test_an_interim_100_answer_is_passed_over_for_the_real_one(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    async def interim(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"real", "X-Which: final"))
        await asyncio.sleep(1)

    r = await raw(interim)
    _, ex = await exchange(pool, r.url)
    assert ex.headers is not None
    assert (ex.status, ex.headers["x-which"], await body_of(ex)) == (200, "final", b"real")


async def test_bytes_after_a_complete_answer_drop_its_connection(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    async def chatty(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(answer(b"ok"))
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        await w.drain()
        await keep_answering(reader, w, r)

    r = await raw(chatty)
    await exchange(pool, r.url)
    await r.closed.wait()  # the client hung up on the unasked-for answer
    _, ex = await exchange(pool, r.url)
    assert await body_of(ex) == b"ok"
    assert len(r.ports) == 2


async def test_a_gzip_body_in_chunks_is_decompressed_as_it_arrives(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    packed = gzip.compress(b"data: one\n\n" * 200)
    half = len(packed) // 2

    async def zipped(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (packed[:half], packed[half:]):
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
            await w.drain()
            await asyncio.sleep(0.02)
        w.write(b"0\r\n\r\n")
        await asyncio.sleep(1)

    r = await raw(zipped)
    _, ex = await exchange(pool, r.url)
    assert await body_of(ex) == b"data: one\n\n" * 200
    assert b"accept-encoding: gzip, deflate\r\n" in r.heads[0]


async def test_a_corrupt_gzip_body_is_a_cut_body(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    async def corrupt(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(answer(b"not gzip at all", "Content-Encoding: gzip"))
        await asyncio.sleep(1)

    r = await raw(corrupt)
    _, ex = await exchange(pool, r.url)
    with pytest.raises(Http1Error) as e:
        await body_of(ex)
    assert e.value.kind == "cut"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.calls.append("close")


async def test_reading_pauses_while_more_than_high_water_waits_and_resumes_once_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http1, "HIGH_WATER", 10)
    conn = Connection(Pool(limit=1, connect_timeout_s=1), (False, "h", 80))
    transport = FakeTransport()
    conn.connection_made(transport)
    ex = conn.start(b"GET / HTTP/1.1\r\n\r\n", b"", head_only=False)
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nsmall\r\n")
    assert transport.calls == []
    conn.data_received(b"10\r\n" + b"x" * 16 + b"\r\n")
    assert transport.calls == ["pause"]
    assert ex.take() == b"small" + b"x" * 16
    conn.took(ex)
    assert transport.calls == ["pause", "resume"]


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    t = target("http://127.0.0.1:1/x", False)
    for bad in ({"x-a": "1\r\nx-injected: 2"}, {"x-a\nb": "1"}):
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            request_head("POST", t, bad, 0)


def test_the_request_head_has_the_host_a_length_and_the_callers_headers_as_given() -> None:
    t = target("http://example.test:8080/v1/chat?q=1", False)
    head = request_head("POST", t, {"content-type": "application/json", "x-b": "2"}, 7)
    assert head == (
        b"POST /v1/chat?q=1 HTTP/1.1\r\nhost: example.test:8080\r\naccept: */*\r\n"
        b"accept-encoding: gzip, deflate\r\ncontent-length: 7\r\n"
        b"content-type: application/json\r\nx-b: 2\r\n\r\n"
    )
    default_port = target("https://example.test/v1", False)
    assert b"host: example.test\r\n" in request_head("GET", default_port, {}, 0)
    assert b"content-length" not in request_head("GET", default_port, {}, 0)
    assert b"content-length: 0\r\n" in request_head("POST", default_port, {}, 0)


def test_credentials_in_the_url_go_out_as_basic_auth_unless_the_request_has_its_own() -> None:
    t = target("http://user:pass@127.0.0.1:1/x", False)
    assert b"authorization: Basic dXNlcjpwYXNz\r\n" in request_head("GET", t, {}, 0)
    own = request_head("GET", t, {"authorization": "Bearer k"}, 0)
    assert b"Basic" not in own and b"authorization: Bearer k\r\n" in own
    assert b"user" not in own.split(b"\r\n")[0]  # never in the request line


def test_a_url_that_is_not_absolute_http_is_refused() -> None:
    for url in ("ftp://h/x", "/relative", "http:///nohost"):
        with pytest.raises(ValueError, match="absolute"):
            target(url, False)


async def test_an_idle_connection_older_than_keepalive_s_is_closed_not_reused(
    raw: Callable[..., Awaitable[Raw]], pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.05)
    r = await raw(keep_answering)
    await exchange(pool, r.url)
    await asyncio.sleep(0.1)
    await exchange(pool, r.url)
    assert len(r.ports) == 2
    await wait_until(r.closed.is_set, what="the stale connection closed")


async def test_a_waiter_cancelled_after_its_turn_came_passes_the_turn_on(
    raw: Callable[..., Awaitable[Raw]],
) -> None:
    r = await raw(keep_answering)
    pool = Pool(limit=1, connect_timeout_s=1)
    t = target(r.url, False)
    held = await pool.connection(t)
    first = asyncio.create_task(pool.connection(t))
    second = asyncio.create_task(pool.connection(t))
    await asyncio.sleep(0)
    pool.discard(held)  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    conn = await asyncio.wait_for(second, 1)
    assert pool.in_use == 1
    pool.discard(conn)
    assert pool.in_use == 0
    pool.close()


async def test_closing_the_pool_closes_its_idle_connections(
    raw: Callable[..., Awaitable[Raw]], pool: Pool
) -> None:
    r = await raw(keep_answering)
    await exchange(pool, r.url)
    pool.close()
    await asyncio.wait_for(r.closed.wait(), 1)
    with pytest.raises(Http1Error):
        await pool.connection(target(r.url, False))


def certificate(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    cert, key = certificate(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert


async def test_a_tls_backend_whose_certificate_is_not_trusted_is_a_tls_failure(
    raw: Callable[..., Awaitable[Raw]], pool: Pool, tls_server: tuple[ssl.SSLContext, Path]
) -> None:
    r = await raw(keep_answering, tls=tls_server[0])
    with pytest.raises(Http1Error) as e:
        await pool.connection(target(r.url, False))
    assert (e.value.kind, e.value.what) == ("tls", "TLS handshake failed")
    assert pool.in_use == 0


async def test_a_tls_backend_with_a_trusted_certificate_is_answered_over_tls(
    raw: Callable[..., Awaitable[Raw]],
    pool: Pool,
    tls_server: tuple[ssl.SSLContext, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trusting = ssl.create_default_context(cafile=str(tls_server[1]))
    monkeypatch.setattr(http1, "_tls_context", trusting)
    r = await raw(keep_answering, tls=tls_server[0])
    conn, ex = await exchange(pool, r.url)
    assert await body_of(ex) == b"ok"
    assert conn.transport is not None and conn.transport.get_extra_info("ssl_object") is not None


async def test_an_unresolvable_host_is_a_dns_failure(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def nowhere(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", nowhere)
    with pytest.raises(Http1Error) as e:
        await pool.connection(target("http://backend.invalid/x", False))
    assert (e.value.kind, e.value.what, pool.in_use) == ("dns", "DNS lookup failed", 0)


@pytest.mark.parametrize(("ttl", "lookups"), [(60.0, 1), (0.0, 2)])
async def test_a_hosts_addresses_are_looked_up_once_per_dns_ttl_s(
    raw: Callable[..., Awaitable[Raw]],
    pool: Pool,
    monkeypatch: pytest.MonkeyPatch,
    ttl: float,
    lookups: int,
) -> None:
    async def closing(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(answer(b"ok", "Connection: close"))
        await w.drain()

    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    asked: list[object] = []

    async def counting(*args: Any, **kwargs: Any) -> Any:
        asked.append(args[0])
        return await real(*args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    monkeypatch.setattr(http1, "DNS_TTL_S", ttl)
    r = await raw(closing)
    for _ in range(2):  # two connections: the first is not kept
        _, ex = await exchange(pool, r.url)
        assert await body_of(ex) == b"ok"
    assert (len(r.ports), len(asked)) == (2, lookups)


@pytest.mark.parametrize("tail", [b"garbage", b"HTTP/1.1 2"], ids=["not-http", "a-partial-head"])
async def test_bytes_after_a_complete_answer_in_the_same_packet_drop_its_connection(
    raw: Callable[..., Awaitable[Raw]], pool: Pool, tail: bytes
) -> None:
    async def chatty(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(answer(b"ok") + tail)
        await w.drain()
        await keep_answering(reader, w, r)

    r = await raw(chatty)
    _, ex = await exchange(pool, r.url)
    assert await body_of(ex) == b"ok"
    _, ex = await exchange(pool, r.url)  # not on the connection whose parser is mid-message
    assert ex.error is None and await body_of(ex) == b"ok"
    assert len(r.ports) == 2


async def test_an_answer_whose_head_is_larger_than_max_head_bytes_is_invalid(
    raw: Callable[..., Awaitable[Raw]], pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "MAX_HEAD_BYTES", 100)

    async def huge_head(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
        for _ in range(10):  # one header line that does not end
            await asyncio.sleep(0.01)
            w.write(b"p" * 50)
        await asyncio.sleep(1)

    r = await raw(huge_head)
    _, ex = await exchange(pool, r.url)
    assert ex.headers is None and ex.error is not None
    assert (ex.error.kind, ex.error.what) == ("invalid", "bad response: its head is too large")
    assert pool.in_use == 0


async def test_a_body_in_the_packet_of_its_head_does_not_count_against_max_head_bytes(
    raw: Callable[..., Awaitable[Raw]], pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "MAX_HEAD_BYTES", 100)

    async def big_body(reader: asyncio.StreamReader, w: asyncio.StreamWriter, r: Raw) -> None:
        await head_of(reader, r)
        w.write(answer(b"b" * 1000))
        await asyncio.sleep(1)

    r = await raw(big_body)
    _, ex = await exchange(pool, r.url)
    assert await body_of(ex) == b"b" * 1000
