"""`llm-sidecar demo --traffic` as `make run` starts it: it serves, falls back and reports, and
never reaches beyond its own fakes, whatever the shell has exported."""

import os
import socket
import subprocess
import sys

import aiohttp
import pytest
from conftest import SidecarFactory, chat, post, sse_data

from sidecar.demo import FakeClaude, FakeProvider, demo_env

REAL_KEY = "sk-real-provider-key-0123456789"


def _demo(
    *args: str, env: dict[str, str] | None = None, ports: tuple[int, int] | None = None
) -> subprocess.CompletedProcess[str]:
    port, admin = ports or (0, 0)  # the OS picks; the banner names them
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    command = [sys.executable, "-m", "sidecar", "demo", "--port", str(port)]
    return subprocess.run(
        [*command, "--admin-port", str(admin), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _table(stdout: str) -> dict[str, str]:
    table = stdout.rsplit("requests: ", 1)[1]
    return {line.split()[0]: line for line in table.splitlines()[2:] if line.strip()}


def test_demo_traffic_shows_fallbacks_per_backend_and_exits_0() -> None:
    r = _demo("--traffic", "--requests", "24")
    assert r.returncode == 0, r.stderr
    assert "llm-sidecar demo" in r.stdout
    table = r.stdout.rsplit("requests: ", 1)[1]
    assert "24 sent" in table
    rows = _table(r.stdout)
    assert "rate_limited=" in rows["flaky"] and "overloaded=" in rows["flaky"]
    assert int(rows["healthy"].split()[2]) > 0
    assert "0 errors" in table
    assert " 0 in flight, " in table.splitlines()[0]
    cells = _cells(table)
    for row in cells.values():
        assert "circuit_open" not in row["failed before an answer"]
        assert "stream_" not in row["failed before an answer"]
    # Whether the cut comes up in 24 requests depends on timing; where it does, it is here.
    for row in cells.values():
        assert row["broke after commit"] == "-" or row["broke after commit"].startswith("stream_")
        assert row["skipped as"] == "-" or row["skipped as"].startswith(("circuit_open", "unsu"))
    assert "recovered into one whole answer by a later PREFILL backend: " in table


def _cells(table: str) -> dict[str, dict[str, str]]:
    """The table's cells by backend and column, read at the header's column starts."""
    header, *lines = table.splitlines()[1:]
    names = [n for n in header.split("  ") if n.strip()]
    starts = [header.index(n.strip()) for n in names]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    out = {}
    for line in lines:
        if line.startswith("streams that broke"):
            break
        row = {n.strip(): line[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)}
        out[row["backend"]] = row
    return out


def test_demo_ignores_real_provider_settings_in_the_shell_and_says_so() -> None:
    # A "real provider": a listener that must never see a connection.
    with socket.socket() as real:
        real.bind(("127.0.0.1", 0))
        real.listen()
        real.setblocking(False)
        env = {
            "SIDECAR_BACKENDS": "primary",
            "PRIMARY_BASE_URL": f"http://127.0.0.1:{real.getsockname()[1]}/v1",
            "PRIMARY_API_KEY": REAL_KEY,
            "SIDECAR_LOG_LEVEL": "DEBUG",
            "FLAKY_BASE_URL": f"http://127.0.0.1:{real.getsockname()[1]}/v1",
        }
        r = _demo("--traffic", "--requests", "6", env=env)
        try:
            real.accept()[0].close()
            reached = True
        except BlockingIOError:
            reached = False
    assert r.returncode == 0, r.stderr
    assert not reached, "the demo sent traffic to the shell's provider"
    assert "chain default: flaky → claude → healthy" in r.stdout
    assert "no real provider is ever called" in r.stdout
    for name in ("SIDECAR_BACKENDS", "PRIMARY_BASE_URL", "PRIMARY_API_KEY", "FLAKY_BASE_URL"):
        assert name in r.stdout
    assert REAL_KEY not in r.stdout + r.stderr


def test_demo_with_its_port_busy_says_so_once_without_unclosed_session_noise() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = _demo(ports=(busy.getsockname()[1], 0))
    assert r.returncode == 1
    assert "cannot listen" in r.stderr and "--port" in r.stderr
    assert "Unclosed" not in r.stderr
    assert "Traceback" not in r.stderr


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


@pytest.mark.parametrize("stream", [False, True])
async def test_demo_fakes_call_the_requests_tool_through_the_sidecar(
    sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    openai_like, claude = FakeProvider("o"), FakeClaude()
    try:
        env = {
            "SIDECAR_BACKENDS": "o,c",
            "O_BASE_URL": await openai_like.start(),
            "C_KIND": "anthropic",
            "C_BASE_URL": await claude.start(),
            "C_API_KEY": "sk-demo-claude-key",
        }
        sc = await sidecar(env)
        for chain in ("o", "c"):  # an OpenAI caller on each kind of fake
            if chain == "c":  # `o` cools down: the Anthropic fake answers, translated
                sc.app.members["o"].circuit.record_failure(retry_after_s=60, open_now=True)
            r = await post(http, sc.url, chat(stream=stream, tools=TOOLS))
            assert r.status == 200, r.text
            assert r.headers["x-sidecar-backend"] == chain
            if stream:
                deltas = [c["choices"][0]["delta"] for c in sse_data(r.text)[:-1] if c["choices"]]
                calls = [t for d in deltas for t in d.get("tool_calls") or []]
            else:
                calls = r.json["choices"][0]["message"]["tool_calls"]
            assert calls[0]["function"]["name"] == "get_weather"
    finally:
        await openai_like.runner.cleanup()
        await claude.runner.cleanup()


async def test_demo_embeddings_answer_one_vector_per_input(http: aiohttp.ClientSession) -> None:
    fake = FakeProvider("e")
    try:
        url = await fake.start()
        for given, count in (("one", 1), (["a", "b c", "d"], 3), ([1, 2, 3], 1), ([[1], [2]], 2)):
            async with http.post(url + "/embeddings", json={"model": "m", "input": given}) as r:
                body = await r.json()
            assert [d["index"] for d in body["data"]] == list(range(count))
            assert body["usage"]["prompt_tokens"] > 0
    finally:
        await fake.runner.cleanup()


@pytest.mark.parametrize("stream", [False, True])
async def test_demo_chain_serves_responses_and_count_tokens(
    sidecar: SidecarFactory, http: aiohttp.ClientSession, stream: bool
) -> None:
    fakes: list[FakeProvider | FakeClaude] = [
        FakeProvider("flaky", ("503",)),
        FakeClaude(),
        FakeProvider("healthy"),
    ]
    try:
        flaky, claude, healthy = [await f.start() for f in fakes]
        sc = await sidecar(demo_env(flaky, claude, healthy))
        body = {"model": "gpt-4o-mini", "input": "hi", "stream": stream}
        r = await post(http, sc.url, body, "/v1/responses")
        assert r.status == 200, r.text
        assert r.headers["x-sidecar-failures"] == "flaky=overloaded"
        if stream:
            assert r.text.rstrip().rsplit("\n\n", 1)[-1].startswith("event: response.completed")
        else:
            assert r.json["status"] == "completed"
        count = {"model": "claude-demo", "messages": [{"role": "user", "content": "hi"}]}
        r = await post(http, sc.url, count, "/v1/messages/count_tokens")
        assert r.status == 200, r.text
        assert r.json["input_tokens"] > 0
        assert r.headers["x-sidecar-backend"] == "claude"
    finally:
        for f in fakes:
            await f.runner.cleanup()
