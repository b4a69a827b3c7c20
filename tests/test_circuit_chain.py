"""Circuits in the running chain: backends that misbehave for a while, over real loopback HTTP.
Circuits run on a fake clock: a cooldown passes when the test advances it, never by sleeping."""

import asyncio
import email.utils
import io
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from conftest import (
    Answer,
    FakeClock,
    FakeFactory,
    Running,
    SidecarFactory,
    chain_env,
    chat,
    post,
)
from fakes.openai_upstream import FakeOpenAI, Script, Seen
from prometheus_client import CollectorRegistry

from sidecar.app import Sidecar, create_app
from sidecar.config import load_config

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
    clock = FakeClock()
    sc = await sidecar(chain_env(a, b, **FAST), clock=clock)
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

    clock.advance(0.4)  # cooldown 0.3 × at most 1.2
    probe = await post(http, sc.url, chat())
    assert probe.headers["x-sidecar-failures"] == "b0=overloaded"  # the probe failed: open again
    assert len(a.seen) == 3
    assert circuit_of(sc, "b0")["circuit"] == "open"

    a.default = Script()  # the primary recovers
    clock.advance(0.75)  # doubled cooldown 0.6 × at most 1.2
    back = await post(http, sc.url, chat())
    assert back.headers["x-sidecar-backend"] == "b0"
    assert "x-sidecar-failures" not in back.headers
    assert circuit_of(sc, "b0")["circuit"] == "closed"
    assert (await post(http, sc.url, chat())).headers["x-sidecar-backend"] == "b0"


