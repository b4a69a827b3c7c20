"""The bench plan: which processes run, in what order, and what is recorded from each."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from bench import memory, wrk
from bench.procs import BenchError, Proc, cpu_seconds, free_port, memory_kib, spawn, stop
from bench.upstream import MODEL

RELAY = "relay"
# The same relay on the sidecar's own HTTP client (`bench/relay.py --client http1`).
RELAY_HTTP1 = "relay_http1"
SIDECAR = "sidecar"
DIRECT = "direct"
CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
# the scenarios of the sidecar with tracing on are recorded under the sidecar, with this prefix
TRACED = "traced_"
# wrk mode -> path
PATHS = {"json": CHAT_PATH, "stream": CHAT_PATH, "responses": RESPONSES_PATH}
# Closed-loop pacing: one connection, 20 ms of think time between requests, so about 50
# requests/s (slightly fewer: each request's own latency adds to the period).
PACED_DELAY_MS = 20
PACED_SLICE_S = 2
_NEVER_OPENS = "1000000000"
_JSON_BODY = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
_STREAM_BODY = orjson.dumps(
    {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
)


@dataclass(frozen=True)
class Plan:
    runs: int
    duration_s: int
    paced_s: int
    warmup_s: int
    memory_streams: int
    memory_waves: int
    drip_ms: float
    # how the fake upstream frames its fast stream (bench/upstream.py FRAMINGS)
    framing: str = "stream"


FULL = Plan(
    runs=3, duration_s=4, paced_s=8, warmup_s=1, memory_streams=1000, memory_waves=5, drip_ms=100
)
QUICK = Plan(
    runs=1, duration_s=2, paced_s=4, warmup_s=1, memory_streams=1000, memory_waves=2, drip_ms=60
)


@dataclass(frozen=True)
class Cores:
    proxy: list[int] | None
    load: list[int] | None

    @classmethod
    def pick(cls, pin: bool) -> Cores:
        available = sorted(os.sched_getaffinity(0))
        if not pin or len(available) < 2:
            return cls(None, None)
        return cls([available[-1]], available[:-1])


@dataclass
class Tally:
    checked: int = 0
    bad: int = 0
    socket_errors: int = 0
    offpath: int = 0


@dataclass
class Results:
    # label -> figure -> one value per run
    samples: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    tallies: dict[tuple[str, str], Tally] = field(default_factory=lambda: defaultdict(Tally))
    waves: dict[str, list[memory.Wave]] = field(default_factory=dict)
    memory_idle_kib: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def raw(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "tallies": {f"{label}/{scenario}": t for (label, scenario), t in self.tallies.items()},
            "waves": self.waves,
            "memory_idle_kib": self.memory_idle_kib,
            "notes": self.notes,
        }

    def add(self, label: str, figure: str, value: float) -> None:
        self.samples[label][figure].append(value)

    def count(self, label: str, scenario: str, result: wrk.WrkResult) -> None:
        tally = self.tallies[(label, scenario)]
        tally.checked += result.checked
        tally.bad += result.bad
        tally.socket_errors += result.socket_errors
        tally.offpath += result.offpath


@dataclass
class Proxy:
    label: str
    proc: Proc
    url: str
    admin_url: str | None = None
    # response headers that prove which path served a request, for wrk.lua's BENCH_EXPECT
    expect: str = ""
    # prepended to the scenario names its figures are recorded under
    prefix: str = ""


def relay_argv(
    python: str, port: int, upstream: str, max_connections: int, client: str = "aiohttp"
) -> list[str]:
    return [
        *(python, "-m", "bench.relay", "--port", str(port)),
        *("--upstream", upstream, "--max-connections", str(max_connections)),
        *("--client", client),
    ]


def sidecar_env(port: int, admin: int, backends: dict[str, str]) -> dict[str, str]:
    """The bench's settings for a sidecar in front of `backends` (name → BASE_URL)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIDECAR_", "PRIMARY_", "SECONDARY_", "OTEL_"))
    }
    env |= {
        "SIDECAR_BACKENDS": ",".join(backends),
        "SIDECAR_HOST": "127.0.0.1",
        "SIDECAR_PORT": str(port),
        "SIDECAR_ADMIN_HOST": "127.0.0.1",
        "SIDECAR_ADMIN_PORT": str(admin),
        "SIDECAR_LOG_LEVEL": "WARNING",
        "SIDECAR_MAX_INFLIGHT": "100000",
        "SIDECAR_SHUTDOWN_DELAY_S": "0",
        "SIDECAR_SHUTDOWN_GRACE_S": "2",
    }
    for name, base_url in backends.items():
        env[f"{name.upper()}_BASE_URL"] = base_url
        env[f"{name.upper()}_API_KEY"] = "sk-bench"
    return env


