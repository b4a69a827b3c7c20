"""`HttpUpstream` on real loopback sockets: what one backend's pool sends, what it never does
(follow a redirect, exceed MAX_CONNECTIONS, keep cookies), and which `FailureClass` each way a
connection can fail becomes."""

import asyncio
import gc
import gzip
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from conftest import wait_until
from fakes.loopback import lower_headers

import sidecar.upstream as sidecar_upstream
from sidecar.call import UpstreamRequest
from sidecar.config import load_config
from sidecar.failure import FailureClass
from sidecar.http1 import Connection, Pool
from sidecar.settings import Backend
from sidecar.upstream import HttpResponse, HttpUpstream, Tails, UpstreamError, UpstreamResponse


def backend(url: str, **settings: str) -> Backend:
    env = {"SIDECAR_BACKENDS": "b", "B_BASE_URL": url}
    env.update({f"B_{k.upper()}": v for k, v in settings.items()})
    return load_config(env).chains["default"][0]


def get(url: str, *, encoded: bool = False) -> UpstreamRequest:
    return UpstreamRequest("GET", url, {}, b"", encoded=encoded)


@dataclass
class Seen:
    raw_path: str
    headers: dict[str, str]
    peer_port: int


@dataclass
class Server:
    """An upstream whose handlers a test writes; it records every request and every cancel."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    cancelled: int = 0
    # Handlers that wait on it hold their request (and its connection) until it is set.
    gate: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[[web.Request, Server], Awaitable[web.StreamResponse]]


async def ok(request: web.Request, server: Server) -> web.StreamResponse:
    return web.Response(text="ok")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Server:
        server = Server()

        async def handle(request: web.Request) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            server.seen.append(
                Seen(request.raw_path, lower_headers(request), int(peer[1]) if peer else 0)
            )
            try:
                return await handler(request, server)
            except asyncio.CancelledError:
                server.cancelled += 1
                raise

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[[Backend], HttpUpstream]]:
    made: list[HttpUpstream] = []

    def make(b: Backend) -> HttpUpstream:
        made.append(HttpUpstream(b))
        return made[-1]

    yield make
    for upstream in made:
        await upstream.close()


Pools = Callable[[Backend], HttpUpstream]
Serve = Callable[[Handler], Awaitable[Server]]


async def test_a_redirect_is_the_answer_and_its_location_is_never_requested(
    serve: Serve, pools: Pools
) -> None:
    async def redirect(request: web.Request, server: Server) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": server.url + "/elsewhere"})

    server = await serve(redirect)
    resp = await pools(backend(server.url)).send(get(server.url + "/v1/chat"))
    assert resp.status == 302
    assert resp.headers["location"].endswith("/elsewhere")
    resp.close()
    assert [s.raw_path for s in server.seen] == ["/v1/chat"]


async def test_an_error_status_is_an_answer_with_its_body_not_an_exception(
    serve: Serve, pools: Pools
) -> None:
    async def busy(request: web.Request, server: Server) -> web.StreamResponse:
        return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "3"})

    server = await serve(busy)
    resp = await pools(backend(server.url)).send(get(server.url + "/x"))
    assert (resp.status, resp.content_type, resp.headers["retry-after"]) == (
        503,
        "application/json",
        "3",
    )
    assert await resp.read() == b'{"error": "busy"}'
    resp.finish()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_connection_is_a_connect_error_whose_detail_carries_no_url(
    pools: Pools,
) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamError) as e:
        await pools(backend(base)).send(get(base.replace("//", "//user:url-secret@") + "/v1"))
    assert e.value.cls is FailureClass.CONNECT_ERROR
    assert e.value.detail == "connection refused"
    assert "url-secret" not in str(e.value)


async def raw_server(answer: Callable[[asyncio.StreamWriter], None]) -> asyncio.Server:
    """A TCP server that reads one request head and then does what `answer` does."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        answer(writer)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def url_of(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"


async def test_a_connection_reset_before_the_answer_is_a_connect_error(pools: Pools) -> None:
    server = await raw_server(lambda w: w.transport.abort())
    async with server:
        with pytest.raises(UpstreamError) as e:
            await pools(backend(url_of(server))).send(get(url_of(server)))
    assert (e.value.cls, e.value.detail) == (
        FailureClass.CONNECT_ERROR,
        "upstream closed the connection",
    )


