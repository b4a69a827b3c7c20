"""The admin port and the process lifecycle: /metrics, probes, /status, SIGTERM drain."""

import asyncio
import json
import os
import pathlib
import signal
import sys
import time

import aiohttp
from conftest import (
    FakeFactory,
    SidecarFactory,
    chain_env,
    chat,
    post,
    sse_data,
    streamed_text,
    wait_until,
)
from fakes.openai_upstream import Script


async def test_metrics_endpoint_serves_the_exposition_without_created_series(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain_env(await fake()))
    async with http.get(sc.admin + "/metrics") as r:
        text = await r.text()
        assert r.status == 200
    assert "llm_sidecar_backend_attempts_total{" in text
    assert "_created" not in text


async def test_probes_and_status(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain_env(await fake(), await fake()))
    async with http.get(sc.admin + "/livez") as r:
        assert r.status == 200
    async with http.get(sc.admin + "/readyz") as r:
        assert r.status == 200
    async with http.get(sc.admin + "/status") as r:
        status = await r.json()
    assert set(status) == {"version", "draining", "inflight", "chains", "backends"}
    assert status["chains"] == {"default": ["b0", "b1"]}
    assert status["backends"][0] == {
        "name": "b0",
        "kind": "openai",
        "chains": ["default"],
        "circuit": "closed",
        "cooldown_remaining_s": 0,
        "consecutive_failures": 0,
        "ratelimit_block": None,
    }
    assert "127.0.0.1" not in str(status)


async def test_admin_port_answers_unknown_routes_and_wrong_methods_in_json(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain_env(await fake()))
    async with http.get(sc.admin + "/nope") as r:
        assert r.status == 404
        assert r.content_type == "application/json"
        assert set((await r.json())["error"]) == {"message", "type", "param", "code"}
    async with http.post(sc.admin + "/metrics") as r:
        assert r.status == 405
        assert r.content_type == "application/json"
        assert r.headers["allow"] == "GET, HEAD"
        assert "error" in await r.json()
    async with http.head(sc.admin + "/livez") as r:
        assert r.status == 200
    async with http.get(sc.admin + "/metrics", headers={"accept-encoding": "gzip"}) as r:
        assert r.status == 200
        assert r.headers["content-encoding"] == "gzip"


