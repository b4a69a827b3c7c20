"""Per-backend circuits (`sidecar.circuit`): the state machine on a fake clock, then circuits in
the running chain, backends that misbehave for a while over real loopback HTTP. Circuits run on a
fake clock: a cooldown passes when the test advances it, never by sleeping."""

from __future__ import annotations

import asyncio
import email.utils
import io
import random
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
from sidecar.circuit import Circuit, CircuitState, retry_after_header
from sidecar.config import load_config

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(
    clock: FakeClock,
    *,
    failures: int = 3,
    cooldown: float = 10.0,
    max_cooldown: float = 300.0,
    retry_after_max: float = 60.0,
    jitter: Callable[[], float] = lambda: 1.0,
    on_change: Callable[[CircuitState], None] | None = None,
) -> Circuit:
    return Circuit(
        failures_to_open=failures,
        cooldown_s=cooldown,
        max_cooldown_s=max_cooldown,
        retry_after_max_s=retry_after_max,
        clock=clock,
        jitter=jitter,
        on_change=on_change,
    )


def fail_until_open(circuit: Circuit, failures: int = 3) -> None:
    for _ in range(failures):
        circuit.record_failure()
    assert circuit.state is OPEN


def probe(circuit: Circuit, clock: FakeClock) -> None:
    clock.advance(circuit.cooldown_remaining_s())
    assert circuit.acquire()


@pytest.mark.parametrize(
    ("state", "value", "label"),
    [(CLOSED, 0, "closed"), (OPEN, 1, "open"), (HALF_OPEN, 2, "half_open")],
)
def test_state_gauge_value_and_status_label(state: CircuitState, value: int, label: str) -> None:
    assert (int(state), state.label) == (value, label)


def test_opens_after_n_consecutive_failures(clock: FakeClock) -> None:
    circuit = make(clock, failures=3)
    circuit.record_failure()
    circuit.record_failure()
    assert (circuit.state, circuit.acquire(), circuit.consecutive_failures) == (CLOSED, True, 2)
    circuit.record_failure()
    assert (circuit.state, circuit.acquire(), circuit.consecutive_failures) == (OPEN, False, 3)


@pytest.mark.parametrize("breaker", ["record_success", "record_neutral"])
def test_non_consecutive_failures_never_open(clock: FakeClock, breaker: str) -> None:
    circuit = make(clock, failures=3)
    for _ in range(5):
        circuit.record_failure()
        circuit.record_failure()
        getattr(circuit, breaker)()
    assert (circuit.state, circuit.consecutive_failures) == (CLOSED, 0)


@pytest.mark.parametrize(
    ("retry_after_s", "jitter", "cooldown"),
    [
        (None, 1.0, 10.0),  # quota_exhausted: the nominal cooldown
        (None, 0.8, 8.0),
        (None, 1.2, 12.0),
        (30.0, 1.2, 30.0),  # a Retry-After is used as given, not jittered
        (1000.0, 1.2, 60.0),  # ... but capped at retry_after_max_s
        (0.5, 1.2, 0.5),
    ],
)
def test_open_now_opens_on_first_failure_for_the_cooldown(
    clock: FakeClock, retry_after_s: float | None, jitter: float, cooldown: float
) -> None:
    circuit = make(clock, failures=5, jitter=lambda: jitter)
    circuit.record_failure(retry_after_s=retry_after_s, open_now=True)
    assert circuit.state is OPEN
    assert circuit.cooldown_remaining_s() == pytest.approx(cooldown)
    assert circuit.reopens_at == pytest.approx(clock.now + cooldown)


def test_retry_after_of_the_opening_failure_sets_the_cooldown(clock: FakeClock) -> None:
    circuit = make(clock, failures=2, jitter=lambda: 1.2)
    circuit.record_failure(retry_after_s=45.0)
    assert circuit.state is CLOSED
    circuit.record_failure(retry_after_s=25.0)
    assert circuit.cooldown_remaining_s() == 25.0


