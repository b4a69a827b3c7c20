"""`python -m bench.compare REV [REV ...]`: the sidecar at several commits, side by side.

What a change costs is smaller than what a shared machine drifts between two `make bench` runs,
so this measures the versions together: the bench's fake upstream, the bare relay (and the same
relay on the sidecar's own HTTP client, `relay-http1`) and one sidecar per revision (each `git
archive`d into a temporary folder and run with this checkout's interpreter and dependencies; `.`
is the working tree as it is, uncommitted changes included, and a folder holding a `sidecar/`
package, such as a patched copy, runs as it is), all started at once, then interleaved rounds of
one wrk scenario (the order reversed every other round, so a neighbour's burst lands on all of
them), CPU per request from /proc. Printed: the medians, and the median of the per-round ratios
to each relay and to the first revision.

    python -m bench.compare 263a885 6f5eefa . --mode stream --rounds 9
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import wrk
from bench.procs import BenchError, Proc, cpu_seconds, free_port, spawn, stop
from bench.runner import PATHS, relay_argv, sidecar_env

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    name: str
    proc: Proc
    url: str
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    failures: int = 0


def _tree(rev: str, into: Path) -> Path:
    if rev == ".":
        return ROOT
    if (Path(rev) / "sidecar" / "__init__.py").is_file():
        return Path(rev).resolve()  # a folder holding a sidecar/ package (a patched copy)
    tree = into / rev.replace("/", "_")
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "sidecar"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


async def _listening(url: str, proc: Proc, mode: str, wrk_path: str) -> None:
    for _ in range(200):
        if not proc.alive():
            raise BenchError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            await wrk.run(wrk_path, url, mode=mode, connections=1, duration_s=1, cpus=[0])
            return
        except BenchError:
            await asyncio.sleep(0.1)
    raise BenchError(f"{proc.name} never answered")


async def _round(t: Target, args: argparse.Namespace, wrk_path: str) -> None:
    before = cpu_seconds(t.proc.pid)
    result = await wrk.run(
        wrk_path,
        t.url,
        mode=args.mode,
        connections=args.connections,
        duration_s=args.duration,
        cpus=[0],
    )
    t.rps.append(result.rps)
    t.cpu_us.append((cpu_seconds(t.proc.pid) - before) / max(result.requests, 1) * 1e6)
    t.failures += result.failures


def _ratio(a: Target, b: Target, key: str) -> float:
    xs: list[float] = getattr(a, key)
    ys: list[float] = getattr(b, key)
    return statistics.median(x / y for x, y in zip(xs, ys, strict=True))


def _report(targets: list[Target], args: argparse.Namespace) -> list[str]:
    lines = [f"mode={args.mode} rounds={args.rounds}x{args.duration}s conns={args.connections}"]
    for t in targets:
        spread = " ".join(f"{c:.0f}" for c in t.cpu_us)
        lines.append(
            f"{t.name:>12}  {statistics.median(t.rps):8.0f} req/s"
            f"  {statistics.median(t.cpu_us):6.1f} CPU us/req  failures {t.failures}"
            f"  (CPU per round: {spread})"
        )
    relay, http1, first = targets[0], targets[1], targets[2]
    for t in targets[2:]:
        lines.append(
            f"{t.name:>12}  vs relay: {_ratio(t, relay, 'rps'):.3f}x req/s,"
            f" {_ratio(t, relay, 'cpu_us'):.3f}x CPU"
            f"   vs relay-http1: {_ratio(t, http1, 'cpu_us'):.3f}x CPU"
            + (
                f"   vs {first.name}: {_ratio(t, first, 'rps'):.3f}x req/s,"
                f" {_ratio(t, first, 'cpu_us'):.3f}x CPU"
                if t is not first
                else ""
            )
        )
    return lines


async def _compare(args: argparse.Namespace, scratch: Path) -> list[str]:
    wrk_path = wrk.ensure_wrk()
    logs = scratch / "logs"
    logs.mkdir()
    py = sys.executable
    up = free_port()
    procs = [
        spawn("upstream", [py, "-m", "bench.upstream", "--port", str(up)], cpus=[0], log_dir=logs)
    ]
    targets: list[Target] = []
    try:
        path = PATHS[args.mode]
        for client, name in (("aiohttp", "relay"), ("http1", "relay-http1")):
            relay_port = free_port()
            argv = relay_argv(py, relay_port, f"http://127.0.0.1:{up}", 100, client)
            relay = spawn(name, argv, cpus=[1], log_dir=logs)
            procs.append(relay)
            targets.append(Target(name, relay, f"http://127.0.0.1:{relay_port}{path}"))
        for rev in args.revs:
            port = free_port()
            tree = _tree(rev, scratch)
            env = sidecar_env(port, free_port(), {"primary": f"http://127.0.0.1:{up}/v1"}) | {
                "PYTHONPATH": str(tree),
                # `python -m` would put the working directory (this checkout) first on sys.path,
                # ahead of PYTHONPATH, and every revision would run this checkout's code.
                "PYTHONSAFEPATH": "1",
            }
            proc = spawn(
                rev.replace("/", "_"),
                [py, "-m", "sidecar", "serve"],
                cpus=[1],
                log_dir=logs,
                env=env,
            )
            procs.append(proc)
            targets.append(Target(rev, proc, f"http://127.0.0.1:{port}{path}"))
        for t in targets:
            await _listening(t.url, t.proc, args.mode, wrk_path)
        for i in range(args.rounds):
            for t in targets if i % 2 == 0 else targets[::-1]:
                await _round(t, args, wrk_path)
        return _report(targets, args)
    finally:
        for p in procs:
            stop(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument(
        "revs", nargs="+", help="git revisions, `.` (the working tree) or folders with sidecar/"
    )
    parser.add_argument("--mode", choices=sorted(PATHS), default="stream")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=int, default=3, help="seconds per round and target")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch:
        try:
            lines = asyncio.run(_compare(args, Path(scratch)))
        except BenchError as e:
            print(f"bench.compare: {e}", file=sys.stderr)
            return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
