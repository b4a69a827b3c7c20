"""The Markdown report: one table of medians, each with its ratio to the relay of the same run."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.memory import Wave
from bench.runner import DIRECT, RELAY, RELAY_HTTP1, SIDECAR, TRACED, Results

MIB = 1024.0
# (relay, sidecar, ratio) -> within budget; None when the figures to judge are missing
Check = Callable[[float | None, float, float | None], bool | None]


@dataclass(frozen=True)
class Row:
    label: str
    key: str
    fmt: str
    target: str = ""
    check: Check | None = None
    scale: float = 1.0
    # fallback and tracing rows compare the sidecar with its own normal figure, not the relay
    base: tuple[str, str] | None = None
    # the relay of the relay column: the bare aiohttp one, or the same on the sidecar's client
    relay: str = RELAY


def _ratio_at_least(limit: float) -> Check:
    return lambda relay, sidecar, ratio: None if ratio is None else ratio >= limit


def _ratio_at_most(limit: float) -> Check:
    return lambda relay, sidecar, ratio: None if ratio is None else ratio <= limit


def _sidecar_below(limit: float) -> Check:
    return lambda relay, sidecar, ratio: sidecar <= limit


def _within_relay(margin: float) -> Check:
    return lambda relay, sidecar, ratio: None if relay is None else sidecar - relay <= margin


ROWS = [
    Row(
        "Requests/s, JSON, 16 connections", "json16_rps", "{:,.0f}", "≥ 0.7×", _ratio_at_least(0.7)
    ),
    Row("Requests/s, JSON, 64 connections", "json64_rps", "{:,.0f}"),
    Row("Latency p50, JSON, 16 conns (ms)", "json16_p50", "{:.2f}"),
    Row("Latency p90, JSON, 16 conns (ms)", "json16_p90", "{:.2f}"),
    Row("Latency p99, JSON, 16 conns (ms)", "json16_p99", "{:.2f}"),
    Row("Latency p50, JSON, 64 conns (ms)", "json64_p50", "{:.2f}"),
    Row("Latency p90, JSON, 64 conns (ms)", "json64_p90", "{:.2f}"),
    Row("Latency p99, JSON, 64 conns (ms)", "json64_p99", "{:.2f}"),
    Row(
        "Streams/s, 50 chunks, 16 conns, each checked intact",
        "stream16_rps",
        "{:,.0f}",
        "≥ 0.8×",
        _ratio_at_least(0.8),
    ),
    Row("Stream latency p50, 16 conns (ms)", "stream16_p50", "{:.2f}"),
    Row("Stream latency p99, 16 conns (ms)", "stream16_p99", "{:.2f}"),
    Row("Latency p50 at ~50 req/s, as measured (ms)", "paced_p50", "{:.3f}"),
    Row("Latency p99 at ~50 req/s, as measured (ms)", "paced_p99", "{:.3f}"),
    Row(
        "Added latency p50 at ~50 req/s (ms)",
        "added_p50",
        "{:.3f}",
        "≤ relay + 0.3 ms",
        _within_relay(0.3),
    ),
    Row("Added latency p90 at ~50 req/s (ms)", "added_p90", "{:.3f}"),
    Row(
        "Added latency p99 at ~50 req/s (ms)",
        "added_p99",
        "{:.3f}",
        "< 3 ms",
        _sidecar_below(3.0),
    ),
    Row(
        "CPU µs per request, JSON, 16 conns",
        "json16_cpu_us",
        "{:.0f}",
        "≤ 1.25×",
        _ratio_at_most(1.25),
    ),
    Row("CPU µs per request, JSON, 64 conns", "json64_cpu_us", "{:.0f}"),
    Row(
        "CPU µs per stream, 16 conns",
        "stream16_cpu_us",
        "{:.0f}",
        "≤ 1.25×",
        _ratio_at_most(1.25),
    ),
    Row(
        "Responses streams/s, 50 deltas, 16 conns, each checked intact",
        "responses16_rps",
        "{:,.0f}",
    ),
    Row("CPU µs per Responses stream, 16 conns", "responses16_cpu_us", "{:.0f}"),
    # the relay column: the same relay on the sidecar's own HTTP client (what the sidecar's
    # reading, fallback and metrics cost over its transport)
    *(
        Row(f"Relay on the sidecar's client: {label}", key, fmt, relay=RELAY_HTTP1)
        for label, key, fmt in (
            ("req/s, JSON, 16 conns", "json16_rps", "{:,.0f}"),
            ("CPU µs per request, JSON, 16 conns", "json16_cpu_us", "{:.0f}"),
            ("streams/s, 16 conns", "stream16_rps", "{:,.0f}"),
            ("CPU µs per stream, 16 conns", "stream16_cpu_us", "{:.0f}"),
            ("CPU µs per Responses stream, 16 conns", "responses16_cpu_us", "{:.0f}"),
        )
    ),
    # tracing on against the same sidecar with tracing off, measured in the same rotation
    Row(
        "Tracing on: req/s, JSON, 16 conns",
        f"{TRACED}json16_rps",
        "{:,.0f}",
        base=(SIDECAR, "json16_rps"),
    ),
    Row(
        "Tracing on: CPU µs per request, JSON, 16 conns",
        f"{TRACED}json16_cpu_us",
        "{:.0f}",
        base=(SIDECAR, "json16_cpu_us"),
    ),
    Row(
        "Tracing on: streams/s, 16 conns",
        f"{TRACED}stream16_rps",
        "{:,.0f}",
        base=(SIDECAR, "stream16_rps"),
    ),
    Row(
        "Tracing on: CPU µs per stream, 16 conns",
        f"{TRACED}stream16_cpu_us",
        "{:.0f}",
        base=(SIDECAR, "stream16_cpu_us"),
    ),
    Row(
        "Fallback (primary 503), circuit closed: req/s",
        "fallback_closed_rps",
        "{:,.0f}",
        "≥ 0.45× own normal",
        _ratio_at_least(0.45),
        base=(SIDECAR, "json16_rps"),
    ),
    Row(
        "Fallback (primary 503), circuit open: req/s",
        "fallback_open_rps",
        "{:,.0f}",
        "≥ 0.9× own normal",
        _ratio_at_least(0.9),
        base=(SIDECAR, "json16_rps"),
    ),
    Row("RSS idle (MiB)", "rss_idle_kib", "{:.1f}", "≤ 55 MiB", _sidecar_below(55), MIB),
    Row(
        "RSS peak over the run, incl. 64 conns (MiB)",
        "rss_peak_kib",
        "{:.1f}",
        "≤ 100 MiB",
        _sidecar_below(100),
        MIB,
    ),
    Row(
        "Start to first answered request (ms)",
        "start_ms",
        "{:.0f}",
        "< 1000 ms",
        _sidecar_below(1000),
    ),
]


def median(results: Results, label: str, key: str) -> float | None:
    values = results.samples.get(label, {}).get(key)
    return statistics.median(values) if values else None


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def _status(ok: bool | None) -> str:
    return {None: "", True: "ok", False: OVER}[ok]


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value / scale


def _row(results: Results, row: Row) -> str:
    sidecar = _scaled(median(results, SIDECAR, row.key), row.scale)
    relay = None if row.base else _scaled(median(results, row.relay, row.key), row.scale)
    denominator = median(results, *row.base) if row.base else relay
    ratio = sidecar / denominator if sidecar is not None and denominator else None
    ok = row.check(relay, sidecar, ratio) if row.check and sidecar is not None else None
    # three decimals where a budget judges the ratio, so 0.698 does not print as a passing 0.70
    ratio_text = "—" if ratio is None else f"{ratio:.3f}×" if row.check else f"{ratio:.2f}×"
    cells = [row.label, _cell(relay, row.fmt), _cell(sidecar, row.fmt), ratio_text]
    cells += [_spread(results, row), row.target, _status(ok)]
    return "| " + " | ".join(cells) + " |"


def _spread(results: Results, row: Row) -> str:
    """Lowest and highest ratio of single runs: how far one run could be trusted alone."""
    numerators = results.samples.get(SIDECAR, {}).get(row.key, [])
    label, key = row.base or (row.relay, row.key)
    denominators = results.samples.get(label, {}).get(key, [])
    ratios = [n / d for n, d in zip(numerators, denominators, strict=False) if d]
    if len(ratios) < 2:
        return ""
    return f"{min(ratios):.2f}–{max(ratios):.2f}"


@dataclass(frozen=True)
class MemoryFigures:
    idle_mib: float
    peak_over_idle_mib: float
    growth_pct: float
    after_waves: str


def _memory_figures(results: Results, label: str) -> MemoryFigures | None:
    waves = results.waves.get(label)
    idle = results.memory_idle_kib.get(label)
    if not waves or idle is None:
        return None
    first, last = waves[0].rss_after_kib, waves[-1].rss_after_kib
    return MemoryFigures(
        idle_mib=idle / MIB,
        peak_over_idle_mib=(max(w.peak_rss_kib for w in waves) - idle) / MIB,
        growth_pct=(last - first) / first * 100,
        after_waves=" / ".join(f"{w.rss_after_kib / MIB:.1f}" for w in waves),
    )


def _memory_row(label: str, relay: float | None, sidecar: float, fmt: str, check: str) -> str:
    ratio = f"{sidecar / relay:.2f}×" if relay else "—"
    target, ok = "", None
    if check:
        target = check
        limit = float(check.split()[1])
        ok = sidecar <= limit
    cells = [label, _cell(relay, fmt), fmt.format(sidecar), ratio, "", target, _status(ok)]
    return "| " + " | ".join(cells) + " |"


def _memory_rows(results: Results) -> list[str]:
    sidecar = _memory_figures(results, SIDECAR)
    if sidecar is None:
        return []
    relay = _memory_figures(results, RELAY)
    streams = results.waves[SIDECAR][0].streams
    count = len(results.waves[SIDECAR])
    return [
        _memory_row(
            f"{streams} slow streams: RSS idle before (MiB)",
            relay.idle_mib if relay else None,
            sidecar.idle_mib,
            "{:.1f}",
            "",
        ),
        _memory_row(
            f"{streams} slow streams: peak RSS over idle (MiB)",
            relay.peak_over_idle_mib if relay else None,
            sidecar.peak_over_idle_mib,
            "{:.1f}",
            "≤ 64 MiB",
        ),
        f"| RSS after each of {count} waves (MiB) | {relay.after_waves if relay else '—'} "
        f"| {sidecar.after_waves} | | | | |",
        _memory_row(
            "Growth, first wave to last (%)",
            relay.growth_pct if relay else None,
            sidecar.growth_pct,
            "{:+.1f}",
            "≤ 10 %",
        ),
    ]


def _integrity(results: Results) -> list[str]:
    lines = [
        "| scenario | proxy | responses checked | bad (not 200 or not intact) | socket errors "
        "| served off the expected path |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (label, scenario), tally in sorted(results.tallies.items(), key=lambda i: i[0][::-1]):
        counts = f"{tally.checked:,} | {tally.bad:,} | {tally.socket_errors:,} | {tally.offpath:,}"
        lines.append(f"| {scenario} | {label} | {counts} |")
    lines += ["", "| memory wave | proxy | streams | bad | seconds |", "|---|---|---:|---:|---:|"]
    for label, waves in results.waves.items():
        for index, wave in enumerate(waves, 1):
            lines.append(_wave_line(index, label, wave))
    return lines


def _wave_line(index: int, label: str, wave: Wave) -> str:
    return f"| {index} | {label} | {wave.streams} | {wave.bad} | {wave.seconds:.1f} |"


def _warnings(results: Results) -> list[str]:
    warnings = []
    failed = sum(t.bad + t.socket_errors for t in results.tallies.values())
    failed += sum(w.bad for waves in results.waves.values() for w in waves)
    if failed:
        warnings.append(f"**{failed:,} answers failed the check** (see the table above).")
    offpath = sum(t.offpath for t in results.tallies.values())
    if offpath:
        warnings.append(
            f"**{offpath:,} answers came from an unexpected path** (`x-sidecar-backend` or "
            "`x-sidecar-attempts` not what the scenario should produce)."
        )
    for key in ("json16_rps", "stream16_rps", "responses16_rps"):
        direct, relay = median(results, DIRECT, key), median(results, RELAY, key)
        if direct and relay and direct < 3 * relay:
            warnings.append(
                f"**The fake upstream may be limiting** {key}: alone {direct:,.0f}/s, "
                f"through the relay {relay:,.0f}/s."
            )
    return warnings


OVER = "**over budget**"


def render(results: Results, header: list[str], method: list[str]) -> tuple[str, list[str]]:
    """The report, and the figures over their issue-6 budget."""
    table = [
        "| figure (median of runs) | relay | llm-sidecar | sidecar ÷ relay | single runs | target "
        "| |",
        "|---|---:|---:|---:|---:|---|---|",
        *(_row(results, row) for row in ROWS),
        *_memory_rows(results),
    ]
    direct = [
        f"{key}: {_cell(median(results, DIRECT, key), '{:,.0f}')}"
        for key in ("json16_rps", "stream16_rps", "responses16_rps")
    ]
    paced = [f"p{p} {_cell(median(results, DIRECT, f'paced_p{p}'), '{:.3f}')} ms" for p in (50, 99)]
    ceiling = (
        "Fake upstream alone, driven by wrk on the load core (its ceiling, so that it is not "
        f"what is measured): {', '.join(direct)}; at ~50 req/s it answers in {', '.join(paced)}, "
        "the floor that the added latencies are measured from."
    )
    notes = [f"- {note}" for note in [*_warnings(results), *results.notes]]
    over = [line.split(" | ")[0].removeprefix("| ") for line in table if line.endswith(f"{OVER} |")]
    verdict = (
        f"Over budget: {'; '.join(over)}." if over else "Every figure with a target is in budget."
    )
    text = "\n".join(
        [
            *header,
            "",
            *table,
            "",
            verdict,
            "",
            ceiling,
            "",
            "### Method",
            "",
            *method,
            "",
            "### Every response checked",
            "",
            *_integrity(results),
            *(["", "### Notes", "", *notes] if notes else []),
            "",
        ]
    )
    return text, over
