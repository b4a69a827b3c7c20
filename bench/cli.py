"""`python -m bench`: run the plan, write bench/results/latest.md, print the same table."""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import datetime
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import uvloop

from bench import report, wrk
from bench.procs import BenchError
from bench.runner import FULL, PACED_DELAY_MS, PACED_SLICE_S, QUICK, Bench, Cores, Plan
from bench.upstream import FRAMINGS

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "results" / "latest.md"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short run (~1 minute smoke)")
    parser.add_argument("--runs", type=int, help="runs to take the median of (default 3)")
    parser.add_argument("--duration", type=int, help="seconds per wrk measurement")
    parser.add_argument("--no-memory", action="store_true", help="skip the slow-stream waves")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--framing",
        choices=FRAMINGS,
        default="stream",
        help="the fake upstream's fast stream: one HTTP chunk (stream) or one per event (events)",
    )
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="put a second bare relay in the sidecar's slot (to validate the bench itself)",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter that runs the sidecar and relay"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--strict", action="store_true", help="exit 3 when a figure is over its issue-6 budget"
    )
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = dataclasses.replace(plan, runs=args.runs)
    if args.duration:
        plan = dataclasses.replace(plan, duration_s=args.duration, paced_s=2 * args.duration)
    if args.no_memory:
        plan = dataclasses.replace(plan, memory_waves=0)
    plan = dataclasses.replace(plan, framing=args.framing)
    return plan


