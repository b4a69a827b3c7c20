"""The memory check: waves of many concurrent slow streams through one proxy."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import orjson

from bench.procs import memory_kib
from bench.upstream import SLOW_MODEL, STREAM_CHUNKS

SLOW_BODY = orjson.dumps(
    {
        "model": SLOW_MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "Drip fifty chunks to the memory check, please."}],
    }
)
_CHUNK_MARK = b"chat.completion.chunk"
_DONE_MARK = b"data: [DONE]"
# Connections are opened in small batches: a proxy's default listen backlog (128) would drop a
# thousand simultaneous SYNs and make the wave wait out kernel retransmits.
_BATCH = 50
_BATCH_PAUSE_S = 0.05


@dataclass(frozen=True)
class Wave:
    streams: int
    bad: int
    seconds: float
    peak_rss_kib: int
    rss_after_kib: int


async def _one_stream(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.post(
            url, data=SLOW_BODY, headers={"Content-Type": "application/json"}
        ) as r:
            body = await r.read()
    except aiohttp.ClientError:
        return False
    return r.status == 200 and body.count(_CHUNK_MARK) == STREAM_CHUNKS and _DONE_MARK in body


async def _sample_peak(pid: int, done: asyncio.Event) -> int:
    peak = 0
    while not done.is_set():
        peak = max(peak, memory_kib(pid)[0])
        await asyncio.sleep(0.05)
    return peak


async def wave(session: aiohttp.ClientSession, url: str, pid: int, streams: int) -> Wave:
    started = time.perf_counter()
    done = asyncio.Event()
    sampler = asyncio.create_task(_sample_peak(pid, done))
    tasks: list[asyncio.Task[bool]] = []
    for start in range(0, streams, _BATCH):
        count = min(_BATCH, streams - start)
        tasks += [asyncio.create_task(_one_stream(session, url)) for _ in range(count)]
        await asyncio.sleep(_BATCH_PAUSE_S)
    results = await asyncio.gather(*tasks)
    done.set()
    peak = await sampler
    seconds = time.perf_counter() - started
    # let the proxy drop per-request state before reading what it keeps
    await asyncio.sleep(0.5)
    return Wave(
        streams=streams,
        bad=results.count(False),
        seconds=seconds,
        peak_rss_kib=peak,
        rss_after_kib=memory_kib(pid)[0],
    )


async def waves(url: str, pid: int, streams: int, count: int) -> list[Wave]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return [await wave(session, url, pid, streams) for _ in range(count)]