def test_default_jitter_keeps_the_cooldown_within_80_to_120_percent(clock: FakeClock) -> None:
    cooldowns = set()
    for _ in range(200):
        circuit = Circuit(
            failures_to_open=1,
            cooldown_s=10.0,
            max_cooldown_s=300.0,
            retry_after_max_s=60.0,
            clock=clock,
        )
        circuit.record_failure()
        cooldowns.add(circuit.cooldown_remaining_s())
    assert all(8.0 <= c <= 12.0 for c in cooldowns)
    assert len(cooldowns) > 1


def test_cooldown_remaining_counts_down_then_the_circuit_reads_half_open(clock: FakeClock) -> None:
    circuit = make(clock)
    assert (circuit.cooldown_remaining_s(), circuit.reopens_at) == (0.0, None)
    fail_until_open(circuit)
    assert circuit.cooldown_remaining_s() == 10.0
    clock.advance(3.0)
    assert (circuit.state, circuit.cooldown_remaining_s()) == (OPEN, 7.0)
    clock.advance(7.0)
    assert (circuit.state, circuit.cooldown_remaining_s()) == (HALF_OPEN, 0.0)


def test_exactly_one_probe_after_the_cooldown_among_20_callers(clock: FakeClock) -> None:
    circuit = make(clock)
    fail_until_open(circuit)
    clock.advance(9.99)
    assert not any(circuit.acquire() for _ in range(20))
    clock.advance(0.01)
    admitted = [circuit.acquire() for _ in range(20)]
    assert admitted == [True] + [False] * 19
    assert circuit.state is HALF_OPEN


@pytest.mark.parametrize("outcome", ["record_success", "record_neutral"])
def test_probe_that_reaches_the_backend_closes_and_resets(clock: FakeClock, outcome: str) -> None:
    circuit = make(clock)
    fail_until_open(circuit)
    probe(circuit, clock)
    circuit.record_failure()
    assert circuit.cooldown_remaining_s() == 20.0
    probe(circuit, clock)
    getattr(circuit, outcome)()
    assert (circuit.state, circuit.consecutive_failures, circuit.acquire()) == (CLOSED, 0, True)
    fail_until_open(circuit)
    assert circuit.cooldown_remaining_s() == 10.0


@pytest.mark.parametrize(
    ("jitter", "cooldowns"),
    [(1.1, [11.0, 22.0, 44.0, 70.0, 70.0]), (0.9, [9.0, 18.0, 36.0, 63.0, 63.0])],
)
def test_probe_failure_doubles_the_nominal_cooldown_and_the_jittered_one_stays_under_the_cap(
    clock: FakeClock, jitter: float, cooldowns: list[float]
) -> None:
    circuit = make(clock, cooldown=10.0, max_cooldown=70.0, jitter=lambda: jitter)
    fail_until_open(circuit)
    seen = [circuit.cooldown_remaining_s()]
    for _ in range(4):
        probe(circuit, clock)
        circuit.record_failure()
        seen.append(circuit.cooldown_remaining_s())
    assert seen == pytest.approx(cooldowns)


def test_a_first_cooldown_equal_to_the_cap_is_never_jittered_above_it(clock: FakeClock) -> None:
    circuit = make(clock, cooldown=30.0, max_cooldown=30.0, jitter=lambda: 1.2)
    circuit.record_failure(open_now=True)
    assert circuit.cooldown_remaining_s() == 30.0


def test_retry_after_longer_than_the_cap_is_used_as_given(clock: FakeClock) -> None:
    circuit = make(clock, max_cooldown=30.0, retry_after_max=300.0)
    circuit.record_failure(retry_after_s=120.0, open_now=True)
    assert circuit.cooldown_remaining_s() == 120.0
    probe(circuit, clock)
    circuit.record_failure(retry_after_s=500.0, open_now=True)
    assert circuit.cooldown_remaining_s() == 300.0


def test_probe_silent_for_the_cap_frees_the_slot_for_one_more_probe(clock: FakeClock) -> None:
    circuit = make(clock, max_cooldown=30.0)
    fail_until_open(circuit)
    probe(circuit, clock)
    clock.advance(29.99)
    assert not any(circuit.acquire() for _ in range(5))
    clock.advance(0.01)
    assert [circuit.acquire() for _ in range(5)] == [True] + [False] * 4
    assert circuit.state is HALF_OPEN
    clock.advance(30.0)
    assert circuit.acquire()


