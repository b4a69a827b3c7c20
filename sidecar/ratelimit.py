"""Rate-limit headroom: the upstream's own quota headers, and a gate that skips a backend at zero.

Headers read from every answer, whatever its status (RESOURCE is `requests` or `tokens`):

    header                                   meaning
    ---------------------------------------  ----------------------------------------------------
    x-ratelimit-remaining-RESOURCE           OpenAI, Azure: what is left in the current window
    x-ratelimit-limit-RESOURCE               the window's size
    x-ratelimit-reset-RESOURCE               time from the answer to the reset: a Go duration
                                             ("1s", "6m0s", "12ms", "1h2m3.5s") or plain seconds
    anthropic-ratelimit-RESOURCE-remaining   Anthropic: what is left in the current window
    anthropic-ratelimit-RESOURCE-limit       the window's size
    anthropic-ratelimit-RESOURCE-reset       the reset as an RFC 3339 time ("2026-12-07T06:30:00Z")

A remaining or limit that is not a plain non-negative integer is ignored, and so is the whole
resource when its remaining is; an unreadable or missing reset leaves the quota without one.

The gate (`Headroom`, one per backend): a report of 0 remaining with a reset in the future blocks
the backend for that resource until the reset, capped at `max_wait_s` (SIDECAR_RETRY_AFTER_MAX_S);
a later report of that resource with something remaining lifts the block at once (the newest
answer is the best evidence). 0 remaining without a future reset blocks nothing: there is no end
to wait for, and the next attempt's 429 is the answer.
"""

import enum
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_GO_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:h|ms|us|µs|ns|m|s))+")
_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class Resource(enum.StrEnum):
    REQUESTS = "requests"
    TOKENS = "tokens"


@dataclass(frozen=True, slots=True)
class Quota:
    resource: Resource
    remaining: int
    limit: int | None
    reset_s: float | None  # from the answer to the window's reset; None when not reported


# (resource, remaining, limit, reset) header names, built once: this runs on every answer.
_OPENAI = tuple(
    (r, f"x-ratelimit-remaining-{r}", f"x-ratelimit-limit-{r}", f"x-ratelimit-reset-{r}")
    for r in Resource
)
_ANTHROPIC = tuple(
    (
        r,
        f"anthropic-ratelimit-{r}-remaining",
        f"anthropic-ratelimit-{r}-limit",
        f"anthropic-ratelimit-{r}-reset",
    )
    for r in Resource
)


def parse_ratelimit(headers: Mapping[str, str], *, now: float) -> list[Quota]:
    """`headers` must match names case-insensitively (aiohttp's do); `now` is epoch seconds."""
    found = []
    for (r, remaining, limit, reset), (_, a_remaining, a_limit, a_reset) in zip(
        _OPENAI, _ANTHROPIC, strict=True
    ):
        if (n := _integer(headers.get(remaining))) is not None:
            reset_s = go_duration(headers.get(reset))
            found.append(Quota(r, n, _integer(headers.get(limit)), reset_s))
        elif (n := _integer(headers.get(a_remaining))) is not None:
            reset_s = _seconds_until(headers.get(a_reset), now)
            found.append(Quota(r, n, _integer(headers.get(a_limit)), reset_s))
    return found


def _integer(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    # ASCII digits only (str.isdigit alone takes "²" and other digits int() may refuse).
    if not (0 < len(value) <= 18 and value.isascii() and value.isdigit()):
        return None
    return int(value)


def go_duration(value: str | None) -> float | None:
    """Seconds in a Go `time.Duration` string ("6m0s", "12ms"), or plain decimal seconds."""
    if value is None:
        return None
    value = value.strip()
    if _DECIMAL.fullmatch(value):
        seconds = float(value)
    elif _GO_DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _GO_PART.findall(value))
    else:
        return None
    return seconds if math.isfinite(seconds) else None


def _seconds_until(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # RFC 3339 always carries an offset; a local time would be a guess
    return when.timestamp() - now


@dataclass(frozen=True, slots=True)
class Block:
    resource: Resource
    until: float  # on the gate's clock

    @property
    def reason(self) -> str:
        return f"ratelimit: no {self.resource} remaining until reset"


class Headroom:
    """One backend's rate-limit gate. Time comes from `clock` (monotonic seconds)."""

    def __init__(
        self,
        *,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_quota: Callable[[Quota], None] | None = None,
    ) -> None:
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._on_quota = on_quota
        self._until: dict[Resource, float] = {}

    def observe(self, quotas: Iterable[Quota]) -> None:
        for q in quotas:
            if self._on_quota is not None:
                self._on_quota(q)
            if q.remaining > 0:
                self._until.pop(q.resource, None)
            elif q.reset_s is not None and q.reset_s > 0:
                self._until[q.resource] = self._clock() + min(q.reset_s, self._max_wait_s)

    def blocked(self) -> Block | None:
        """The block lasting longest, or None when the backend may be tried."""
        if not self._until:
            return None
        now = self._clock()
        for resource in [r for r, until in self._until.items() if until <= now]:
            del self._until[resource]
        if not self._until:
            return None
        resource, until = max(self._until.items(), key=lambda item: item[1])
        return Block(resource, until)

    def remaining_s(self) -> float:
        block = self.blocked()
        return 0.0 if block is None else max(0.0, block.until - self._clock())
