"""Per-backend circuit breaker (README "Circuits").

A pure state machine: time comes from `clock` (monotonic seconds), randomness from `jitter`.
Every chain that uses a backend shares its one Circuit. The caller asks `acquire()` before
sending, and reports how the backend's turn ended with exactly one of `record_success`,
`record_neutral`, `record_failure` or `release`.

Rules (N = failures_to_open; "nominal" starts at cooldown_s)

    state      event                               next       effect
    ---------  ----------------------------------  ---------  --------------------------------------
    CLOSED     acquire                             CLOSED     allowed
    CLOSED     success | neutral                   CLOSED     run := 0
    CLOSED     failure, run + 1 < N, not open_now  CLOSED     run += 1
    CLOSED     failure, run + 1 >= N or open_now   OPEN       run += 1; cooldown (below)
    OPEN       acquire                             OPEN       refused
    OPEN       failure with retry_after            OPEN       reopening moves later, never earlier
    OPEN       any other outcome                   OPEN       ignored (a request admitted earlier)
    OPEN       cooldown over, seen by any call     HALF_OPEN  probe slot free
    HALF_OPEN  acquire, slot free, or taken        HALF_OPEN  allowed: a probe; slot taken for
               max_cooldown_s ago or more                     max_cooldown_s; probes += 1
    HALF_OPEN  acquire, slot taken, less long ago  HALF_OPEN  refused
    HALF_OPEN  success | neutral                   CLOSED     run := 0; nominal := cooldown_s
    HALF_OPEN  failure, probes > 1, no retry_after HALF_OPEN  run += 1; probes -= 1: a later probe
               and not open_now                               is still out, its outcome decides
    HALF_OPEN  any other failure                   OPEN       run += 1; nominal := min(2 × nominal,
                                                              max_cooldown_s); cooldown (below)
    HALF_OPEN  release                             HALF_OPEN  probes -= 1; slot free if none is out
    other      release                             same       nothing

    cooldown = min(retry_after_s, retry_after_max_s) when a Retry-After is given (never jittered),
               else min(nominal × jitter(), max_cooldown_s) with jitter() in [0.8, 1.2]

Why these choices:
- `max_cooldown_s` is the longest a backend goes untried without a Retry-After saying so: the
  jittered cooldown never exceeds it, and neither does the probe slot. A probe that has given no
  answer for that long (a hung upstream, a long `RESPONSE_TIMEOUT_S`) stops holding the slot, so
  a backend that recovers meanwhile is tried again by the next request. The silent probe still
  runs to its own deadline, and its timeout, stale by then, does not reopen the circuit while a
  later probe is out: the later one's outcome decides. A hung backend thus costs one request per
  `max_cooldown_s`, like one that fails fast at the cap.
- A Retry-After is the upstream's explicit word: it is only capped by `retry_after_max_s`.
- A neutral outcome (a 4xx that does not fall back) proves the backend answers, so as a probe
  result it closes the circuit like a success, and outside a probe it breaks the failure run.
- `state` is the effective state: an OPEN circuit whose cooldown is over reads as HALF_OPEN from
  that moment, probe in flight or not, so /status goes "open" (counting down) → "half_open". The
  move happens inside whichever call first observes it, and `on_change` fires there.
- Outcomes carry no ticket, so in HALF_OPEN any reported outcome is taken as the probe's. A
  straggler admitted while CLOSED, or a probe whose slot went to a newer one, that reports then is
  still fresh evidence about the backend (its `release` frees the newer probe's slot: at worst one
  probe more).
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable
from typing import assert_never


class CircuitState(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


def uniform_jitter() -> float:
    return random.uniform(0.8, 1.2)


class Circuit:
    def __init__(
        self,
        *,
        failures_to_open: int,
        cooldown_s: float,
        max_cooldown_s: float,
        retry_after_max_s: float,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = uniform_jitter,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        if failures_to_open < 1:
            raise ValueError("failures_to_open must be at least 1")
        if not 0 < cooldown_s <= max_cooldown_s:
            raise ValueError("need 0 < cooldown_s <= max_cooldown_s")
        if retry_after_max_s < 0:
            raise ValueError("retry_after_max_s must not be negative")
        self._failures_to_open = failures_to_open
        self._cooldown_s = cooldown_s
        self._max_cooldown_s = max_cooldown_s
        self._retry_after_max_s = retry_after_max_s
        self._clock = clock
        self._jitter = jitter
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._run = 0
        self._nominal_s = cooldown_s
        self._open_until = 0.0
        self._probes = 0  # probes let through since the circuit turned half-open, not yet back
        self._probe_until = 0.0  # the probe slot is taken until then

    @property
    def state(self) -> CircuitState:
        self._advance()
        return self._state

    @property
    def reopens_at(self) -> float | None:
        return None if self.state is CircuitState.CLOSED else self._open_until

    @property
    def consecutive_failures(self) -> int:
        return self._run

    def cooldown_remaining_s(self) -> float:
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    def acquire(self) -> bool:
        match self.state:
            case CircuitState.CLOSED:
                return True
            case CircuitState.OPEN:
                return False
            case CircuitState.HALF_OPEN:
                now = self._clock()
                if now < self._probe_until:
                    return False
                self._probes += 1
                self._probe_until = now + self._max_cooldown_s
                return True
            case unreachable:
                assert_never(unreachable)

    def record_success(self) -> None:
        self._record_alive()

    def record_neutral(self) -> None:
        self._record_alive()

    def record_failure(self, *, retry_after_s: float | None = None, open_now: bool = False) -> None:
        if retry_after_s is not None and math.isnan(retry_after_s):
            # NaN compares false with every clock reading: the circuit would never reopen.
            retry_after_s = None
        match self.state:
            case CircuitState.CLOSED:
                self._run += 1
                if open_now or self._run >= self._failures_to_open:
                    self._open(retry_after_s)
            case CircuitState.HALF_OPEN:
                self._run += 1
                if self._probes > 1 and retry_after_s is None and not open_now:
                    self._probes -= 1
                    return
                self._nominal_s = min(2 * self._nominal_s, self._max_cooldown_s)
                self._open(retry_after_s)
            case CircuitState.OPEN:
                if retry_after_s is not None:
                    later = self._clock() + self._capped(retry_after_s)
                    self._open_until = max(self._open_until, later)
            case unreachable:
                assert_never(unreachable)

    def release(self) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            if self._probes == 0:
                self._probe_until = 0.0

    def _record_alive(self) -> None:
        match self.state:
            case CircuitState.CLOSED:
                self._run = 0
            case CircuitState.HALF_OPEN:
                self._run = 0
                self._nominal_s = self._cooldown_s
                self._move(CircuitState.CLOSED)
            case CircuitState.OPEN:
                pass
            case unreachable:
                assert_never(unreachable)

    def _open(self, retry_after_s: float | None) -> None:
        if retry_after_s is None:
            cooldown = min(self._nominal_s * self._jitter(), self._max_cooldown_s)
        else:
            cooldown = self._capped(retry_after_s)
        self._open_until = self._clock() + cooldown
        self._probes = 0
        self._probe_until = 0.0
        self._move(CircuitState.OPEN)

    def _capped(self, retry_after_s: float) -> float:
        return min(max(retry_after_s, 0.0), self._retry_after_max_s)

    def _advance(self) -> None:
        if self._state is CircuitState.OPEN and self._clock() >= self._open_until:
            self._move(CircuitState.HALF_OPEN)

    def _move(self, state: CircuitState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_change is not None:
            self._on_change(state)


def retry_after_header(wait_s: float) -> str:
    """Retry-After for a wait: whole seconds, rounded up, at least one."""
    return str(max(1, math.ceil(wait_s)))
