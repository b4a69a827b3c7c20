"""Inbound hygiene: errors the sidecar writes itself, chain selection, headers, pass-through."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from conftest import FakeFactory, SidecarFactory, chain_env, chat, post
from fakes.openai_upstream import MAX_TOKENS_REFUSED, Script
from fakes.transport import rehomed

from sidecar.backends.openai import DEFAULT_BASE_URL


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"model": "m"}', "'messages'"),
        (b'{"model": "m", "messages": "hi"}', "'messages'"),
        (b'{"model": 3, "messages": []}', "'model'"),
        (b'{"messages": []}', "'model' is required"),
    ],
)
async def test_invalid_bodies_get_400_and_nothing_is_forwarded(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    raw: bytes,
    message: str,
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    async with http.post(sc.url + "/v1/chat/completions", data=raw) as r:
        body = await r.json()
        assert r.status == 400
    assert message in body["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert a.seen == []


async def test_model_may_be_omitted_when_every_backend_sets_one(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a, B0_MODEL="pinned"))
    r = await post(http, sc.url, {"messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200
    assert a.seen[0].json["model"] == "pinned"


async def test_unknown_route_is_404_json_and_wrong_method_is_405(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain_env(await fake()))
    async with http.get(sc.url + "/healthz") as r:
        assert r.status == 404
        assert "error" in await r.json()
    async with http.get(sc.url + "/v1/chat/completions") as r:
        assert r.status == 405
        assert r.headers["allow"] == "POST"
        assert "error" in await r.json()
    async with http.post(sc.url + "/v1/models") as r:
        assert r.status == 405
        assert r.headers["allow"] == "GET"
    assert sc.metric("llm_sidecar_requests_total", route="other", chain="none", status="404") == 1
    assert (
        sc.metric(
            "llm_sidecar_requests_total", route="chat_completions", chain="none", status="405"
        )
        == 1
    )


async def test_body_over_the_limit_is_413_from_content_length_before_reading(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a, SIDECAR_MAX_BODY_BYTES="1000"))
    port = int(sc.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Announce a huge body and send none of it: the answer must come without reading it.
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), 2)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413")
    assert b'"error"' in head
    assert a.seen == []


async def test_chunked_body_crossing_the_limit_is_413(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a, SIDECAR_MAX_BODY_BYTES="1000"))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 100

    async with http.post(sc.url + "/v1/chat/completions", data=body()) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "request_too_large"
    assert a.seen == []


async def test_slow_body_is_408(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a, SIDECAR_BODY_TIMEOUT_S="0.3"))
    port = int(sc.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 50\r\n\r\n{"model":'
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), 3)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert a.seen == []


async def test_inbound_token_is_required_when_configured(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a, SIDECAR_AUTH_TOKEN="inbound-secret-token"))
    assert (await post(http, sc.url, chat())).status == 401
    bad = await post(http, sc.url, chat(), headers={"Authorization": "Bearer nope"})
    assert bad.status == 401
    assert "inbound-secret-token" not in bad.text
    ok = await post(http, sc.url, chat(), headers={"Authorization": "Bearer inbound-secret-token"})
    assert ok.status == 200
    ok2 = await post(http, sc.url, chat(), headers={"x-api-key": "inbound-secret-token"})
    assert ok2.status == 200
    assert len(a.seen) == 2
    # The inbound token is the sidecar's; upstream gets only the backend's own key.
    assert a.seen[0].headers["authorization"] == "Bearer sk-canary-key-0-0123456789"


async def test_chain_is_chosen_by_header_then_model_then_default(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, tmp_path: object
) -> None:
    d, g = await fake(), await fake()
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "chains.yaml"
    path.write_text("fallback_chains:\n  gpt-4o:\n    - {name: g, env_prefix: G_}\n")
    env = {
        "SIDECAR_BACKENDS": "d",
        "SIDECAR_CONFIG": str(path),
        "D_BASE_URL": d.url,
        "G_BASE_URL": g.url,
    }
    sc = await sidecar(env)
    await post(http, sc.url, chat(model="gpt-4o"))
    assert len(g.seen) == 1
    await post(http, sc.url, chat(model="other"))
    assert len(d.seen) == 1
    r = await post(http, sc.url, chat(model="other"), headers={"x-sidecar-chain": "gpt-4o"})
    assert len(g.seen) == 2
    assert "x-sidecar-chain" not in g.seen[1].headers
    assert r.status == 200
    bad = await post(http, sc.url, chat(), headers={"x-sidecar-chain": "nope"})
    assert bad.status == 400
    assert "nope" in bad.json["error"]["message"]


async def test_models_lists_chains_and_model_map_keys(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain_env(await fake(), B0_MODEL_MAP="fast=gpt-4o-mini,smart=gpt-4o"))
    async with http.get(sc.url + "/v1/models") as r:
        body = await r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["default", "fast", "smart"]
    assert all(m["object"] == "model" and m["owned_by"] == "llm-sidecar" for m in body["data"])


async def test_a_listed_model_is_described_locally_and_others_pass_through(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a, B0_MODEL_MAP="fast=gpt-4o-mini"))
    for name in ("default", "fast"):
        async with http.get(sc.url + f"/v1/models/{name}") as r:
            assert r.status == 200
            assert await r.json() == {"id": name, "object": "model", "owned_by": "llm-sidecar"}
    assert a.seen == []
    async with http.get(sc.url + "/v1/models/gpt-4o") as r:
        assert r.status == 200
    assert [x.path for x in a.seen] == ["/v1/models/gpt-4o"]
    assert sc.metric("llm_sidecar_requests_total", route="models", chain="none", status="200") == 2


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("has space", False), ("", False)],
)
async def test_request_id_is_kept_only_when_well_formed(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, given: str, kept: bool
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat(), headers={"x-request-id": given})
    rid = r.headers["x-request-id"]
    if kept:
        assert rid == given
    else:
        assert len(rid) == 32 and int(rid, 16) >= 0
    assert a.seen[0].headers["x-request-id"] == rid


async def test_caller_credentials_cookies_and_hop_by_hop_headers_never_go_upstream(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a, B0_HEADERS='{"OpenAI-Organization": "org-static"}'))
    caller = {
        "Authorization": "Bearer caller-key",
        "x-api-key": "caller-key",
        "api-key": "caller-key",
        "Cookie": "session=1",
        "Proxy-Authorization": "Basic x",
        "X-Custom": "dropped on known routes",
        "User-Agent": "my-app/1.0",
    }
    await post(http, sc.url, chat(), headers=caller)
    got = a.seen[0].headers
    assert got["authorization"] == "Bearer sk-canary-key-0-0123456789"
    for name in ("x-api-key", "api-key", "cookie", "proxy-authorization", "x-custom"):
        assert name not in got
    assert "caller-key" not in str(got)
    assert got["user-agent"] == "my-app/1.0"
    assert got["openai-organization"] == "org-static"


async def test_keyless_openai_backend_sends_no_credential(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar({"SIDECAR_BACKENDS": "local", "LOCAL_BASE_URL": a.url})
    await post(http, sc.url, chat(), headers={"Authorization": "Bearer caller"})
    assert "authorization" not in a.seen[0].headers


async def test_passthrough_relays_other_v1_paths_byte_for_byte(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    raw = b'{"weird":   [1,2,3]}'
    a = await fake(Script(status=503))
    b = await fake(Script(body=raw, headers={"X-Upstream": "yes", "Set-Cookie": "a=b"}))
    sc = await sidecar(chain_env(a, b))
    async with http.post(
        sc.url + "/v1/realtime/sessions?foo=bar",
        data=b"any bytes \x00\x01",
        headers={
            "Authorization": "Bearer caller",
            "X-Custom": "kept",
            "Content-Type": "application/x-thing",
        },
    ) as r:
        assert r.status == 200
        assert await r.read() == raw
        assert r.headers["x-sidecar-backend"] == "b1"
        assert r.headers["x-sidecar-failures"] == "b0=overloaded"
    seen = b.seen[0]
    assert seen.path == "/v1/realtime/sessions"
    assert seen.query == "foo=bar"
    assert seen.body == b"any bytes \x00\x01"
    assert seen.headers["x-custom"] == "kept"
    assert seen.headers["content-type"] == "application/x-thing"
    assert seen.headers["authorization"] == "Bearer sk-canary-key-1-0123456789"


async def test_upstream_redirects_are_not_followed(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    target = await fake()
    a = await fake(Script(status=307, headers={"Location": target.url + "/chat/completions"}))
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat())
    assert r.status == 502
    assert target.seen == []


async def test_passthrough_keeps_the_upstream_content_type_and_headers(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(
        Script(
            body=b"\x89PNG...",
            headers={"Content-Type": "image/png", "X-Thing": "1", "Set-Cookie": "s=1"},
        )
    )
    sc = await sidecar(chain_env(a))
    async with http.get(sc.url + "/v1/files/f-1/content") as r:
        assert r.status == 200
        assert await r.read() == b"\x89PNG..."
        assert r.headers["content-type"] == "image/png"
        assert r.headers.getall("content-type") == ["image/png"]
        assert r.headers["x-thing"] == "1"
        assert "set-cookie" not in r.headers
    assert a.seen[0].path == "/v1/files/f-1/content"


async def test_passthrough_event_streams_are_relayed_as_they_arrive(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    events = (
        b"event: response.created\ndata: {}\n\n"
        b'event: response.output_text.delta\ndata: {"delta":"hi"}\n\n'
        b"event: response.completed\ndata: {}\n\n"
    )
    a = await fake(Script(body=events, headers={"Content-Type": "text/event-stream"}))
    sc = await sidecar(chain_env(a))
    async with http.post(sc.url + "/v1/threads/runs", json={"model": "m", "stream": True}) as r:
        assert r.headers.getall("content-type") == ["text/event-stream"]
        assert await r.read() == events


async def test_idle_and_slow_header_connections_are_closed(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(text="a b c d e f", chunk_delay_s=0.15))
    sc = await sidecar(chain_env(a, SIDECAR_IDLE_TIMEOUT_S="0.4"))
    port = int(sc.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    # A stream longer than the idle timeout is not cut by it.
    r = await post(http, sc.url, chat(stream=True))
    assert r.text.rstrip().endswith("data: [DONE]")


async def test_slow_headers_and_slow_bodies_do_not_starve_normal_requests(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    port = int(sc.url.rsplit(":", 1)[1])
    slow = []
    for i in range(60):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        if i % 2:  # a complete head, then a body that never comes
            head += b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        writer.write(head)
        slow.append(writer)
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    r = await post(http, sc.url, chat())
    assert r.status == 200
    assert time.monotonic() - t0 < 1.0
    for w in slow:
        w.close()


async def test_passthrough_sends_the_callers_encoded_path_and_query_unchanged(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    port = int(sc.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /v1/files/abc%2Fdef?x=a%26b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    await reader.read()
    writer.close()
    assert a.seen[0].raw_path == "/v1/files/abc%2Fdef?x=a%26b"


@pytest.mark.parametrize(
    "path", ["/v1/%2e%2e/admin", "/v1/../admin", "/v1/x/%2E/y", "/v1/a/%2e%2e/%2e%2e/root"]
)
async def test_passthrough_refuses_dot_segments_that_would_leave_the_base_url(
    fake: FakeFactory, sidecar: SidecarFactory, path: str
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    port = int(sc.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"invalid_path" in answer
    assert a.seen == []


async def test_passthrough_errors_keep_the_upstream_content_type_and_headers(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(
        Script(
            status=404,
            body=b"<h1>no such file</h1>",
            headers={"Content-Type": "text/html", "X-Thing": "1"},
        )
    )
    sc = await sidecar(chain_env(a))
    async with http.get(sc.url + "/v1/files/missing") as r:
        assert r.status == 404
        assert await r.read() == b"<h1>no such file</h1>"
        assert r.headers.getall("content-type") == ["text/html"]
        assert r.headers["x-thing"] == "1"


async def test_rate_limit_headers_reach_the_caller_on_an_error_too(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(
        Script(status=429, headers={"x-ratelimit-remaining-requests": "0", "Retry-After": "9"})
    )
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat())
    assert r.status == 429
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["retry-after"] == "9"


async def test_headers_the_caller_names_in_connection_never_reach_the_upstream(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    named = {"Connection": "keep-alive, X-Foo", "X-Foo": "secret", "X-Kept": "yes"}
    async with http.post(sc.url + "/v1/moderations", json={"model": "m"}, headers=named) as r:
        assert r.status == 200
    async with http.post(
        sc.url + "/v1/chat/completions",
        json=chat(),
        headers={"Connection": "User-Agent", "User-Agent": "hop-by-hop"},
    ) as r:
        assert r.status == 200
    passthrough, chat_seen = a.seen
    assert "x-foo" not in passthrough.headers
    assert passthrough.headers["x-kept"] == "yes"
    assert chat_seen.headers.get("user-agent") != "hop-by-hop"


@pytest.mark.parametrize("path", ["/v1/moderations", "/v1/chat/completions"])
async def test_headers_the_upstream_names_in_connection_never_reach_the_caller(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, path: str
) -> None:
    hop = {"Connection": "x-ratelimit-remaining-requests", "X-Ratelimit-Remaining-Requests": "9"}
    a = await fake(Script(headers={**hop, "X-Ratelimit-Limit-Requests": "10"}))
    sc = await sidecar(chain_env(a))
    async with http.post(sc.url + path, json=chat()) as r:
        assert r.status == 200
        assert "x-ratelimit-remaining-requests" not in r.headers
        assert r.headers["x-ratelimit-limit-requests"] == "10"


@pytest.mark.parametrize(
    "chain",
    ["x" * 5000, "caf\udcff-bytes", "a\tb", "\u202eevil"],
    ids=["5000 characters", "non-UTF-8 bytes", "tab", "bidi override"],
)
async def test_unknown_chain_400_quotes_the_name_capped_and_escaped(
    fake: FakeFactory, sidecar: SidecarFactory, chain: str
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    port = int(sc.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"model":"m","messages":[]}'
    # Raw bytes: a client library would refuse to send some of these headers.
    name = chain.encode("utf-8", "surrogateescape")
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"x-sidecar-chain: " + name + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, raw = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    message = json.loads(raw)["error"]["message"]
    assert message.startswith("unknown chain ")
    assert len(message) < 200
    assert message.isascii() and message.isprintable()
    assert a.seen == []


async def test_no_chain_for_a_long_model_quotes_it_capped(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a = await fake()
    chains = tmp_path / "chains.yaml"
    chains.write_text("fallback_chains:\n  only:\n    - {name: b0, env_prefix: B0_}\n")
    env = chain_env(a, SIDECAR_CONFIG=str(chains))
    del env["SIDECAR_BACKENDS"]
    sc = await sidecar(env)
    r = await post(http, sc.url, chat(model="m" * 5000))
    assert r.status == 400
    assert len(r.json["error"]["message"]) < 200
    assert "5000 characters" in r.json["error"]["message"]


async def test_an_openai_callers_own_chat_body_reaches_api_openai_com_as_sent(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    o = await fake(reasoning_model=True)
    env = {"SIDECAR_BACKENDS": "o", "O_API_KEY": "sk-openai-canary-0123456789"}
    sc = await sidecar(env, upstream=rehomed(DEFAULT_BASE_URL, o.url))
    raw = b'{"model":"o4-mini","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    headers = {"content-type": "application/json"}
    async with http.post(sc.url + "/v1/chat/completions", data=raw, headers=headers) as r:
        body = await r.json()
    assert o.seen[0].body == raw  # a native request is the caller's to get right
    assert (r.status, body) == (400, MAX_TOKENS_REFUSED)
