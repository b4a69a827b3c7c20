"""A real sidecar, scripted fake upstreams and a real Prometheus on loopback.

Proves that every dashboard panel and variable query returns data, that every metric the
dashboard and the rules name is exported, and that `promtool check metrics` accepts /metrics.
"""

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from .contract import METRICS
from .dashboard import (
    Query,
    label_values,
    load,
    metric_names,
    panel_queries,
    rules_text,
    substitute,
    variable_queries,
)
from .paths import REPO, RULES, require_tool

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Each chain provokes one behaviour; its backends point at fake upstream "modes" (path prefixes).
CHAINS: dict[str, list[tuple[str, str]]] = {
    "default": [("ratelimited", "r429"), ("ok", "ok")],
    "exhaust": [("overloaded", "r503"), ("broken", "r500")],
    "mixed": [
        ("quota", "quota"),
        ("refused", "refused"),
        ("slow", "slow"),
        ("toolong", "ctx"),
        ("ok2", "ok"),
    ],
    "auth": [("badkey", "r401"), ("ok", "ok")],
    "client": [("badreq", "r400"), ("ok", "ok")],
    "garbage": [("garbage", "garbage"), ("ok", "ok")],
    "circuit": [("throttled", "r429ra"), ("ok", "ok")],
    "stream": [("cut", "cut"), ("ok", "ok")],
    "hangup": [("sleepy", "slow")],
}
EXPECTED_CLASSES = {
    "rate_limited",
    "quota_exhausted",
    "overloaded",
    "server_error",
    "connect_error",
    "timeout",
    "auth",
    "client_error",
    "context_length",
    "invalid_response",
    "circuit_open",
    "stream_interrupted",
}
SCRAPE_INTERVAL_S = 1.0
# One sidecar, one Prometheus and one round of traffic serve every test of the module.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _error(status: int, code: str | None, etype: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": f"fake {status}", "type": etype, "param": None, "code": code}}
    return web.json_response(body, status=status)


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 3},
        },
    }


# What OpenAI sends on every answer: the headroom panel and alert read it back.
RATELIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-reset-requests": "120ms",
    "x-ratelimit-limit-tokens": "30000",
    "x-ratelimit-remaining-tokens": "29000",
    "x-ratelimit-reset-tokens": "2s",
}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    event = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return b"data: " + json.dumps({**event, "choices": [choice]}).encode() + b"\n\n"


async def _stream(request: web.Request, *, complete: bool) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"content-type": "text/event-stream", **RATELIMIT_HEADERS}
    )
    await response.prepare(request)
    await response.write(_chunk({"role": "assistant", "content": ""}))
    await response.write(_chunk({"content": "Hello"}))
    if complete:
        await response.write(_chunk({}, "stop"))
        usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
        tail = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage}
        await response.write(b"data: " + json.dumps(tail).encode() + b"\n\ndata: [DONE]\n\n")
    await response.write_eof()
    return response


async def _upstream(request: web.Request) -> web.StreamResponse:
    mode = request.match_info["mode"]
    body = await request.json()
    streaming = bool(body.get("stream"))
    match mode:
        case "ok":
            if streaming:
                return await _stream(request, complete=True)
            return web.json_response(_completion(body.get("model", "m")), headers=RATELIMIT_HEADERS)
        case "cut":
            return await _stream(request, complete=False)
        case "r429":
            return _error(429, "rate_limit_exceeded", "requests")
        case "r429ra":
            response = _error(429, "rate_limit_exceeded", "requests")
            response.headers["Retry-After"] = "120"
            return response
        case "quota":
            return _error(429, "insufficient_quota", "insufficient_quota")
        case "r503":
            return _error(503, None, "server_error")
        case "r500":
            return _error(500, None, "server_error")
        case "r401":
            return _error(401, "invalid_api_key")
        case "r400":
            return _error(400, None)
        case "ctx":
            return _error(400, "context_length_exceeded")
        case "garbage":
            return web.Response(status=200, text="{not json", content_type="application/json")
        case "slow":
            await asyncio.sleep(2)
            return web.json_response(_completion("m"))
    raise web.HTTPNotFound()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream_port() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/{mode}/v1/chat/completions", _upstream)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


