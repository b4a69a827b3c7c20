"""Rate limits (`sidecar.ratelimit`): quota headers parsed, and the per-backend headroom gate;
then headroom over loopback (README "Rate-limit headroom"): the upstream's own quota headers on
every answer set the gauges, and a backend that reports nothing left is skipped until its reset,
as if its circuit were open, without an upstream attempt."""

import time
from datetime import UTC, datetime

import aiohttp
import pytest
from backends.kinds import chain
from conftest import FakeClock, FakeFactory, Running, SidecarFactory, chain_env, chat, post
from fakes.anthropic_upstream import FakeAnthropic
from fakes.anthropic_upstream import Script as AScript
from fakes.openai_upstream import Script
from multidict import CIMultiDict

from sidecar.ratelimit import Headroom, Quota, Resource, go_duration, parse_ratelimit

NOW = datetime(2026, 12, 7, 6, 0, 0, tzinfo=UTC).timestamp()
R, T = Resource.REQUESTS, Resource.TOKENS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("250us", 0.00025),
        ("7.66", 7.66),
        (" 2m59.56s ", 179.56),
    ],
)
def test_go_durations_and_plain_seconds_parse(value: str, seconds: float) -> None:
    assert go_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "-1s", "1d", "s", "1.s", "nan", "1e3", "6m0", "soon"])
def test_garbage_durations_are_ignored(value: str) -> None:
    assert go_duration(value) is None


def test_openai_headers_give_both_resources_case_insensitively() -> None:
    headers = CIMultiDict(
        {
            "X-RateLimit-Limit-Requests": "500",
            "X-RateLimit-Remaining-Requests": "499",
            "X-RateLimit-Reset-Requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    requests, tokens = parse_ratelimit(headers, now=NOW)
    assert (requests.resource, requests.remaining, requests.limit) == (R, 499, 500)
    assert requests.reset_s == pytest.approx(0.12)
    assert tokens == Quota(T, 0, 30000, 360.0)


def test_azure_remaining_without_limit_or_reset_is_still_reported() -> None:
    headers = CIMultiDict({"x-ratelimit-remaining-requests": "17"})
    assert parse_ratelimit(headers, now=NOW) == [Quota(R, 17, None, None)]


def test_anthropic_headers_reset_at_an_rfc3339_time() -> None:
    headers = CIMultiDict(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2026-12-07T06:00:30Z",
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "39000",
            "anthropic-ratelimit-tokens-reset": "2026-12-07T07:00:01.500+01:00",
        }
    )
    assert parse_ratelimit(headers, now=NOW) == [
        Quota(R, 0, 50, 30.0),
        Quota(T, 39000, 40000, 1.5),
    ]


@pytest.mark.parametrize("reset", ["tomorrow", "2026-12-07T06:00:30", "1s"])
def test_anthropic_reset_that_is_not_rfc3339_with_offset_is_dropped(reset: str) -> None:
    headers = CIMultiDict(
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
        }
    )
    assert parse_ratelimit(headers, now=NOW) == [Quota(R, 0, None, None)]


@pytest.mark.parametrize("remaining", ["-1", "many", "1.5", "", "9" * 40])
def test_a_remaining_that_is_not_a_plain_integer_drops_the_resource(remaining: str) -> None:
    headers = CIMultiDict({"x-ratelimit-remaining-requests": remaining})
    assert parse_ratelimit(headers, now=NOW) == []


def test_no_quota_headers_no_quotas() -> None:
    assert parse_ratelimit(CIMultiDict({"content-type": "application/json"}), now=NOW) == []


def _gate(clock: Clock, max_wait_s: float = 300) -> Headroom:
    return Headroom(max_wait_s=max_wait_s, clock=clock)


def test_zero_remaining_with_a_future_reset_blocks_until_the_reset() -> None:
    clock = Clock()
    gate = _gate(clock)
    gate.observe([Quota(R, 0, 100, 12.0)])
    block = gate.blocked()
    assert block is not None
    assert (block.resource, block.reason) == (R, "ratelimit: no requests remaining until reset")
    assert gate.remaining_s() == 12.0
    clock.now += 11.9
    assert gate.blocked() is not None
    clock.now += 0.1
    assert gate.blocked() is None
    assert gate.remaining_s() == 0.0


def test_the_block_is_capped_at_max_wait() -> None:
    clock = Clock()
    gate = _gate(clock, max_wait_s=5)
    gate.observe([Quota(T, 0, None, 3600.0)])
    assert gate.remaining_s() == 5.0


@pytest.mark.parametrize("reset", [None, 0.0, -3.0])
def test_zero_remaining_without_a_future_reset_blocks_nothing(reset: float | None) -> None:
    gate = _gate(Clock())
    gate.observe([Quota(R, 0, 100, reset)])
    assert gate.blocked() is None


def test_something_remaining_lifts_that_resource_only() -> None:
    clock = Clock()
    gate = _gate(clock)
    gate.observe([Quota(R, 0, 100, 10.0), Quota(T, 0, 100, 20.0)])
    assert gate.blocked() is not None
    gate.observe([Quota(T, 5, 100, 1.0)])
    block = gate.blocked()
    assert block is not None
    assert block.resource is R
    gate.observe([Quota(R, 1, 100, 1.0)])
    assert gate.blocked() is None


def test_the_longest_block_is_the_one_reported() -> None:
    clock = Clock()
    gate = _gate(clock)
    gate.observe([Quota(R, 0, 100, 10.0), Quota(T, 0, 100, 20.0)])
    block = gate.blocked()
    assert block is not None
    assert (block.resource, block.until) == (T, 1020.0)


def test_every_quota_is_handed_to_the_observer() -> None:
    seen: list[Quota] = []
    gate = Headroom(max_wait_s=300, clock=Clock(), on_quota=seen.append)
    quotas = [Quota(R, 3, 10, 1.0), Quota(T, 0, 10, None)]
    gate.observe(quotas)
    assert seen == quotas


# ---------------------------------------------------------------- headroom over loopback

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
