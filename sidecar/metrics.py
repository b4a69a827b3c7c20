"""The instruments of the README's metrics reference, named once, with every configured series
present at zero.

Label children are resolved once per (chain, backend) at startup, so the hot path only calls
`inc`/`observe` on ready objects. The instruments every request moves (requests, attempts,
failures, tokens, recoveries and the three latency histograms) are `LoopCounter`s and
`LoopHistogram`s: plain numbers, exposed through prometheus_client's collector API with the same
names, types, labels and buckets its own classes give. prometheus_client's children take a
thread lock on every `inc` and walk the bucket list on every `observe`; here every update and
every scrape runs on the event loop's one thread, so no lock is needed (`make bench` measured
the instruments at about 6 % of a stream's CPU before).
"""

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from sidecar import __version__
from sidecar.call import Usage
from sidecar.failure import FailureClass
from sidecar.ratelimit import Quota, Resource

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_FIRST_TOKEN = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120)


class Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class Buckets:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf's
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        # The first bound at or above the amount: Prometheus buckets are `le`.
        self.counts[bisect_left(self._bounds, amount)] += 1


C = TypeVar("C", Count, Buckets)


class _LoopFamily(Collector, Generic[C]):
    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], C] = {}
        registry.register(self)

    def labels(self, *values: str) -> C:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        found = self.children.get(values)
        if found is None:
            found = self.children[values] = self._child()
        return found

    def _child(self) -> C:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def _family(self) -> Metric:
        raise NotImplementedError


class LoopCounter(_LoopFamily[Count]):
    def _child(self) -> Count:
        return Count()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for values, child in self.children.items():
            family.add_metric(values, child.value)
        return [family]