def _sidecar_env(tmp_path: Path, upstream: int, proxy: int, admin: int) -> dict[str, str]:
    closed_port = _free_port()
    chains = {
        chain: [{"name": name, "env_prefix": f"{name.upper()}_"} for name, _ in backends]
        for chain, backends in CHAINS.items()
    }
    config = tmp_path / "chains.yaml"
    config.write_text(yaml.safe_dump({"fallback_chains": chains}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "PROMETHEUS_"))}
    env.update(
        SIDECAR_CONFIG=str(config),
        SIDECAR_PORT=str(proxy),
        SIDECAR_ADMIN_PORT=str(admin),
        # Only a Retry-After opens a circuit here, so each chain behaves the same every round.
        SIDECAR_CIRCUIT_FAILURES="100000",
        SIDECAR_SHUTDOWN_GRACE_S="1",
        SIDECAR_LOG_LEVEL="WARNING",
    )
    for backends in CHAINS.values():
        for name, mode in backends:
            prefix = f"{name.upper()}_"
            port = closed_port if mode == "refused" else upstream
            env[prefix + "BASE_URL"] = f"http://127.0.0.1:{port}/{mode}/v1"
            env[prefix + "API_KEY"] = f"sk-fake-{name}"
    env.update(
        SLOW_RESPONSE_TIMEOUT_S="0.3",
        SLOW_FIRST_TOKEN_TIMEOUT_S="0.3",
        REFUSED_CONNECT_TIMEOUT_S="1",
    )
    return env


async def _wait_http_ok(url: str, process: asyncio.subprocess.Process, what: str) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                pytest.fail(f"{what} exited with {process.returncode}", pytrace=False)
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail(f"{what} did not answer {url} within 20 s", pytrace=False)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sidecar(
    tmp_path_factory: pytest.TempPathFactory, upstream_port: int
) -> AsyncIterator[tuple[int, int]]:
    if not (REPO / "sidecar" / "app.py").exists():
        pytest.fail("sidecar/app.py is missing: the core package is not built yet", pytrace=False)
    proxy, admin = _free_port(), _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "serve",
        env=_sidecar_env(tmp_path_factory.mktemp("sidecar"), upstream_port, proxy, admin),
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await _wait_http_ok(f"http://127.0.0.1:{admin}/readyz", process, "llm-sidecar serve")
        yield proxy, admin
    finally:
        await _stop(process)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prometheus(
    tmp_path_factory: pytest.TempPathFactory, sidecar: tuple[int, int]
) -> AsyncIterator[str]:
    binary = require_tool("prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "llm-sidecar",
                        "static_configs": [{"targets": [f"127.0.0.1:{sidecar[1]}"]}],
                    }
                ],
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_http_ok(f"{url}/-/ready", process, "prometheus")
        yield url
    finally:
        await _stop(process)


async def _hang_up(session: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> None:
    headers = {"x-sidecar-chain": "hangup"}
    with pytest.raises(TimeoutError):
        async with session.post(
            f"{base}/v1/chat/completions",
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=0.3),
        ) as response:
            await response.read()


async def _drive_traffic(proxy: int) -> None:
    base = f"http://127.0.0.1:{proxy}"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for _ in range(3):
            # rate() sees an increase only between two scrapes: spread the rounds over several.
            await asyncio.sleep(SCRAPE_INTERVAL_S * 1.5)
            await _hang_up(session, base, body)
            for chain in CHAINS.keys() - {"hangup"}:
                for stream in (False, True):
                    headers = {"x-sidecar-chain": chain}
                    payload = {**body, "stream": stream}
                    async with session.post(
                        f"{base}/v1/chat/completions", json=payload, headers=headers
                    ) as response:
                        await response.read()
            async with session.get(f"{base}/v1/models") as response:
                await response.read()
            async with session.get(f"{base}/not-a-route") as response:
                await response.read()


async def _promql(session: aiohttp.ClientSession, url: str, query: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/api/v1/query", params={"query": query}) as response:
        payload = await response.json()
    assert payload["status"] == "success", (query, payload)
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


async def _wait_for_scrapes(
    session: aiohttp.ClientSession, url: str, *, count: int, after: float = 0.0
) -> None:
    # The first scrape comes only after Prometheus' discovery reload (about 5 s after start).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counts = await _promql(session, url, 'count_over_time(up{job="llm-sidecar"}[5m])')
        stamps = await _promql(session, url, 'timestamp(up{job="llm-sidecar"})')
        if (
            counts
            and float(counts[0]["value"][1]) >= count
            and float(stamps[0]["value"][1]) > after
        ):
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"prometheus did not scrape the sidecar {count} times within 30 s")