async def test_readiness_never_depends_on_backend_health(
    sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar({"SIDECAR_BACKENDS": "dead", "DEAD_BASE_URL": "http://127.0.0.1:9/v1"})
    await post(http, sc.url, chat())
    async with http.get(sc.admin + "/readyz") as r:
        assert r.status == 200


async def test_admission_control_answers_503_fast_over_max_inflight(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(delay_s=0.5))
    sc = await sidecar(chain_env(a, SIDECAR_MAX_INFLIGHT="2"))
    slow = [asyncio.create_task(post(http, sc.url, chat())) for _ in range(2)]
    await wait_until(lambda: len(a.seen) >= 2, what="two requests upstream")
    t0 = time.monotonic()
    r = await post(http, sc.url, chat())
    assert time.monotonic() - t0 < 0.3
    assert r.status == 503
    assert r.headers["retry-after"] == "1"
    assert "error" in r.json
    assert len(a.seen) == 2
    assert all(x.status == 200 for x in await asyncio.gather(*slow))
    assert (
        sc.metric(
            "llm_sidecar_requests_total", route="chat_completions", chain="none", status="503"
        )
        == 1
    )


async def _spawn(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str, str]:
    """`llm-sidecar serve` on ports the OS picks, read back from its "listening" log line: no
    port is chosen here, released and hoped free."""
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
        "SIDECAR_PORT": "0",
        "SIDECAR_ADMIN_PORT": "0",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "serve", env=full, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(15):
            while line := await proc.stderr.readline():
                fields = json.loads(line) if line.startswith(b"{") else {}
                if fields.get("msg") == "listening":
                    url, admin = (f"http://{fields[k]}" for k in ("proxy", "admin"))
                    return proc, url, admin
    except TimeoutError:
        pass
    proc.kill()
    await proc.wait()
    raise AssertionError("sidecar did not start")


async def test_sigterm_drains_in_flight_streams_byte_for_byte_then_exits_0(
    fake: FakeFactory,
) -> None:
    words = " ".join(f"w{i}" for i in range(10))
    a = await fake(Script(text=words, chunk_delay_s=0.1))
    proc, url, admin = await _spawn(chain_env(a, SIDECAR_SHUTDOWN_GRACE_S="5"))
    async with aiohttp.ClientSession() as http:
        stream = asyncio.create_task(post(http, url, chat(stream=True)))
        await wait_until(lambda: bool(a.seen), what="a request upstream")
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        async with http.get(admin + "/readyz") as r:
            assert r.status == 503
        async with http.get(admin + "/livez") as r:
            assert r.status == 200
        answer = await stream
        assert streamed_text(answer.text) == words
        assert sse_data(answer.text)[-1] == "[DONE]"
    assert await asyncio.wait_for(proc.wait(), 5) == 0


async def test_sigterm_keeps_accepting_during_the_delay_then_refuses(fake: FakeFactory) -> None:
    a = await fake()
    proc, url, _ = await _spawn(chain_env(a, SIDECAR_SHUTDOWN_DELAY_S="0.6"))
    async with aiohttp.ClientSession() as http:
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        assert (await post(http, url, chat())).status == 200
        await asyncio.sleep(0.8)
        try:
            await post(http, url, chat())
            refused = False
        except aiohttp.ClientConnectionError:
            refused = True
        assert refused
    assert await asyncio.wait_for(proc.wait(), 5) == 0


async def test_stream_longer_than_the_grace_ends_with_a_terminal_error_and_bounded_exit(
    fake: FakeFactory,
) -> None:
    words = " ".join(f"w{i}" for i in range(100))
    a = await fake(Script(text=words, chunk_delay_s=0.1))
    proc, url, _ = await _spawn(chain_env(a, SIDECAR_SHUTDOWN_GRACE_S="1.5"))
    async with aiohttp.ClientSession() as http:
        stream = asyncio.create_task(post(http, url, chat(stream=True)))
        await wait_until(lambda: bool(a.seen), what="a request upstream")
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        r = await stream
        code = await asyncio.wait_for(proc.wait(), 5)
        elapsed = time.monotonic() - t0
    events = sse_data(r.text)
    assert "[DONE]" not in events
    assert "error" in events[-1]
    assert "shutting down" in events[-1]["error"]["message"]
    assert code == 0
    assert elapsed < 1.5 + 1.0


async def test_answer_still_pending_at_the_end_of_the_grace_gets_a_503_in_its_dialect(
    fake: FakeFactory,
) -> None:
    a = await fake(Script(delay_s=30))
    proc, url, _ = await _spawn(chain_env(a, SIDECAR_SHUTDOWN_GRACE_S="1.5"))
    anthropic = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        pending = [
            asyncio.create_task(post(http, url, chat())),
            asyncio.create_task(post(http, url, anthropic, path="/v1/messages")),
        ]
        await wait_until(lambda: len(a.seen) >= 2, what="two requests upstream")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        openai_answer, anthropic_answer = await asyncio.gather(*pending)
        code = await asyncio.wait_for(proc.wait(), 5)
        elapsed = time.monotonic() - t0
    assert openai_answer.status == 503
    assert "shutting down" in openai_answer.json["error"]["message"]
    assert anthropic_answer.status == 503
    assert anthropic_answer.json["type"] == "error"
    assert anthropic_answer.json["error"]["type"] == "overloaded_error"
    assert code == 0
    assert elapsed < 1.5 + 1.0
    assert proc.stderr is not None
    lines = [json.loads(x) for x in (await proc.stderr.read()).splitlines() if x.startswith(b"{")]
    requests = [x for x in lines if x.get("msg") == "request"]
    assert sorted(x["status"] for x in requests) == [503, 503]
    for line in requests:
        assert [(x["backend"], x.get("cancelled")) for x in line["attempts"]] == [("b0", True)]


async def test_after_the_delay_kept_alive_connections_are_not_served_either(
    fake: FakeFactory, tmp_path: pathlib.Path
) -> None:
    a = await fake()
    slow = await fake(Script(text=" ".join(f"w{i}" for i in range(20)), chunk_delay_s=0.1))
    chains = tmp_path / "chains.yaml"
    chains.write_text("fallback_chains:\n  slow:\n    - {name: slowb, env_prefix: SLOWB_}\n")
    env = chain_env(a, SIDECAR_SHUTDOWN_DELAY_S="0.3", SIDECAR_CONFIG=str(chains))
    env["SLOWB_BASE_URL"] = slow.url
    proc, url, _ = await _spawn(env)
    port = int(url.rsplit(":", 1)[1])
    # A stream in flight keeps the drain waiting while the idle connection tries again.
    async with aiohttp.ClientSession() as http:
        busy = asyncio.create_task(
            post(http, url, chat(stream=True), headers={"x-sidecar-chain": "slow"})
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        writer.write(request)
        await writer.drain()
        first = await asyncio.wait_for(reader.read(65536), 5)
        assert first.startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.8)
        try:
            writer.write(request)
            await writer.drain()
            second = await asyncio.wait_for(reader.read(65536), 5)
        except ConnectionError:
            second = b""
        writer.close()
        assert not second.startswith(b"HTTP/1.1 200")
        assert len(a.seen) == 1
        assert (await busy).text.rstrip().endswith("data: [DONE]")
    assert await asyncio.wait_for(proc.wait(), 5) == 0