@dataclass
class Bench:
    plan: Plan
    cores: Cores
    python: str
    stand_in: bool
    log_dir: Path
    wrk_path: str
    results: Results = field(default_factory=Results)
    upstream_root: str = ""
    sink_root: str = ""
    _procs: list[Proc] = field(default_factory=list)

    async def run(self) -> Results:
        try:
            await self._start_upstream()
            await self._start_sink()
            await self._check_the_checker()
            for index in range(self.plan.runs):
                await self._one_run(index)
            await self._sink_note()
            if self.plan.memory_waves:
                await self._memory_check()
        finally:
            for proc in reversed(self._procs):
                stop(proc)
        return self.results

    # processes

    def _spawn(
        self,
        name: str,
        argv: Sequence[str],
        cpus: list[int] | None,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        log(f"  start {name}")
        proc = spawn(name, argv, cpus=cpus, log_dir=self.log_dir, env=env)
        self._procs.append(proc)
        return proc

    def _stop(self, proc: Proc) -> None:
        stop(proc)
        self._procs.remove(proc)

    async def _start_upstream(self) -> None:
        port = free_port()
        argv = [self.python, "-m", "bench.upstream", "--port", str(port)]
        argv += ["--drip-ms", str(self.plan.drip_ms), "--framing", self.plan.framing]
        proc = self._spawn("upstream", argv, self.cores.load)
        self.upstream_root = f"http://127.0.0.1:{port}"
        await self._first_answer(proc, self.upstream_root + CHAT_PATH)

    async def _start_sink(self) -> None:
        port = free_port()
        argv = [self.python, "-m", "bench.otlp_sink", "--port", str(port)]
        proc = self._spawn("otlp-sink", argv, self.cores.load)
        self.sink_root = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            while time.perf_counter() - proc.spawned_at < 20:
                if not proc.alive():
                    raise BenchError(f"otlp-sink exited early:\n{proc.log_tail()}")
                try:
                    async with session.get(self.sink_root + "/stats") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.005)
        raise BenchError(f"otlp-sink did not answer within 20 s:\n{proc.log_tail()}")

    async def _sink_note(self) -> None:
        async with aiohttp.ClientSession() as session, session.get(self.sink_root + "/stats") as r:
            stats = await r.json()
        self.results.notes.append(
            f"Tracing on: the OTLP sink received {stats['exports']:,} exports, "
            f"{stats['bytes'] / 1e6:,.1f} MB of spans."
        )

    async def _start_relay(
        self, name: str, upstream: str, max_connections: int = 100, client: str = "aiohttp"
    ) -> Proxy:
        port = free_port()
        argv = relay_argv(self.python, port, upstream, max_connections, client)
        proc = self._spawn(name, argv, self.cores.proxy)
        return Proxy(
            RELAY if client == "aiohttp" else RELAY_HTTP1, proc, f"http://127.0.0.1:{port}"
        )

    async def _start_sidecar(
        self,
        name: str,
        primary_path: str,
        extra: Mapping[str, str] | None = None,
        expect: str = "x-sidecar-backend=primary,x-sidecar-attempts=1",
    ) -> Proxy:
        """primary_path "" is the healthy upstream; "/fail" adds a healthy secondary behind it."""
        if self.stand_in:
            # stand-in mode has no fallback to exercise: the relay goes to the healthy upstream
            pool = int((extra or {}).get("PRIMARY_MAX_CONNECTIONS", "100"))
            proxy = await self._start_relay(name, self.upstream_root, pool)
            proxy.label = SIDECAR
            return proxy
        port, admin = free_port(), free_port()
        backends = {"primary": f"{self.upstream_root}{primary_path}/v1"}
        if primary_path:
            backends["secondary"] = f"{self.upstream_root}/v1"
        env = sidecar_env(port, admin, backends) | dict(extra or {})
        argv = [self.python, "-m", "sidecar", "serve"]
        proc = self._spawn(name, argv, self.cores.proxy, env=env)
        urls = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
        return Proxy(SIDECAR, proc, *urls, expect=expect)

    async def _first_answer(self, proc: Proc, url: str, deadline_s: float = 20.0) -> float:
        """Seconds from spawn to the first 200 on url."""
        connector = aiohttp.TCPConnector(force_close=True)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.perf_counter() - proc.spawned_at < deadline_s:
                if not proc.alive():
                    raise BenchError(f"{proc.name} exited early:\n{proc.log_tail()}")
                try:
                    async with session.post(url, data=_JSON_BODY, headers=headers) as r:
                        await r.read()
                        if r.status == 200:
                            return time.perf_counter() - proc.spawned_at
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.005)
        raise BenchError(
            f"{proc.name} did not answer {url} within {deadline_s} s:\n{proc.log_tail()}"
        )

    async def _ready(self, proxy: Proxy) -> float:
        seconds = await self._first_answer(proxy.proc, proxy.url + CHAT_PATH)
        if proxy.admin_url:
            async with (
                aiohttp.ClientSession() as session,
                session.get(proxy.admin_url + "/readyz") as r,
            ):
                if r.status != 200:
                    self.results.notes.append(f"{proxy.proc.name}: /readyz answered {r.status}")
        return seconds

    async def _idle_kib(self, proxy: Proxy) -> int:
        # a few requests of each kind first, so lazily imported code is counted as idle memory
        url = proxy.url + CHAT_PATH
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:
            for body in (_JSON_BODY, _STREAM_BODY) * 10:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise BenchError(f"{proxy.proc.name}: warm-up answered {r.status}")
        await asyncio.sleep(0.5)
        return memory_kib(proxy.proc.pid)[0]

    # measurements

    async def _wrk(
        self,
        url: str,
        mode: str,
        connections: int,
        seconds: int,
        delay_ms: float = 0,
        expect: str = "",
    ) -> wrk.WrkResult:
        return await wrk.run(
            self.wrk_path,
            url,
            mode=mode,
            connections=connections,
            duration_s=seconds,
            cpus=self.cores.load,
            delay_ms=delay_ms,
            histogram=delay_ms > 0,
            expect=expect,
        )

    async def _measure(
        self, proxy: Proxy, scenario: str, mode: str, connections: int, seconds: int
    ) -> wrk.WrkResult:
        before = cpu_seconds(proxy.proc.pid)
        result = await self._wrk(
            proxy.url + PATHS[mode], mode, connections, seconds, expect=proxy.expect
        )
        used = cpu_seconds(proxy.proc.pid) - before
        scenario = proxy.prefix + scenario
        self.results.count(proxy.label, scenario, result)
        if result.requests:
            self.results.add(proxy.label, f"{scenario}_cpu_us", used / result.requests * 1e6)
        self.results.add(proxy.label, f"{scenario}_rps", result.rps)
        self.results.add(proxy.label, f"{scenario}_p50", result.p50_ms)
        self.results.add(proxy.label, f"{scenario}_p90", result.p90_ms)
        self.results.add(proxy.label, f"{scenario}_p99", result.p99_ms)
        return result

    async def _check_the_checker(self) -> None:
        """The stream check must pass an intact stream and fail broken ones, before it judges."""
        url = self.upstream_root
        intact = await self._wrk(url + CHAT_PATH, "stream", 16, 1)
        if intact.failures or not intact.checked:
            raise BenchError(f"the stream checker fails an intact stream: {intact}")
        for broken in ("/cut", "/gap"):
            result = await self._wrk(url + broken + CHAT_PATH, "stream", 16, 1)
            if not result.checked or result.bad != result.checked:
                raise BenchError(f"the stream checker passes {broken} streams: {result}")
        responses = await self._wrk(url + RESPONSES_PATH, "responses", 16, 1)
        if responses.failures or not responses.checked:
            raise BenchError(f"the Responses checker fails an intact stream: {responses}")
        cut = await self._wrk(url + "/cut" + RESPONSES_PATH, "responses", 16, 1)
        if not cut.checked or cut.bad != cut.checked:
            raise BenchError(f"the Responses checker passes /cut streams: {cut}")
        plain = await self._wrk(url + CHAT_PATH, "json", 16, 1)
        self.results.add(DIRECT, "stream16_rps", intact.rps)
        self.results.add(DIRECT, "responses16_rps", responses.rps)
        self.results.add(DIRECT, "json16_rps", plain.rps)

    async def _start_pair(self) -> tuple[Proxy, Proxy]:
        relay = await self._start_relay("relay", self.upstream_root)
        self.results.add(RELAY, "start_ms", await self._ready(relay) * 1000)
        sidecar = await self._start_sidecar("sidecar", "")
        self.results.add(SIDECAR, "start_ms", await self._ready(sidecar) * 1000)
        for proxy in (relay, sidecar):
            self.results.add(proxy.label, "rss_idle_kib", await self._idle_kib(proxy))
        return relay, sidecar

    async def _one_run(self, index: int) -> None:
        log(f"run {index + 1} of {self.plan.runs}")
        relay, sidecar = await self._start_pair()
        traced = await self._start_traced()
        http1 = await self._start_relay("relay-http1", self.upstream_root, client="http1")
        await self._ready(http1)
        # alternate who goes first, so a slow drift of the shared machine hits both alike
        pair = [relay, sidecar] if index % 2 == 0 else [sidecar, relay]
        # tracing on, and the relay on the sidecar's client, are measured in the same rotation
        trio = [*pair, traced] if index % 2 == 0 else [traced, *pair]
        four = [http1, *trio] if index % 2 == 0 else [*trio, http1]
        seconds = self.plan.duration_s
        for proxy in four:
            for mode in ("json", "stream", "responses"):
                await self._wrk(proxy.url + PATHS[mode], mode, 16, self.plan.warmup_s)
        for scenario, mode, connections, proxies in (
            ("json16", "json", 16, four),
            ("json64", "json", 64, pair),
            ("stream16", "stream", 16, four),
            ("responses16", "responses", 16, [*pair, http1]),
        ):
            for proxy in proxies:
                result = await self._measure(proxy, scenario, mode, connections, seconds)
                name = proxy.prefix + proxy.label
                log(f"  {scenario:<11} {name:<14} {result.rps:>8.0f}/s  bad {result.failures}")
        self._stop(traced.proc)
        self._stop(http1.proc)
        await self._paced(pair)
        for proxy in pair:
            self.results.add(proxy.label, "rss_peak_kib", memory_kib(proxy.proc.pid)[1])
            self._stop(proxy.proc)
        # closed: every request tries the primary, then the secondary; open: the primary is
        # skipped, which is not an attempt (README, Failure classes)
        closed = {"SIDECAR_CIRCUIT_FAILURES": _NEVER_OPENS}
        await self._fallback("fallback_closed", closed, "2")
        await self._fallback("fallback_open", {}, "1")

    async def _start_traced(self) -> Proxy:
        """The sidecar with OpenTelemetry on, exporting to the loopback sink (SDK defaults)."""
        otel = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": self.sink_root}
        proxy = await self._start_sidecar("sidecar-traced", "", otel)
        proxy.prefix = TRACED
        await self._ready(proxy)
        return proxy

    async def _paced(self, pair: list[Proxy]) -> None:
        targets = [(DIRECT, self.upstream_root), *((p.label, p.url) for p in pair)]
        pooled: dict[str, Counter[int]] = {label: Counter() for label, _ in targets}
        # short slices in rotation, so a burst of load from a neighbour lands on all three alike
        for _ in range(max(1, self.plan.paced_s // PACED_SLICE_S)):
            for label, base in targets:
                result = await self._wrk(
                    base + CHAT_PATH, "json", 1, PACED_SLICE_S, delay_ms=PACED_DELAY_MS
                )
                self.results.count(label, "paced", result)
                pooled[label].update(result.histogram)
        direct = pooled.pop(DIRECT)
        for label, histogram in pooled.items():
            for p in (50, 99):
                self.results.add(label, f"paced_p{p}", wrk.percentile_ms(histogram, p))
            for p in (50, 90, 99):
                added = wrk.percentile_ms(histogram, p) - wrk.percentile_ms(direct, p)
                self.results.add(label, f"added_p{p}", added)
        for p in (50, 99):
            self.results.add(DIRECT, f"paced_p{p}", wrk.percentile_ms(direct, p))

    async def _fallback(self, scenario: str, extra: Mapping[str, str], attempts: str) -> None:
        expect = f"x-sidecar-backend=secondary,x-sidecar-attempts={attempts}"
        proxy = await self._start_sidecar(scenario, "/fail", extra, expect)
        await self._ready(proxy)
        # the warm-up is also what opens the circuit in the "open" scenario
        await self._wrk(proxy.url + CHAT_PATH, "json", 16, self.plan.warmup_s)
        await self._measure(proxy, scenario, "json", 16, self.plan.duration_s)
        self._stop(proxy.proc)

    async def _memory_check(self) -> None:
        log(f"memory check: {self.plan.memory_waves} waves of {self.plan.memory_streams} streams")
        for label in (RELAY, SIDECAR):
            if label == RELAY:
                proxy = await self._start_relay("memory-relay", self.upstream_root, 2000)
            else:
                extra = {"PRIMARY_MAX_CONNECTIONS": "2000"}
                proxy = await self._start_sidecar("memory-sidecar", "", extra)
            await self._ready(proxy)
            self.results.memory_idle_kib[label] = await self._idle_kib(proxy)
            url = proxy.url + CHAT_PATH
            streams, count = self.plan.memory_streams, self.plan.memory_waves
            self.results.waves[label] = await memory.waves(url, proxy.proc.pid, streams, count)
            self._stop(proxy.proc)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