def test_probe_that_times_out_within_the_cap_reopens_at_its_deadline(clock: FakeClock) -> None:
    circuit = make(clock, max_cooldown=30.0)
    fail_until_open(circuit)
    probe(circuit, clock)
    clock.advance(5.0)  # the probe's own deadline, say FIRST_TOKEN_TIMEOUT_S=5
    circuit.record_failure()
    assert (circuit.state, circuit.cooldown_remaining_s()) == (OPEN, 20.0)


def test_the_silent_probe_failing_late_leaves_the_decision_to_the_later_probe(
    clock: FakeClock,
) -> None:
    circuit = make(clock, max_cooldown=30.0)
    fail_until_open(circuit)
    probe(circuit, clock)
    clock.advance(30.0)
    assert circuit.acquire()  # a second probe while the first one is still silent
    clock.advance(29.0)
    circuit.record_failure()  # the first probe's deadline, 59 s after it was sent
    assert (circuit.state, circuit.acquire(), circuit.consecutive_failures) == (HALF_OPEN, False, 4)
    circuit.record_failure()
    assert (circuit.state, circuit.cooldown_remaining_s()) == (OPEN, 20.0)


@pytest.mark.parametrize("outcome", ["record_success", "record_neutral"])
def test_either_probe_reaching_the_backend_closes_the_circuit(
    clock: FakeClock, outcome: str
) -> None:
    circuit = make(clock, max_cooldown=30.0)
    fail_until_open(circuit)
    probe(circuit, clock)
    clock.advance(30.0)
    assert circuit.acquire()
    getattr(circuit, outcome)()
    assert circuit.state is CLOSED


def test_a_retry_after_from_either_probe_reopens_at_once(clock: FakeClock) -> None:
    circuit = make(clock, max_cooldown=30.0)
    fail_until_open(circuit)
    probe(circuit, clock)
    clock.advance(30.0)
    assert circuit.acquire()
    circuit.record_failure(retry_after_s=45.0, open_now=True)
    assert (circuit.state, circuit.cooldown_remaining_s()) == (OPEN, 45.0)


def test_release_keeps_the_slot_while_another_probe_is_out(clock: FakeClock) -> None:
    circuit = make(clock, max_cooldown=30.0)
    fail_until_open(circuit)
    probe(circuit, clock)
    clock.advance(30.0)
    assert circuit.acquire()
    circuit.release()
    assert not circuit.acquire()
    circuit.release()
    assert circuit.acquire()


def test_probe_failure_with_retry_after_waits_that_long_and_still_doubles(
    clock: FakeClock,
) -> None:
    circuit = make(clock)
    fail_until_open(circuit)
    probe(circuit, clock)
    circuit.record_failure(retry_after_s=5.0, open_now=True)
    assert circuit.cooldown_remaining_s() == 5.0
    probe(circuit, clock)
    circuit.record_failure()
    assert circuit.cooldown_remaining_s() == 40.0


def test_release_frees_the_probe_slot_without_counting(clock: FakeClock) -> None:
    circuit = make(clock)
    fail_until_open(circuit)
    probe(circuit, clock)
    assert not circuit.acquire()
    circuit.release()
    assert (circuit.state, circuit.consecutive_failures) == (HALF_OPEN, 3)
    assert [circuit.acquire(), circuit.acquire()] == [True, False]


def test_release_while_closed_counts_nothing(clock: FakeClock) -> None:
    circuit = make(clock)
    circuit.record_failure()
    circuit.release()
    assert (circuit.state, circuit.consecutive_failures) == (CLOSED, 1)


def test_outcomes_reported_while_open_are_ignored(clock: FakeClock) -> None:
    circuit = make(clock)
    fail_until_open(circuit)
    circuit.record_success()
    circuit.record_neutral()
    circuit.record_failure(open_now=True)
    assert (circuit.state, circuit.cooldown_remaining_s(), circuit.consecutive_failures) == (
        OPEN,
        10.0,
        3,
    )


