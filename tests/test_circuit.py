from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from conftest import FakeClock

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
