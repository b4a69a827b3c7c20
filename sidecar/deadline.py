"""Attempt deadlines on one shared timer: `asyncio.timeout`'s semantics at a fraction of its cost.

`asyncio.timeout` arms a timer per use (about 4.5 µs on uvloop with its context manager, most of
it `call_at`); every upstream attempt has a deadline, and almost none expires. `Deadlines` files
each deadline in a bucket and keeps one timer for the earliest bucket, so an attempt costs a set
insert and a discard. Inside `async with deadlines.at(when)`, expiry cancels the task and the
block raises `TimeoutError`, exactly as `asyncio.timeout_at` does; a cancellation from elsewhere
stays one.

Buckets are as coarse as a deadline is far: `RESOLUTION_S` (5 ms) doubled until a thousand of
them span the distance, so a deadline fires late by at most 1/500 of how far ahead it was set
(and never by less than `RESOLUTION_S` plus a millisecond: 0.12 s for the first-token timeout's
60 s, 1.3 s for the 600 s budget), never early. That keeps the buckets alive at once to about a
thousand per distance class however many attempts pass: an empty bucket stays until its time
(dropping it would push its time on the heap again for every attempt that refills it).
"""

import asyncio
import heapq
import math
from types import TracebackType

RESOLUTION_S = 0.005
# How early a timer may run (uvloop rounds its timers to the millisecond).
_SLACK_S = 0.001
_BUCKETS_PER_SPAN = 1000


class Deadline:
    __slots__ = ("_cancelling", "_owner", "_task", "_tick", "expired")

    def __init__(self, owner: "Deadlines", tick: float) -> None:
        self._owner = owner
        self._tick = tick
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self.expired = False

    async def __aenter__(self) -> "Deadline":
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._owner._add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner._discard(self)
        assert self._task is not None
        # asyncio.Timeout's order: once expired, its own cancel is taken back whatever ended
        # the block, and only a cancel that was its alone becomes the TimeoutError.
        taken_back = self.expired and self._task.uncancel() <= self._cancelling
        if taken_back and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def _expire(self) -> None:
        self.expired = True
        assert self._task is not None
        self._task.cancel()


class Deadlines:
    """The deadlines of one event loop."""

    __slots__ = ("_buckets", "_handle", "_next", "_ticks", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # A bucket's key is the loop time its timer is due: a multiple of its resolution.
        self._buckets: dict[float, set[Deadline]] = {}
        self._ticks: list[float] = []  # a heap of the buckets' times
        self._handle: asyncio.TimerHandle | None = None
        self._next: float | None = None  # the time the timer is armed for

    def at(self, when: float) -> Deadline:
        """A deadline at loop time `when`."""
        r = RESOLUTION_S
        far = when - self.loop.time()
        while r * _BUCKETS_PER_SPAN < far:
            r *= 2
        # The first multiple of r at or after `when` plus the slack: due no earlier than `when`.
        return Deadline(self, math.ceil((when + _SLACK_S) / r) * r)

    def _add(self, d: Deadline) -> None:
        bucket = self._buckets.get(d._tick)
        if bucket is None:
            bucket = self._buckets[d._tick] = set()
            heapq.heappush(self._ticks, d._tick)
            if self._next is None or d._tick < self._next:
                self._arm(d._tick)
        bucket.add(d)

    def _discard(self, d: Deadline) -> None:
        bucket = self._buckets.get(d._tick)
        if bucket is not None:
            bucket.discard(d)

    def _arm(self, tick: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._next = tick
        self._handle = self.loop.call_at(tick, self._fire)

    def _fire(self) -> None:
        self._handle = self._next = None
        due = self.loop.time() + _SLACK_S
        while self._ticks and self._ticks[0] <= due:
            for d in self._buckets.pop(heapq.heappop(self._ticks)):
                d._expire()
        if self._ticks:
            self._arm(self._ticks[0])