async def test_a_status_line_that_is_not_http_is_an_invalid_response(pools: Pools) -> None:
    server = await raw_server(lambda w: w.write(b"HELLO\r\n\r\n"))
    async with server:
        with pytest.raises(UpstreamError) as e:
            await pools(backend(url_of(server))).send(get(url_of(server)))
    assert e.value.cls is FailureClass.INVALID_RESPONSE


async def read_all(resp: UpstreamResponse) -> None:
    await resp.read()


async def read_chunks(resp: UpstreamResponse) -> None:
    while await resp.chunk():
        pass


@pytest.mark.parametrize(
    ("reading", "cls"),
    [(read_all, FailureClass.SERVER_ERROR), (read_chunks, FailureClass.STREAM_INTERRUPTED)],
    ids=["read", "chunk"],
)
async def test_a_body_cut_short_is_an_upstream_error_of_the_way_it_was_read(
    pools: Pools, reading: Callable[[UpstreamResponse], Awaitable[None]], cls: FailureClass
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
    server = await raw_server(lambda w: w.write(head + b"only ten b"))
    async with server:
        resp = await pools(backend(url_of(server))).send(get(url_of(server)))
        with pytest.raises(UpstreamError) as e:
            await reading(resp)
        resp.close()
    assert (e.value.cls, e.value.detail) == (cls, "upstream body was cut off")


async def test_a_connect_that_does_not_complete_within_connect_timeout_is_a_timeout(
    pools: Pools,
) -> None:
    # A listener that never accepts, its backlog full: the kernel drops further handshakes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        try:
            for s in fillers:
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
            url = f"http://127.0.0.1:{port}/x"
            with pytest.raises(UpstreamError) as e:
                async with asyncio.timeout(2):
                    await pools(backend(url, connect_timeout_s="0.05")).send(get(url))
        finally:
            for s in fillers:
                s.close()
    assert (e.value.cls, e.value.detail) == (FailureClass.TIMEOUT, "connect timeout")


async def held(request: web.Request, server: Server) -> web.StreamResponse:
    await server.gate.wait()
    return web.Response(text="ok")


async def test_no_more_than_max_connections_requests_are_in_flight_to_one_backend(
    serve: Serve, pools: Pools
) -> None:
    server = await serve(held)
    upstream = pools(backend(server.url, max_connections="2"))
    sends = [asyncio.create_task(upstream.send(get(server.url + f"/{i}"))) for i in range(3)]
    await wait_until(lambda: len(server.seen) == 2, what="two requests at the upstream")
    await asyncio.sleep(0.05)
    assert len(server.seen) == 2  # the third waits for a connection of the pool
    server.gate.set()
    for resp in await asyncio.gather(*sends):
        assert await resp.read() == b"ok"
        resp.finish()
    assert len(server.seen) == 3
    assert len({s.peer_port for s in server.seen}) == 2  # the third reused a pooled connection


async def endless(request: web.Request, server: Server) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: first\n\n")
    await server.gate.wait()
    await resp.write(b"data: tail\n\n")
    return resp


async def test_closing_a_response_drops_its_connection_and_the_upstream_sees_the_cancel(
    serve: Serve, pools: Pools
) -> None:
    server = await serve(endless)
    upstream = pools(backend(server.url, max_connections="1"))
    resp = await upstream.send(get(server.url + "/stream"))
    assert await resp.chunk() == b"data: first\n\n"
    resp.close()
    await wait_until(lambda: server.cancelled == 1, what="the upstream's handler cancelled")
    # The pool's one slot is free again, on a new connection.
    server.gate.set()
    again = await upstream.send(get(server.url + "/stream"))
    await again.read()
    again.finish()
    assert server.seen[0].peer_port != server.seen[1].peer_port


async def test_a_finished_response_leaves_its_connection_for_the_next_request(
    serve: Serve, pools: Pools
) -> None:
    server = await serve(ok)
    upstream = pools(backend(server.url))
    for _ in range(3):
        resp = await upstream.send(get(server.url + "/x"))
        assert await resp.read() == b"ok"
        resp.finish()
    assert len({s.peer_port for s in server.seen}) == 1


async def test_finish_before_the_body_ends_reads_the_tail_and_pools_the_connection(
    serve: Serve, pools: Pools
) -> None:
    server = await serve(endless)
    # One connection: the next request waits for the tail's end, then reuses it or opens anew.
    upstream = pools(backend(server.url, max_connections="1"))
    resp = await upstream.send(get(server.url + "/stream"))
    assert await resp.chunk() == b"data: first\n\n"
    resp.finish()  # the answer is complete for the caller; the body has not ended
    server.gate.set()
    # Kept: the next request goes out on the same connection once the tail has been read.
    again = await upstream.send(get(server.url + "/stream"))
    await again.read()
    again.finish()
    assert server.cancelled == 0
    assert server.seen[0].peer_port == server.seen[1].peer_port


async def test_a_tail_longer_than_tail_bytes_drops_the_connection_without_waiting_for_its_end(
    serve: Serve, pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sidecar_upstream, "TAIL_BYTES", 4)

    async def long_tail(request: web.Request, server: Server) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await server.gate.wait()
        await resp.write(b"data: more than four bytes\n\n")
        await asyncio.Event().wait()  # the body never ends
        return resp

    server = await serve(long_tail)
    resp = await pools(backend(server.url)).send(get(server.url + "/stream"))
    await resp.chunk()
    resp.finish()
    server.gate.set()
    # Well before TAIL_S (2 s): dropped as soon as the tail is too long.
    await wait_until(lambda: server.cancelled == 1, within_s=1, what="the handler cancelled")


async def test_a_tail_that_does_not_end_within_tail_s_drops_the_connection(
    serve: Serve, pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sidecar_upstream, "TAIL_S", 0.02)
    server = await serve(endless)
    resp = await pools(backend(server.url)).send(get(server.url + "/stream"))
    await resp.chunk()
    resp.finish()
    await wait_until(lambda: server.cancelled == 1, what="the upstream's handler cancelled")


async def test_closing_the_upstream_stops_the_tails_being_read(serve: Serve) -> None:
    server = await serve(endless)
    upstream = HttpUpstream(backend(server.url))
    resp = await upstream.send(get(server.url + "/stream"))
    await resp.chunk()
    resp.finish()
    async with asyncio.timeout(1):  # not TAIL_S: the tail is cancelled, not waited out
        await upstream.close()
    await wait_until(lambda: server.cancelled == 1, what="the upstream's handler cancelled")


def nothing() -> None:
    return None


async def test_tails_are_limited_to_a_tenth_of_the_pool_and_free_their_place_when_done() -> None:
    tails = Tails(pool_size=20)
    gate = asyncio.Event()

    async def read() -> None:
        await gate.wait()

    assert [tails.spawn(read, nothing) for _ in range(3)] == [True, True, False]
    gate.set()
    await wait_until(lambda: tails.spawn(read, nothing), what="a tail place freed")
    await tails.cancel()


async def test_then_runs_when_a_tail_is_over_even_if_cancelled_before_it_started() -> None:
    tails = Tails(pool_size=10)
    ended: list[str] = []

    async def read() -> None:
        raise AssertionError("never started: cancelled at once")

    assert tails.spawn(read, lambda: ended.append("then"))
    await tails.cancel()
    assert ended == ["then"]


async def test_a_small_pool_still_reads_one_tail() -> None:
    tails = Tails(pool_size=2)

    async def read() -> None:
        await asyncio.Event().wait()

    assert [tails.spawn(read, nothing), tails.spawn(read, nothing)] == [True, False]
    await tails.cancel()


async def test_no_tail_is_read_once_the_backend_is_closed() -> None:
    tails = Tails(pool_size=100)
    await tails.cancel()

    async def read() -> None:
        raise AssertionError("started after close")

    assert tails.spawn(read, nothing) is False


async def test_an_encoded_url_goes_out_as_given_and_any_other_is_normalised(
    serve: Serve, pools: Pools
) -> None:
    server = await serve(ok)
    upstream = pools(backend(server.url))
    for encoded in (True, False):
        resp = await upstream.send(get(server.url + "/model/a%3Ab%2Fc?q=%3A", encoded=encoded))
        await resp.read()
        resp.finish()
    assert [s.raw_path for s in server.seen] == ["/model/a%3Ab%2Fc?q=%3A", "/model/a:b%2Fc?q=:"]


async def test_no_user_agent_is_sent_and_cookies_set_upstream_are_never_sent_back(
    serve: Serve, pools: Pools
) -> None:
    async def cookie(request: web.Request, server: Server) -> web.StreamResponse:
        return web.Response(text="ok", headers={"Set-Cookie": "session=s1; Path=/"})

    server = await serve(cookie)
    upstream = pools(backend(server.url))
    for _ in range(2):
        resp = await upstream.send(get(server.url + "/x"))
        await resp.read()
        resp.finish()
    for seen in server.seen:
        assert "user-agent" not in seen.headers
        assert "cookie" not in seen.headers


async def test_the_method_headers_and_body_are_sent_and_a_gzip_answer_is_decompressed(
    serve: Serve, pools: Pools
) -> None:
    got: list[bytes] = []

    async def echo(request: web.Request, server: Server) -> web.StreamResponse:
        got.append(await request.read())
        body = gzip.compress(b'{"method": "' + request.method.encode() + b'"}')
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    server = await serve(echo)
    req = UpstreamRequest("POST", server.url + "/x", {"x-request-id": "r1"}, b'{"a": 1}')
    resp = await pools(backend(server.url)).send(req)
    assert await resp.read() == b'{"method": "POST"}'
    resp.finish()
    assert got == [b'{"a": 1}']
    assert server.seen[0].headers["x-request-id"] == "r1"


async def test_a_kept_connection_the_server_closed_unanswered_is_retried_once_on_a_new_one(
    pools: Pools,
) -> None:
    heads: list[bytes] = []

    async def first_then_hang_up(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # The first connection answers once, then closes when the next request arrives on it,
        # as a server does whose keep-alive ran out just as the request went out.
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        if len(heads) == 1:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
        w.close()

    server = await asyncio.start_server(first_then_hang_up, "127.0.0.1", 0)
    async with server:
        upstream = pools(backend(url_of(server)))
        for _ in range(2):
            resp = await upstream.send(get(url_of(server)))
            assert await resp.read() == b"ok"
            resp.finish()
    assert len(heads) == 3  # the second request went out twice: the kept connection, a new one


async def test_a_new_connection_closed_unanswered_is_not_retried(pools: Pools) -> None:
    heads: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        w.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        with pytest.raises(UpstreamError) as e:
            await pools(backend(url_of(server))).send(get(url_of(server)))
    assert e.value.detail == "upstream closed the connection"
    assert len(heads) == 1


async def test_a_corrupt_gzip_body_that_arrives_whole_is_an_error_not_an_empty_body(
    pools: Pools,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 15\r\n\r\n"
    server = await raw_server(lambda w: w.write(head + b"not gzip at all"))
    async with server:
        resp = await pools(backend(url_of(server))).send(get(url_of(server)))
        with pytest.raises(UpstreamError) as e:
            await resp.read()
        resp.close()
    assert (e.value.cls, e.value.detail) == (FailureClass.SERVER_ERROR, "upstream body was cut off")


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the socket the closed loop left open
def test_a_response_collected_after_its_loop_closed_raises_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(u.exc_value))
    ours, theirs = socket.socketpair()  # `theirs`, a plain socket, plays the upstream
    kept: list[HttpResponse] = []

    async def main() -> None:
        pool = Pool(1, 1)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: Connection(pool, (False, "h", 80)), sock=ours
        )
        ex = conn.start(b"GET / HTTP/1.1\r\n\r\n", b"", head_only=False)
        theirs.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
        while ex.headers is None:
            await ex.wait()
        kept.append(HttpResponse(conn, ex))

    asyncio.run(main())
    kept.clear()  # the last reference goes with the loop closed: as at shutdown
    gc.collect()
    theirs.close()
    assert unraisable == []


async def test_the_retry_of_a_stale_kept_connection_goes_out_on_a_new_one_not_another_kept(
    pools: Pools,
) -> None:
    heads: list[bytes] = []
    connections = finished = 0
    gate = asyncio.Event()

    async def answer_once_then_hang_up(
        reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        nonlocal connections, finished
        connections += 1
        mine = connections
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            if mine <= 2:
                await gate.wait()  # both first requests in flight at once: two kept connections
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            if mine <= 2:
                heads.append(await reader.readuntil(b"\r\n\r\n"))
        except asyncio.IncompleteReadError:
            pass  # the kept connection that was never used again, closed with the pool
        finally:
            w.close()
            finished += 1

    server = await asyncio.start_server(answer_once_then_hang_up, "127.0.0.1", 0)
    async with server:
        upstream = pools(backend(url_of(server)))
        first = [asyncio.create_task(upstream.send(get(url_of(server)))) for _ in range(2)]
        await wait_until(lambda: connections == 2, what="two connections")
        gate.set()
        for resp in await asyncio.gather(*first):
            assert await resp.read() == b"ok"
            resp.finish()
        resp = await upstream.send(get(url_of(server)))
        assert await resp.read() == b"ok"
        resp.finish()
        await upstream.close()
        await wait_until(lambda: finished == connections, what="every connection closed")
    # two first requests, the stale attempt, and its retry on a third, new connection
    assert (len(heads), connections) == (4, 3)
