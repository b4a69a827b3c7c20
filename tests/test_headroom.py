"""Rate-limit headroom over loopback (README "Rate-limit headroom"): the upstream's own quota
headers on every answer set the gauges, and a backend that reports nothing left is skipped until
its reset, as if its circuit were open, without an upstream attempt."""

import time
from datetime import UTC, datetime

import aiohttp
from backends.kinds import chain
from conftest import FakeClock, FakeFactory, Running, SidecarFactory, chain_env, chat, post
from fakes.anthropic_upstream import FakeAnthropic
from fakes.anthropic_upstream import Script as AScript
from fakes.openai_upstream import Script

EMPTY = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "20s",
    "x-ratelimit-limit-tokens": "30000",
    "x-ratelimit-remaining-tokens": "12000",
    "x-ratelimit-reset-tokens": "6m0s",
}


def remaining(sc: Running, backend: str, resource: str) -> float | None:
    labels = {"backend": backend, "resource": resource}
    return sc.registry.get_sample_value("llm_sidecar_backend_ratelimit_remaining", labels)


async def test_openai_quota_headers_set_the_remaining_gauges(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    headers = EMPTY | {"x-ratelimit-remaining-requests": "499"}
    sc = await sidecar(chain_env(await fake(Script(headers=headers))))
    assert remaining(sc, "b0", "requests") is None  # no series before the upstream reports one
    assert (await post(http, sc.url, chat())).status == 200
    assert remaining(sc, "b0", "requests") == 499
    assert remaining(sc, "b0", "tokens") == 12000
    labels = {"backend": "b0", "resource": "tokens"}
    assert sc.registry.get_sample_value("llm_sidecar_backend_ratelimit_limit", labels) == 30000


async def test_quota_headers_of_an_error_answer_count_too(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    sc = await sidecar(chain_env(await fake(Script(status=429, headers=EMPTY)), await fake()))
    assert (await post(http, sc.url, chat())).status == 200
    assert remaining(sc, "b0", "requests") == 0


async def test_a_backend_with_no_requests_left_is_skipped_until_its_reset(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(), await fake()
    a.script(Script(headers=EMPTY))
    clock = FakeClock()
    sc = await sidecar(chain_env(a, b), clock=clock)
    assert (await post(http, sc.url, chat())).status == 200  # it answered, and said "no more"
    r = await post(http, sc.url, chat())
    assert r.status == 200
    assert r.headers["x-sidecar-backend"] == "b1"
    assert r.headers["x-sidecar-failures"] == "b0=circuit_open"
    assert len(a.seen) == 1  # no attempt spent on a certain 429
    labels = {"chain": "default", "backend": "b0", "class": "circuit_open"}
    assert sc.metric("llm_sidecar_backend_failures_total", **labels) == 1
    async with http.get(sc.admin + "/status") as resp:
        status = await resp.json()
    block = status["backends"][0]["ratelimit_block"]
    assert block["resource"] == "requests"
    assert "ratelimit" in block["reason"] and 19 < block["remaining_s"] <= 20
    assert status["backends"][0]["circuit"] == "closed"  # the circuit itself learnt nothing
    clock.advance(20.5)
    r = await post(http, sc.url, chat())
    assert r.headers["x-sidecar-backend"] == "b0"
    assert len(a.seen) == 2


async def test_the_skip_lasts_at_most_retry_after_max(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(), await fake()
    a.script(Script(headers=EMPTY | {"x-ratelimit-reset-requests": "2h"}))
    clock = FakeClock()
    sc = await sidecar(chain_env(a, b, SIDECAR_RETRY_AFTER_MAX_S="30"), clock=clock)
    await post(http, sc.url, chat())
    clock.advance(29)
    assert (await post(http, sc.url, chat())).headers["x-sidecar-backend"] == "b1"
    clock.advance(1.5)
    assert (await post(http, sc.url, chat())).headers["x-sidecar-backend"] == "b0"


async def test_every_backend_out_of_quota_answers_503_with_retry_after_the_reset(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(headers=EMPTY))
    sc = await sidecar(chain_env(a), clock=FakeClock())
    await post(http, sc.url, chat())
    r = await post(http, sc.url, chat())
    assert r.status == 503
    assert r.headers["retry-after"] == "20"
    assert r.json["error"]["code"] == "circuit_open"
    assert len(a.seen) == 1


async def test_anthropic_headers_with_an_rfc3339_reset_gate_the_backend_too(
    claude: FakeAnthropic, fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    reset = datetime.fromtimestamp(time.time() + 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-remaining": "7000",
    }
    claude.script(AScript(headers=headers))
    sc = await sidecar(chain(("claude", claude), ("gpt", await fake())), clock=FakeClock())
    body = chat(model="claude-test")
    assert (await post(http, sc.url, body)).headers["x-sidecar-backend"] == "claude"
    assert remaining(sc, "claude", "requests") == 0
    assert remaining(sc, "claude", "tokens") == 7000
    assert (await post(http, sc.url, body)).headers["x-sidecar-backend"] == "gpt"
    assert len(claude.seen) == 1
