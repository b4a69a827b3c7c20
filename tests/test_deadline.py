import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.deadline import RESOLUTION_S, Deadlines


class FakeTimers:
    """The loop's clock and timers, advanced by hand; tasks still run on the real loop."""

    def __init__(self) -> None:
        self.now = 100.0
        self.armed: list[tuple[float, Callable[[], None], asyncio.TimerHandle]] = []
        self.calls = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        self.calls += 1
        handle = asyncio.TimerHandle(when, callback, (), asyncio.get_running_loop())
        self.armed.append((when, callback, handle))
        return handle

    def advance(self, to: float) -> None:
        self.now = to
        due = [a for a in self.armed if a[0] <= to and not a[2].cancelled()]
        self.armed = [a for a in self.armed if a not in due]
        for _, callback, _ in due:
            callback()


def _deadlines(timers: FakeTimers) -> Deadlines:
    loop: Any = timers
    return Deadlines(loop)


async def _sleeper(deadlines: Deadlines, when: float, seen: list[str]) -> None:
    try:
        async with deadlines.at(when):
            await asyncio.sleep(3600)
    except TimeoutError:
        seen.append("timeout")


async def test_an_expired_deadline_ends_its_block_with_timeout_error() -> None:
    timers = FakeTimers()
    seen: list[str] = []
    task = asyncio.ensure_future(_sleeper(_deadlines(timers), 100.5, seen))
    await asyncio.sleep(0)
    timers.advance(100.5 + 2 * RESOLUTION_S)
    await task
    assert seen == ["timeout"]


async def test_a_deadline_never_fires_before_its_time() -> None:
    timers = FakeTimers()
    seen: list[str] = []
    task = asyncio.ensure_future(_sleeper(_deadlines(timers), 100.5, seen))
    await asyncio.sleep(0)
    # Up to its time, in steps of 0.1 ms, with each timer run as early as uvloop may run it
    # (it rounds to the millisecond).
    for step in range(1, 5000):
        now = 100.0 + step / 10_000
        timers.now = now
        for when, callback, handle in list(timers.armed):
            if when - 0.001 <= now and not handle.cancelled():
                timers.armed.remove((when, callback, handle))
                callback()
        await asyncio.sleep(0)
        assert not task.done(), now
    task.cancel()


@pytest.mark.parametrize("far", [0.01, 0.5, 60.0, 600.0])
async def test_a_deadline_is_late_by_at_most_a_five_hundredth_of_how_far_it_was(
    far: float,
) -> None:
    timers = FakeTimers()
    task = asyncio.ensure_future(_sleeper(_deadlines(timers), timers.now + far, []))
    await asyncio.sleep(0)
    armed = timers.armed[0][0]
    late = armed - (100.0 + far)
    assert 0 < late <= max(far / 500, RESOLUTION_S) + 0.001
    task.cancel()


async def test_steady_traffic_keeps_a_bounded_number_of_buckets() -> None:
    # Ten minutes of attempts, each with a deadline 600 s ahead (a JSON attempt's default): the
    # buckets alive at once stay at about a thousand, not one per 5 ms of the span.
    timers = FakeTimers()
    deadlines = _deadlines(timers)
    for _ in range(600_000 // 20):
        timers.now += 0.02
        async with deadlines.at(timers.now + 600):
            pass
    assert len(deadlines._buckets) <= 1_100


async def test_a_block_that_ends_in_time_is_not_cancelled_later() -> None:
    timers = FakeTimers()
    deadlines = _deadlines(timers)
    async with deadlines.at(100.5):
        await asyncio.sleep(0)
    timers.advance(200.0)
    await asyncio.sleep(0)  # a stray cancel would land here
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    timers = FakeTimers()
    seen: list[str] = []
    task = asyncio.ensure_future(_sleeper(_deadlines(timers), 100.5, seen))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == []


async def test_a_cancellation_racing_the_deadline_is_not_swallowed() -> None:
    timers = FakeTimers()
    deadlines = _deadlines(timers)
    seen: list[str] = []
    task = asyncio.ensure_future(_sleeper(deadlines, 100.5, seen))
    await asyncio.sleep(0)
    task.cancel()  # the caller leaves in the same loop turn as the deadline expires
    timers.advance(101.0)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_deadlines_share_one_timer() -> None:
    timers = FakeTimers()
    deadlines = _deadlines(timers)
    seen: list[str] = []
    tasks = [
        asyncio.ensure_future(_sleeper(deadlines, 100.5 + i * 0.0001, seen)) for i in range(200)
    ]
    await asyncio.sleep(0)
    assert timers.calls == 1
    # An earlier deadline moves the one timer forward rather than adding a second.
    early = asyncio.ensure_future(_sleeper(deadlines, 100.1, seen))
    await asyncio.sleep(0)
    assert timers.calls == 2 and len([a for a in timers.armed if not a[2].cancelled()]) == 1
    timers.advance(101.0)
    await asyncio.gather(early, *tasks)
    assert seen == ["timeout"] * 201


async def test_on_the_real_loop_a_deadline_fires_after_its_time() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    start = loop.time()
    with pytest.raises(TimeoutError):
        async with deadlines.at(start + 0.05):
            await asyncio.sleep(3600)
    assert loop.time() >= start + 0.05