@pytest.mark.parametrize(("retry_after_s", "remaining"), [(40.0, 40.0), (2.0, 10.0)])
def test_retry_after_reported_while_open_only_moves_reopening_later(
    clock: FakeClock, retry_after_s: float, remaining: float
) -> None:
    circuit = make(clock)
    fail_until_open(circuit)
    circuit.record_failure(retry_after_s=retry_after_s, open_now=True)
    assert circuit.cooldown_remaining_s() == remaining


def test_nan_retry_after_falls_back_to_the_nominal_cooldown(clock: FakeClock) -> None:
    circuit = make(clock)
    circuit.record_failure(retry_after_s=float("nan"), open_now=True)
    assert circuit.cooldown_remaining_s() == 10.0


def test_on_change_reports_every_transition_once(clock: FakeClock) -> None:
    changes: list[CircuitState] = []
    circuit = make(clock, on_change=changes.append)
    fail_until_open(circuit)
    circuit.record_failure()
    clock.advance(10.0)
    assert circuit.state is HALF_OPEN
    assert circuit.acquire()
    circuit.record_failure()
    probe(circuit, clock)
    circuit.record_success()
    circuit.record_success()
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failures_to_open": 0}, "failures_to_open"),
        ({"cooldown_s": 0.0}, "cooldown_s"),
        ({"cooldown_s": 20.0, "max_cooldown_s": 10.0}, "max_cooldown_s"),
        ({"retry_after_max_s": -1.0}, "retry_after_max_s"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    settings: dict[str, float] = {
        "failures_to_open": 5,
        "cooldown_s": 10.0,
        "max_cooldown_s": 300.0,
        "retry_after_max_s": 300.0,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        Circuit(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (7.5, "8"), (60.0, "60")],
)
def test_all_skipped_retry_after_is_whole_seconds_rounded_up_at_least_one(
    clock: FakeClock, retry_after_s: float, header: str
) -> None:
    circuit = make(clock)
    circuit.record_failure(retry_after_s=retry_after_s, open_now=True)
    assert retry_after_header(circuit.cooldown_remaining_s()) == header


def primary_back_after(jitter: Callable[[], float], outage_s: int, hang_from: int | None) -> int:
    """`primary → fallback` with the default settings, a request every 4 s: the primary fails
    until `outage_s` (from `hang_from` on by hanging until its first-token deadline), then
    answers. The seconds from its recovery to the first request it serves again."""
    config = load_config({"SIDECAR_BACKENDS": "p", "P_API_KEY": "k"})
    s, deadline_s = config.settings, config.backends["p"].settings.first_token_timeout_s
    clock = FakeClock()
    start = clock.now
    circuit = Circuit(
        failures_to_open=s.circuit_failures,
        cooldown_s=s.circuit_cooldown_s,
        max_cooldown_s=s.circuit_max_cooldown_s,
        retry_after_max_s=s.retry_after_max_s,
        clock=clock,
        jitter=jitter,
    )
    hung: list[float] = []  # when each hanging attempt reaches its deadline
    for t in range(0, outage_s + 600, 4):
        clock.now = start + t
        for _ in [d for d in hung if d <= t]:
            circuit.record_failure()
        hung = [d for d in hung if d > t]
        if not circuit.acquire():
            continue  # skipped: the fallback answers
        if t >= outage_s:
            circuit.record_success()
            return t - outage_s
        if hang_from is not None and t >= hang_from:
            hung.append(t + deadline_s)
        else:
            circuit.record_failure()
    raise AssertionError("the primary was never used again")


@pytest.mark.parametrize("outage_s", [60, 62, 300, 1802])
@pytest.mark.parametrize("hang_from", [None, 0, 40], ids=["503", "hang", "503-then-hang"])
def test_default_settings_use_a_recovered_primary_again_within_30_s(
    outage_s: int, hang_from: int | None
) -> None:
    rng = random.Random(17)
    jitters: list[Callable[[], float]] = [lambda: 0.8, lambda: 1.0, lambda: 1.2]
    jitters += [lambda: rng.uniform(0.8, 1.2)] * 40
    assert max(primary_back_after(j, outage_s, hang_from) for j in jitters) <= 30


# ---------------------------------------------------------------- in the running chain

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