async def _variable_values(
    session: aiohttp.ClientSession, url: str, query: Query, variables: dict[str, str]
) -> set[str]:
    selector, label = label_values(substitute(query.expr, variables))
    params = {"match[]": selector} if selector else {}
    async with session.get(f"{url}/api/v1/label/{label}/values", params=params) as response:
        payload = await response.json()
    assert payload["status"] == "success", (query, payload)
    return set(payload["data"])


async def _metrics_text(admin: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{admin}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scraped(
    prometheus: str, sidecar: tuple[int, int]
) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        await _wait_for_scrapes(session, prometheus, count=2)
        await _drive_traffic(sidecar[0])
        done = time.time()
        await _wait_for_scrapes(session, prometheus, count=4, after=done + SCRAPE_INTERVAL_S * 2)
        yield session, prometheus


async def test_every_dashboard_panel_and_variable_query_returns_data(
    scraped: tuple[aiohttp.ClientSession, str],
) -> None:
    session, url = scraped
    dashboard = load()
    queries = {q.where: q for q in variable_queries(dashboard)}
    everything = {"chain": ".*", "backend": ".*"}
    chains = await _variable_values(session, url, queries["variable chain"], everything)
    assert chains == set(CHAINS)
    backends = await _variable_values(session, url, queries["variable backend"], everything)
    assert backends == {name for chain in CHAINS.values() for name, _ in chain}
    # Grafana sends either the allValue (.*) or every selected value joined as a regex.
    explicit = {"chain": "(" + "|".join(sorted(chains)) + ")"}
    picked = await _variable_values(session, url, queries["variable backend"], explicit)
    assert picked == backends
    explicit["backend"] = "(" + "|".join(sorted(backends)) + ")"
    empty = []
    for variables in (everything, explicit):
        for query in panel_queries(dashboard):
            if not await _promql(session, url, substitute(query.expr, variables)):
                empty.append(f"{query.where} with {variables}")
    assert empty == [], "\n".join(empty)


async def test_every_failure_class_and_outcome_is_observed(
    scraped: tuple[aiohttp.ClientSession, str],
) -> None:
    session, url = scraped
    result = await _promql(session, url, "sum by (class) (llm_sidecar_backend_failures_total) > 0")
    assert {r["metric"]["class"] for r in result} >= EXPECTED_CLASSES
    exhausted = await _promql(
        session, url, 'llm_sidecar_fallback_exhausted_total{chain="exhaust"} > 0'
    )
    assert exhausted
    fallback = await _promql(session, url, 'llm_sidecar:fallback_rate:rate5m{chain="default"} > 0')
    assert fallback
    ttft = await _promql(
        session, url, 'llm_sidecar_backend_first_token_seconds_count{backend="ok"} > 0'
    )
    assert ttft


async def test_recording_and_alert_rules_evaluate_cleanly_on_live_data(
    scraped: tuple[aiohttp.ClientSession, str],
) -> None:
    session, url = scraped
    async with session.get(f"{url}/api/v1/rules") as response:
        groups = (await response.json())["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(re.findall(r"^\s+- (record|alert):", rules_text(), re.M))
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
    for rule in rules:
        if rule["type"] == "recording":
            assert await _promql(session, url, rule["name"]), rule["name"]


async def test_every_metric_in_dashboard_and_rules_is_exported(
    scraped: tuple[aiohttp.ClientSession, str], sidecar: tuple[int, int]
) -> None:
    text = await _metrics_text(sidecar[1])
    families = list(text_string_to_metric_families(text))
    samples = {s.name for family in families for s in family.samples}
    wanted = metric_names(json.dumps(load())) | metric_names(rules_text())
    assert wanted - samples == set()
    for family in families:
        if family.name in METRICS or family.name + "_total" in METRICS:
            name = family.name if family.name in METRICS else family.name + "_total"
            kind, labels = METRICS[name]
            assert family.type == kind, name
            for sample in family.samples:
                assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
    assert {f.name for f in families} >= {n.removesuffix("_total") for n in METRICS}


async def test_promtool_accepts_the_live_metrics(
    scraped: tuple[aiohttp.ClientSession, str], sidecar: tuple[int, int]
) -> None:
    promtool = require_tool("promtool")
    text = await _metrics_text(sidecar[1])
    process = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(text.encode())
    assert process.returncode == 0, output.decode()
