"""Circuits in the running chain: backends that misbehave for a while, over real loopback HTTP."""

import asyncio
import email.utils
import time

import aiohttp
from conftest import FakeFactory, SidecarFactory, chain_env, chat, post
from fakes.openai_upstream import Script

FAST = {
    "SIDECAR_CIRCUIT_FAILURES": "2",
    "SIDECAR_CIRCUIT_COOLDOWN_S": "0.3",
    "SIDECAR_CIRCUIT_MAX_COOLDOWN_S": "0.6",
}


def circuit_of(sc: object, name: str) -> dict[str, object]:
    status = sc.app.status()  # type: ignore[attr-defined]
    return next(b for b in status["backends"] if b["name"] == name)


async def test_dead_primary_is_skipped_then_probed_then_used_again(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    sc = await sidecar(chain_env(a, b, **FAST))
    for _ in range(2):
        assert (await post(http, sc.url, chat())).headers["x-sidecar-failures"] == "b0=overloaded"
    skipped = await post(http, sc.url, chat())
    assert skipped.headers["x-sidecar-failures"] == "b0=circuit_open"
    assert skipped.headers["x-sidecar-attempts"] == "1"
    assert circuit_of(sc, "b0")["circuit"] == "open"
    assert (
        sc.metric(
            "llm_sidecar_backend_attempts_total", chain="default", backend="b0", outcome="skipped"
        )
        == 1
    )
    assert len(a.seen) == 2

    await asyncio.sleep(0.4)  # cooldown 0.3 × at most 1.2
    probe = await post(http, sc.url, chat())
    assert probe.headers["x-sidecar-failures"] == "b0=overloaded"  # the probe failed: open again
    assert len(a.seen) == 3
    assert circuit_of(sc, "b0")["circuit"] == "open"

    a.default = Script()  # the primary recovers
    await asyncio.sleep(0.75)  # doubled cooldown 0.6 × at most 1.2
    back = await post(http, sc.url, chat())
    assert back.headers["x-sidecar-backend"] == "b0"
    assert "x-sidecar-failures" not in back.headers
    assert circuit_of(sc, "b0")["circuit"] == "closed"
    assert (await post(http, sc.url, chat())).headers["x-sidecar-backend"] == "b0"


async def test_circuit_state_is_live_in_the_gauge_and_status(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    sc = await sidecar(chain_env(a, b, **FAST))
    for _ in range(2):
        await post(http, sc.url, chat())
    async with http.get(sc.admin + "/metrics") as r:
        assert 'llm_sidecar_backend_circuit_state{backend="b0"} 1.0' in await r.text()
    c = circuit_of(sc, "b0")
    assert 0 < float(c["cooldown_remaining_s"]) <= 0.36  # type: ignore[arg-type]
    assert c["consecutive_failures"] == 2
    await asyncio.sleep(0.4)
    async with http.get(sc.admin + "/metrics") as r:
        assert 'llm_sidecar_backend_circuit_state{backend="b0"} 2.0' in await r.text()
    assert circuit_of(sc, "b0")["circuit"] == "half_open"


async def test_non_consecutive_failures_never_open_the_circuit(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(), await fake()
    a.script(*[Script(status=503) if i % 2 == 0 else Script() for i in range(10)])
    sc = await sidecar(chain_env(a, b, **FAST))
    for _ in range(10):
        await post(http, sc.url, chat())
    assert len(a.seen) == 10
    assert circuit_of(sc, "b0")["circuit"] == "closed"


async def test_429_with_retry_after_opens_at_once_for_that_long(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=429, headers={"Retry-After": "2"})), await fake()
    sc = await sidecar(chain_env(a, b))
    await post(http, sc.url, chat())
    c = circuit_of(sc, "b0")
    assert c["circuit"] == "open"
    assert 1.5 < float(c["cooldown_remaining_s"]) <= 2.0  # type: ignore[arg-type]
    assert (await post(http, sc.url, chat())).headers["x-sidecar-failures"] == "b0=circuit_open"


async def test_retry_after_as_an_http_date_and_capped_by_retry_after_max(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    a, b = await fake(Script(status=429, headers={"Retry-After": when})), await fake()
    sc = await sidecar(chain_env(a, b))
    await post(http, sc.url, chat())
    assert 28 < float(circuit_of(sc, "b0")["cooldown_remaining_s"]) <= 30  # type: ignore[arg-type]

    a2 = await fake(Script(status=429, headers={"Retry-After": "100000"}))
    sc2 = await sidecar(chain_env(a2, b, SIDECAR_RETRY_AFTER_MAX_S="3"))
    await post(http, sc2.url, chat())
    assert 2.5 < float(circuit_of(sc2, "b0")["cooldown_remaining_s"]) <= 3  # type: ignore[arg-type]


async def test_garbage_retry_after_is_ignored(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=429, headers={"Retry-After": "soon-ish"})), await fake()
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat())
    assert r.headers["x-sidecar-backend"] == "b1"
    assert circuit_of(sc, "b0")["circuit"] == "closed"


async def test_quota_exhausted_opens_the_circuit_at_once(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    quota = {
        "error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}
    }
    a, b = await fake(Script(status=429, body=quota)), await fake()
    sc = await sidecar(chain_env(a, b))
    await post(http, sc.url, chat())
    assert circuit_of(sc, "b0")["circuit"] == "open"


async def test_every_backend_skipped_answers_503_at_once_with_retry_after(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(status=429, headers={"Retry-After": "4"}))
    sc = await sidecar(chain_env(a))
    first = await post(http, sc.url, chat())
    assert first.status == 429
    t0 = time.monotonic()
    r = await post(http, sc.url, chat())
    assert time.monotonic() - t0 < 0.2
    assert r.status == 503
    assert r.headers["retry-after"] == "4"
    assert r.headers["x-anyllm-fallback-exhausted"] == "true"
    assert r.headers["x-sidecar-attempts"] == "0"
    assert r.headers["x-sidecar-failures"] == "b0=circuit_open"
    assert "x-sidecar-backend" not in r.headers
    assert r.json["error"]["code"] == "circuit_open"
    assert len(a.seen) == 1


async def test_half_open_lets_exactly_one_probe_through_under_20_concurrent_requests(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    sc = await sidecar(chain_env(a, b, **FAST))
    for _ in range(2):
        await post(http, sc.url, chat())
    a.default = Script(delay_s=0.3)
    await asyncio.sleep(0.4)
    answers = await asyncio.gather(*(post(http, sc.url, chat()) for _ in range(20)))
    assert len(a.seen) == 3  # 2 opening failures + exactly one probe
    served = [r.headers["x-sidecar-backend"] for r in answers]
    assert served.count("b0") == 1
    assert served.count("b1") == 19
    assert circuit_of(sc, "b0")["circuit"] == "closed"


async def test_total_outage_costs_the_opening_failures_plus_one_probe_per_cooldown(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    env = chain_env(
        a,
        b,
        SIDECAR_CIRCUIT_FAILURES="3",
        SIDECAR_CIRCUIT_COOLDOWN_S="0.25",
        SIDECAR_CIRCUIT_MAX_COOLDOWN_S="0.25",
    )
    sc = await sidecar(env)
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < 1.5:
        r = await post(http, sc.url, chat())
        assert r.status == 200
        sent += 1
    # Each cooldown is at least 0.25 × 0.8 s: at most ceil(1.5 / 0.2) probes after the 3 failures.
    assert sent > 30
    assert len(a.seen) <= 3 + 8


async def test_all_skipped_is_503_even_when_some_backends_cannot_take_the_request(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(Script(status=429, headers={"Retry-After": "3"}))
    env = {
        **chain_env(a),
        "SIDECAR_BACKENDS": "b0,claude",
        "CLAUDE_KIND": "anthropic",
        "CLAUDE_API_KEY": "sk-ant-canary-0123456789",
    }
    sc = await sidecar(env)
    body = chat(n=2)  # more than one choice: no Anthropic backend can take it
    await post(http, sc.url, body)
    r = await post(http, sc.url, body)
    assert r.status == 503
    assert r.headers["x-sidecar-failures"] == "b0=circuit_open,claude=unsupported"
    assert r.headers["retry-after"] in ("3", "2")
