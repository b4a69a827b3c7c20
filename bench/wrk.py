"""Running Debian's wrk with bench/wrk.lua and reading its one-line JSON result."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import BenchError

LUA_SCRIPT = Path(__file__).with_name("wrk.lua")
_MARK = "BENCH_RESULT "
_HIST = "BENCH_HIST "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    checked: int
    bad: int
    # answered well, but not by the path expected (BENCH_EXPECT headers)
    offpath: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    # microseconds -> count, only when asked for (paced runs)
    histogram: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def failures(self) -> int:
        return self.bad + self.socket_errors


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is missing and the bench is not root: run `apt-get install wrk`")
    apt = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(apt, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
        done = subprocess.run(apt, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"apt-get install wrk failed:\n{done.stderr.strip()}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


def percentile_ms(histogram: dict[int, int], p: float) -> float:
    # wrk's own rule (nearest rank), so pooled figures match what wrk prints for one run
    total = sum(histogram.values())
    rank = round(p / 100 * total + 0.5)
    seen = 0
    for us in sorted(histogram):
        seen += histogram[us]
        if seen >= rank:
            return us / 1000
    return 0.0


def _histogram(line: str) -> dict[int, int]:
    pairs = (item.split(":") for item in line[len(_HIST) :].split(",") if item)
    return {int(us): int(count) for us, count in pairs}


def parse(stdout: str) -> WrkResult:
    raw, histogram = None, {}
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            raw = json.loads(line[len(_MARK) :])
        elif line.startswith(_HIST):
            histogram = _histogram(line)
    if raw is None:
        raise BenchError(f"wrk printed no result line:\n{stdout[-2000:]}")
    socket_errors = sum(raw[key] for key in ("connect", "read", "write", "timeout"))
    return WrkResult(
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        checked=raw["checked"],
        bad=raw["bad"],
        offpath=raw["offpath"],
        socket_errors=socket_errors,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        histogram=histogram,
    )


async def run(
    wrk: str,
    url: str,
    *,
    mode: str,
    connections: int,
    duration_s: int,
    cpus: Sequence[int] | None,
    delay_ms: float = 0,
    histogram: bool = False,
    expect: str = "",
) -> WrkResult:
    env = {
        **os.environ,
        "BENCH_MODE": mode,
        "BENCH_DELAY_MS": str(delay_ms),
        "BENCH_HISTOGRAM": "1" if histogram else "0",
        "BENCH_EXPECT": expect,
    }
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",  # wrk takes whole seconds only
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    if cpus:
        argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"wrk exited {proc.returncode}: {stderr.decode(errors='replace')}")
    return parse(stdout.decode(errors="replace"))