class LoopHistogram(_LoopFamily[Buckets]):
    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        # Bound labels exactly as prometheus_client writes them ("1.0", "0.005").
        self._les = [str(floatToGoString(b)) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        super().__init__(name, doc, labelnames, registry)

    def _child(self) -> Buckets:
        return Buckets(self.bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for values, child in self.children.items():
            cumulative, total = [], 0
            for le, n in zip(self._les, child.counts, strict=True):
                total += n
                cumulative.append((le, float(total)))
            family.add_metric(values, cumulative, child.sum)
        return [family]


@dataclass(slots=True)
class BackendSeries:
    success: Count
    failure: Count
    skipped: Count
    failures: dict[FailureClass, Count]
    attempt_seconds: Buckets
    first_token_seconds: Buckets
    prompt_tokens: Count
    completion_tokens: Count
    cache_read_tokens: Count
    cache_write_tokens: Count
    reasoning_tokens: Count
    recovery_success: Count
    recovery_failure: Count

    def count_tokens(self, usage: Usage) -> None:
        # Each inc takes a lock: skip the ones that add nothing (the cache and reasoning kinds
        # mostly).
        if usage.prompt:
            self.prompt_tokens.inc(usage.prompt)
        if usage.completion:
            self.completion_tokens.inc(usage.completion)
        if usage.cache_read:
            self.cache_read_tokens.inc(usage.cache_read)
        if usage.cache_write:
            self.cache_write_tokens.inc(usage.cache_write)
        if usage.reasoning:
            self.reasoning_tokens.inc(usage.reasoning)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "llm_sidecar_"
        r = registry
        self.requests = LoopCounter(
            p + "requests", "Requests answered.", ["route", "chain", "status"], registry=r
        )
        self.request_seconds = LoopHistogram(
            p + "request_duration_seconds",
            "Time from request to the end of the answer.",
            ["route", "chain"],
            buckets=_LATENCY,
            registry=r,
        )
        self.attempts = LoopCounter(
            p + "backend_attempts",
            "Backend attempts by outcome; skipped ones sent nothing.",
            ["chain", "backend", "outcome"],
            registry=r,
        )
        self.failures = LoopCounter(
            p + "backend_failures",
            "Backend attempts and skips that failed, by failure class.",
            ["chain", "backend", "class"],
            registry=r,
        )
        self.exhausted = Counter(
            p + "fallback_exhausted",
            "Requests for which every backend failed.",
            ["chain"],
            registry=r,
        )
        self.attempt_seconds = LoopHistogram(
            p + "backend_attempt_duration_seconds",
            "Time from sending an attempt to its outcome (complete body, or commit for streams).",
            ["chain", "backend"],
            buckets=_LATENCY,
            registry=r,
        )
        self.first_token_seconds = LoopHistogram(
            p + "backend_first_token_seconds",
            "Streaming: time from send to the first content event.",
            ["chain", "backend"],
            buckets=_FIRST_TOKEN,
            registry=r,
        )
        self.tokens = LoopCounter(
            p + "tokens",
            "Tokens reported by backends. cache_read and cache_write are parts of prompt, "
            "reasoning is part of completion: never sum all types.",
            ["chain", "backend", "type"],
            registry=r,
        )
        self.recoveries = LoopCounter(
            p + "stream_recoveries",
            "Broken streams continued on a prefill backend.",
            ["chain", "backend", "outcome"],
            registry=r,
        )
        self.disconnects = Counter(
            p + "client_disconnects",
            "Callers that went away before the answer.",
            ["route"],
            registry=r,
        )
        self.inflight = Gauge(p + "inflight_requests", "Requests in flight.", registry=r)
        self.circuit = Gauge(
            p + "backend_circuit_state",
            "Circuit state: 0 closed, 1 open, 2 half-open.",
            ["backend"],
            registry=r,
        )
        self.info = Gauge(
            p + "backend_info",
            "Configured backends, one series per chain position.",
            ["chain", "backend", "kind", "position"],
            registry=r,
        )
        # No series until the upstream reports one: a zero would read as "quota exhausted".
        self.ratelimit_remaining = Gauge(
            p + "backend_ratelimit_remaining",
            "The upstream's last reported remaining quota in its current window.",
            ["backend", "resource"],
            registry=r,
        )
        self.ratelimit_limit = Gauge(
            p + "backend_ratelimit_limit",
            "The upstream's last reported quota window size.",
            ["backend", "resource"],
            registry=r,
        )
        self.credential_reloads = Counter(
            p + "credential_reloads",
            "Credential files re-read after they changed; a failure keeps the previous value.",
            ["backend", "outcome"],
            registry=r,
        )
        self.build = Gauge(p + "build_info", "Build information.", ["version"], registry=r)
        self.build.labels(__version__).set(1)
        self._series: dict[tuple[str, str], BackendSeries] = {}
        self._requests: dict[tuple[str, str, int], Count] = {}
        self._durations: dict[tuple[str, str], Buckets] = {}

    def configure(self, chains: dict[str, list[tuple[str, str]]]) -> None:
        """Create every series at zero; `chains` maps chain → [(backend, kind)]."""
        for chain, backends in chains.items():
            self.exhausted.labels(chain)
            for position, (backend, kind) in enumerate(backends):
                self.info.labels(chain, backend, kind, str(position)).set(1)
                self.circuit.labels(backend)
                self._series[(chain, backend)] = self._make(chain, backend)

    def _make(self, chain: str, backend: str) -> BackendSeries:
        a, t, rec = self.attempts, self.tokens, self.recoveries
        return BackendSeries(
            success=a.labels(chain, backend, "success"),
            failure=a.labels(chain, backend, "failure"),
            skipped=a.labels(chain, backend, "skipped"),
            failures={c: self.failures.labels(chain, backend, c.value) for c in FailureClass},
            attempt_seconds=self.attempt_seconds.labels(chain, backend),
            first_token_seconds=self.first_token_seconds.labels(chain, backend),
            prompt_tokens=t.labels(chain, backend, "prompt"),
            completion_tokens=t.labels(chain, backend, "completion"),
            cache_read_tokens=t.labels(chain, backend, "cache_read"),
            cache_write_tokens=t.labels(chain, backend, "cache_write"),
            reasoning_tokens=t.labels(chain, backend, "reasoning"),
            recovery_success=rec.labels(chain, backend, "success"),
            recovery_failure=rec.labels(chain, backend, "failure"),
        )

    def credential_reloaded(self, owner: str) -> Callable[[bool], None]:
        """The reload callback of one credential file (`owner`: a backend, or `inbound`)."""
        success = self.credential_reloads.labels(owner, "success")
        failure = self.credential_reloads.labels(owner, "failure")

        def reloaded(ok: bool) -> None:
            (success if ok else failure).inc()

        return reloaded

    def quota_reported(self, backend: str) -> Callable[[Quota], None]:
        """The gauge update for one backend's rate-limit reports; series appear on first report."""
        children: dict[tuple[Gauge, Resource], Gauge] = {}

        def child(gauge: Gauge, resource: Resource) -> Gauge:
            found = children.get((gauge, resource))
            if found is None:
                found = children[(gauge, resource)] = gauge.labels(backend, resource.value)
            return found

        def reported(q: Quota) -> None:
            child(self.ratelimit_remaining, q.resource).set(q.remaining)
            if q.limit is not None:
                child(self.ratelimit_limit, q.resource).set(q.limit)

        return reported

    def series(self, chain: str, backend: str) -> BackendSeries:
        return self._series[(chain, backend)]

    def request(self, route: str, chain: str, status: int) -> Count:
        key = (route, chain, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, chain, str(status))
        return child

    def request_duration(self, route: str, chain: str) -> Buckets:
        key = (route, chain)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self.request_seconds.labels(route, chain)
        return child