async def test_circuit_state_is_live_in_the_gauge_and_status(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    clock = FakeClock()
    sc = await sidecar(chain_env(a, b, **FAST), clock=clock)
    for _ in range(2):
        await post(http, sc.url, chat())
    async with http.get(sc.admin + "/metrics") as r:
        assert 'llm_sidecar_backend_circuit_state{backend="b0"} 1.0' in await r.text()
    c = circuit_of(sc, "b0")
    assert 0 < float(c["cooldown_remaining_s"]) <= 0.36  # type: ignore[arg-type]
    assert c["consecutive_failures"] == 2
    clock.advance(0.4)
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
    clock = FakeClock()
    sc = await sidecar(chain_env(a, b, **FAST), clock=clock)
    for _ in range(2):
        await post(http, sc.url, chat())
    a.default = Script(delay_s=0.3)
    clock.advance(0.4)
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


class ScenarioClock:
    """The circuits' clock: `t` seconds into the scenario."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return 1000.0 + self.t


class Outage(FakeOpenAI):
    """A primary that answers 503 until `recovers_at` on the fake clock, then is healthy; from
    `hangs_from` on, a request during the outage hangs until `gate` is set (then gets its 503)."""

    def __init__(self, clock: ScenarioClock, recovers_at: float, hangs_from: float | None) -> None:
        super().__init__()
        self.clock, self.recovers_at, self.hangs_from = clock, recovers_at, hangs_from
        self.gate = asyncio.Event()
        self.hanging = 0

    async def take(self, seen: Seen) -> Script:
        self.seen.append(seen)
        t = self.clock.t
        if t >= self.recovers_at:
            return Script()
        if self.hangs_from is not None and t >= self.hangs_from:
            self.hanging += 1
            await self.gate.wait()
        return Script(status=503)


@dataclass
class Step:
    t: float
    before: str  # the circuit in /status as the request arrives
    backend: str | None  # who answered; None while the request hangs
    after: str
    gauge: float  # llm_sidecar_backend_circuit_state after the request
    cooldown_s: float


ClockedFactory = Callable[[dict[str, str], ScenarioClock, float], Awaitable[Running]]


@pytest.fixture
async def clocked() -> AsyncIterator[ClockedFactory]:
    started: list[Sidecar] = []

    async def make(env: dict[str, str], clock: ScenarioClock, jitter: float) -> Running:
        full = {"SIDECAR_PORT": "0", "SIDECAR_ADMIN_PORT": "0", **env}
        registry, log = CollectorRegistry(), io.BytesIO()
        app = create_app(
            load_config(full), registry=registry, log_stream=log, clock=clock, jitter=lambda: jitter
        )
        started.append(app)
        proxy, admin = await app.start()
        return Running(app, registry, f"http://127.0.0.1:{proxy}", f"http://127.0.0.1:{admin}", log)

    yield make
    for app in started:
        await app.stop()


async def play_outage(
    http: aiohttp.ClientSession, sc: Running, primary: Outage, clock: ScenarioClock
) -> tuple[list[Step], list[Answer]]:
    """A streaming request every 4 s of fake time, t = 0 … 100, each watched in /status and
    /metrics; then the hanging requests are let go and every answer collected."""
    steps, pending = [], []
    for t in range(0, 101, 4):
        clock.t = t
        before = await admin_circuit(http, sc)
        hanging = primary.hanging
        task = asyncio.create_task(post(http, sc.url, chat(stream=True)))
        while not task.done() and primary.hanging == hanging:
            await asyncio.sleep(0.005)
        backend = task.result().headers["x-sidecar-backend"] if task.done() else None
        pending.append(task)
        after = await admin_circuit(http, sc)
        gauge = await admin_gauge(http, sc)
        steps.append(
            Step(
                t,
                before["circuit"],
                backend,
                after["circuit"],
                gauge,
                after["cooldown_remaining_s"],
            )
        )
    primary.gate.set()
    return steps, list(await asyncio.gather(*pending))


async def admin_circuit(http: aiohttp.ClientSession, sc: Running) -> dict[str, Any]:
    async with http.get(sc.admin + "/status") as r:
        status = await r.json()
    return next(b for b in status["backends"] if b["name"] == "b0")


async def admin_gauge(http: aiohttp.ClientSession, sc: Running) -> float:
    async with http.get(sc.admin + "/metrics") as r:
        text = await r.text()
    found = re.search(r'^llm_sidecar_backend_circuit_state\{backend="b0"\} (\S+)$', text, re.M)
    assert found is not None
    return float(found.group(1))


GAUGE = {"closed": 0.0, "open": 1.0, "half_open": 2.0}
# The run: RETRIES=1, a quick backoff (real time), the circuit settings at their defaults.
OUTAGE_ENV = {"B0_RETRIES": "1", "B0_RETRY_BACKOFF_S": "0.01"}


def trace(steps: list[Step]) -> list[tuple[float, str, str | None, str]]:
    return [(s.t, s.before, s.backend, s.after) for s in steps]


def first_use_after(steps: list[Step], recovery: float) -> float:
    """Seconds from the recovery to the first request the primary answered (inf: never)."""
    used = [s.t for s in steps if s.t >= recovery and s.backend == "b0"]
    return used[0] - recovery if used else float("inf")


async def test_60_s_outage_every_request_answered_and_the_primary_back_within_30_s(
    fake: FakeFactory, clocked: ClockedFactory, http: aiohttp.ClientSession
) -> None:
    clock = ScenarioClock()
    primary = await Outage(clock, recovers_at=60, hangs_from=None).start()
    try:
        sc = await clocked(chain_env(primary, await fake(), **OUTAGE_ENV), clock, 1.0)
        steps, answers = await play_outage(http, sc, primary, clock)
    finally:
        await primary.stop()
    assert [a.status for a in answers] == [200] * 26
    c, o, h = "closed", "open", "half_open"
    expected = (
        [(t, c, "b1", c) for t in (0, 4, 8, 12)]
        + [(16, c, "b1", o)]  # the 5th failed turn opens it: cooldown 10 s
        + [(t, o, "b1", o) for t in (20, 24)]
        + [(28, h, "b1", o)]  # the probe fails: 20 s
        + [(t, o, "b1", o) for t in (32, 36, 40, 44)]
        + [(48, h, "b1", o)]  # fails again: 40 s, capped at 30 (it was 300)
        + [(t, o, "b1", o) for t in range(52, 80, 4)]  # recovered at 60
        + [(80, h, "b0", c)]  # 20 s after the recovery
        + [(t, c, "b0", c) for t in range(84, 101, 4)]
    )
    assert trace(steps) == expected
    assert [s.cooldown_s for s in steps if s.t in (16, 28, 48)] == [10.0, 20.0, 30.0]
    assert all(s.gauge == GAUGE[s.after] for s in steps)


async def test_60_s_outage_with_a_hanging_probe_the_primary_is_back_within_30_s(
    fake: FakeFactory, clocked: ClockedFactory, http: aiohttp.ClientSession
) -> None:
    clock = ScenarioClock()
    primary = await Outage(clock, recovers_at=60, hangs_from=40).start()
    try:
        sc = await clocked(chain_env(primary, await fake(), **OUTAGE_ENV), clock, 1.0)
        steps, answers = await play_outage(http, sc, primary, clock)
    finally:
        await primary.stop()
    assert [a.status for a in answers] == [200] * 26
    c, o, h = "closed", "open", "half_open"
    expected = (
        [(t, c, "b1", c) for t in (0, 4, 8, 12)]
        + [(16, c, "b1", o)]
        + [(t, o, "b1", o) for t in (20, 24)]
        + [(28, h, "b1", o)]
        + [(t, o, "b1", o) for t in (32, 36, 40, 44)]
        + [(48, h, None, h)]  # the probe hangs (its deadline is 60 s of real time)
        + [(t, h, "b1", h) for t in range(52, 80, 4)]  # it holds the slot for 30 s, not 60
        + [(80, h, "b0", c)]  # the next request probes: recovered, 20 s after
        + [(t, c, "b0", c) for t in range(84, 101, 4)]
    )
    assert trace(steps) == expected
    assert primary.hanging == 1
    assert all(s.gauge == GAUGE[s.after] for s in steps)
    skipped = [a.headers.get("x-sidecar-failures") for a in answers[13:20]]
    assert skipped == ["b0=circuit_open"] * 7


@pytest.mark.parametrize("hangs_from", [None, 40], ids=["503", "hanging-probe"])
@pytest.mark.parametrize("jitter", [0.8, 1.2])
async def test_60_s_outage_at_either_end_of_the_jitter_the_primary_is_back_within_30_s(
    fake: FakeFactory,
    clocked: ClockedFactory,
    http: aiohttp.ClientSession,
    hangs_from: float | None,
    jitter: float,
) -> None:
    clock = ScenarioClock()
    primary = await Outage(clock, recovers_at=60, hangs_from=hangs_from).start()
    try:
        sc = await clocked(chain_env(primary, await fake(), **OUTAGE_ENV), clock, jitter)
        steps, answers = await play_outage(http, sc, primary, clock)
    finally:
        await primary.stop()
    assert [a.status for a in answers] == [200] * 26
    assert first_use_after(steps, 60) <= 30
    assert all(s.gauge == GAUGE[s.after] for s in steps)