def _raise_fd_limit() -> None:
    # the memory check holds thousands of sockets across the client, proxy and upstream
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _output(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _machine(args: argparse.Namespace, wrk_path: str, cores: Cores) -> list[str]:
    versions = _output(
        [
            args.python,
            "-c",
            "import sys, aiohttp, uvloop; "
            "print(sys.version.split()[0], aiohttp.__version__, uvloop.__version__)",
        ]
    ).split()
    python, aiohttp_version, uvloop_version = (versions + ["?"] * 3)[:3]
    commit = _output(["git", "rev-parse", "--short", "HEAD"])
    if _output(["git", "status", "--porcelain", "--", "sidecar"]):
        commit += " + uncommitted changes in sidecar/"
    pinning = (
        f"proxy under test on CPU {cores.proxy}, wrk + fake upstream + bench client on CPU "
        f"{cores.load}"
        if cores.proxy
        else "not pinned"
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- Machine: {os.cpu_count()} CPUs ({_cpu_model()}), Linux {platform.release()}, "
        f"load average at start {load}. **Shared machine**: other engineers' tests ran on the "
        "same cores, so every figure is a median and single runs vary.",
        f"- Python {python}, aiohttp {aiohttp_version}, uvloop {uvloop_version}, "
        f"{_output([wrk_path, '--version'])}; llm-sidecar at commit {commit}.",
        f"- Pinning: {pinning}.",
    ]


_FRAMING_TEXT = {
    "stream": "framed as one HTTP chunk",
    "events": "each event its own HTTP chunk, `--framing events`",
}


def _method(plan: Plan, stand_in: bool) -> list[str]:
    slot = (
        "**stand-in mode: the llm-sidecar column is a second bare relay, not llm-sidecar**"
        if stand_in
        else "llm-sidecar is `python -m sidecar serve`, configured by environment only "
        "(`SIDECAR_BACKENDS`, `PRIMARY_BASE_URL`, `PRIMARY_API_KEY=sk-bench`, "
        "`SIDECAR_LOG_LEVEL=WARNING`, `SIDECAR_MAX_INFLIGHT=100000`)"
    )
    return [
        "- Fake upstream (`bench/upstream.py`): a raw asyncio protocol on uvloop, pre-built "
        "answers: a chat completion (JSON), a 50-chunk SSE stream sent in one write "
        f"({_FRAMING_TEXT[plan.framing]}), an always-503 path, and a "
        f"slow stream dripping its 50 chunks every {plan.drip_ms:.0f} ms for the memory check.",
        "- Relay (`bench/relay.py`): aiohttp + uvloop, reads the body, forwards it with one pooled "
        "ClientSession (100 connections, as the sidecar's default), relays the answer as bytes, "
        "streams chunk by chunk; no parsing, metrics, logging or fallback. The rows 'Relay on "
        "the sidecar's client' put the sidecar against the same relay on `sidecar.http1` "
        "(`--client http1`) instead of ClientSession.",
        f"- {slot}.",
        f"- Load: Debian `wrk -t1` with `bench/wrk.lua`, {plan.duration_s} s per measurement after "
        f"a {plan.warmup_s} s warm-up per process. Every answer is checked in Lua: status 200, the "
        "upstream's content, and for streams every content token in order, exactly 50 "
        "`chat.completion.chunk` events, `data: [DONE]` last and no error event. Before anything "
        "is measured the checker must pass the intact stream and fail one cut in half and one "
        "missing a chunk. Responses streams (`POST /v1/responses`, `stream: true`, the "
        "sidecar's `openai` kind with `RESPONSES=native`) are checked alike: `response.created` "
        "first, all 50 `response.output_text.delta` tokens in order, `response.completed` last; "
        "the checker must fail a Responses stream cut in half. "
        "Sidecar answers must also carry the `x-sidecar-backend` and `x-sidecar-attempts` the "
        "scenario should produce (primary/1; fallback closed: secondary/2; open: secondary/1).",
        f"- Added latency: one connection with {PACED_DELAY_MS} ms of think time (about 50 req/s, "
        f"wrk's `delay()`), {plan.paced_s} s per target per run in {PACED_SLICE_S} s slices that "
        "rotate between the upstream directly, the relay and the sidecar; percentiles come from "
        "the pooled per-microsecond histogram of each run, and the figure is the proxy's "
        "percentile minus the direct one of the same run.",
        "- CPU per request: utime+stime from `/proc/PID/stat` across the measurement, divided by "
        "the requests wrk completed. RSS: `VmRSS` idle (after 20 warm-up requests), `VmHWM` for "
        "the peak. Start: from spawning the process to its first 200 answer (polled every 5 ms).",
        "- Fallback: primary always 503, healthy secondary. Closed: "
        "`SIDECAR_CIRCUIT_FAILURES=1000000000`; open: default circuit settings, the warm-up opens "
        "it. Their ratio is to the sidecar's own JSON 16-connection throughput.",
        "- Tracing on: a third process, the sidecar with `OTEL_TRACES_EXPORTER=otlp` and "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` at a loopback sink (`bench/otlp_sink.py`, aiohttp on the "
        "load core, 200 to every `POST /v1/traces`), SDK defaults otherwise; measured on JSON "
        "and streams at 16 connections in the same rotation as the relay and the sidecar, and "
        "its ratio is to the sidecar's own figure with tracing off.",
        f"- Memory check: fresh processes (pool of 2000 upstream connections), "
        f"{plan.memory_waves} waves of {plan.memory_streams} concurrent slow streams opened in "
        "batches of 50, each stream checked intact; peak `VmRSS` sampled every 50 ms.",
        f"- Median of {plan.runs} run(s); relay and sidecar alternate which goes first; each run "
        "starts fresh processes. Ratio = sidecar ÷ relay of the medians; *single runs* is the "
        "lowest and highest ratio of one run alone. Every single figure is in the `.json` file "
        "written next to this one.",
    ]


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    plan = _plan(args)
    if not args.stand_in and not (REPO / "sidecar" / "app.py").exists():
        print("bench: sidecar/app.py does not exist yet; use --stand-in", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        wrk_path = wrk.ensure_wrk()
        if not shutil.which("taskset") and not args.no_pin:
            raise BenchError("taskset (util-linux) is missing: install it or pass --no-pin")
        _raise_fd_limit()
        # An installed package has its bytecode compiled (pip does it); a source tree run with
        # PYTHONDONTWRITEBYTECODE would compile at every start and measure that instead.
        compileall.compile_dir(REPO / "sidecar", quiet=1)
        cores = Cores.pick(pin=not args.no_pin)
        if cores.load:
            os.sched_setaffinity(0, cores.load)
        log_dir = args.output.parent / "logs"
        shutil.rmtree(log_dir, ignore_errors=True)
        log_dir.mkdir(parents=True)
        machine = _machine(args, wrk_path, cores)
        bench = Bench(plan, cores, args.python, args.stand_in, log_dir, wrk_path)
        results = uvloop.run(bench.run())
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        f"## llm-sidecar bench ({'quick' if args.quick else 'full'}, {when})",
        "",
        f"- Command: `{command}` (took {elapsed:.0f} s; process logs in `{log_dir}`).",
        *machine,
    ]
    text, over = report.render(results, header, _method(plan, args.stand_in))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    # every single measurement, for whoever doubts a median
    raw = orjson.dumps(results.raw(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    args.output.with_suffix(".json").write_bytes(raw)
    print(text)
    return 3 if args.strict and over else 0
