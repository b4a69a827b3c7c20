"""The instruments (`sidecar.metrics`): every configured series exists at zero from startup, with
the README's label sets, and a request moves exactly the series it should."""

import aiohttp
import pytest
from conftest import FakeFactory, SidecarFactory, chain_env, chat, post
from fakes.openai_upstream import Script
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from sidecar import __version__
from sidecar.call import Usage
from sidecar.failure import FailureClass
from sidecar.metrics import LoopCounter, LoopHistogram, Metrics
from sidecar.ratelimit import Quota, Resource


def configured(chains: dict[str, list[tuple[str, str]]]) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.configure(chains)
    return metrics, registry


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in registry.collect()
        for s in family.samples
    }


async def test_every_configured_series_exists_at_zero_from_startup(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a, a))
    g = sc.registry.get_sample_value
    for backend in ("b0", "b1"):
        labels = {"chain": "default", "backend": backend}
        for outcome in ("success", "failure", "skipped"):
            assert g("llm_sidecar_backend_attempts_total", {**labels, "outcome": outcome}) == 0
        for cls in FailureClass:
            assert g("llm_sidecar_backend_failures_total", {**labels, "class": cls.value}) == 0
        for t in ("prompt", "completion", "cache_read", "cache_write", "reasoning"):
            assert g("llm_sidecar_tokens_total", {**labels, "type": t}) == 0
        for outcome in ("success", "failure"):
            assert g("llm_sidecar_stream_recoveries_total", {**labels, "outcome": outcome}) == 0
        assert g("llm_sidecar_backend_attempt_duration_seconds_count", labels) == 0
        assert g("llm_sidecar_backend_first_token_seconds_count", labels) == 0
        assert g("llm_sidecar_backend_circuit_state", {"backend": backend}) == 0
    assert (
        g(
            "llm_sidecar_backend_info",
            {"chain": "default", "backend": "b1", "kind": "openai", "position": "1"},
        )
        == 1
    )
    assert g("llm_sidecar_fallback_exhausted_total", {"chain": "default"}) == 0
    assert g("llm_sidecar_inflight_requests", {}) == 0
    assert g("llm_sidecar_build_info", {"version": sc.app.status()["version"]}) == 1  # type: ignore[dict-item]


def test_a_backend_in_two_chains_has_series_in_each_and_one_circuit_gauge() -> None:
    _, registry = configured(
        {"default": [("a", "openai"), ("b", "azure")], "cheap": [("b", "azure")]}
    )
    g = registry.get_sample_value
    info = "llm_sidecar_backend_info"
    assert g(info, {"chain": "default", "backend": "b", "kind": "azure", "position": "1"}) == 1
    assert g(info, {"chain": "cheap", "backend": "b", "kind": "azure", "position": "0"}) == 1
    for chain in ("default", "cheap"):
        labels = {"chain": chain, "backend": "b", "outcome": "success"}
        assert g("llm_sidecar_backend_attempts_total", labels) == 0
        assert g("llm_sidecar_fallback_exhausted_total", {"chain": chain}) == 0
    circuits = [k for k in samples(registry) if k[0] == "llm_sidecar_backend_circuit_state"]
    assert sorted(dict(labels)["backend"] for _, labels in circuits) == ["a", "b"]


def test_histogram_buckets_exist_at_zero_and_request_series_only_once_answered() -> None:
    _, registry = configured({"default": [("a", "openai")]})
    names = {name for name, _ in samples(registry)}
    assert "llm_sidecar_backend_attempt_duration_seconds_bucket" in names
    assert "llm_sidecar_backend_first_token_seconds_bucket" in names
    # The route × status space is open: those series appear with the first answer.
    assert not names & {"llm_sidecar_requests_total", "llm_sidecar_client_disconnects_total"}
    g = registry.get_sample_value
    assert g("llm_sidecar_build_info", {"version": __version__}) == 1


def test_series_of_an_unconfigured_backend_do_not_exist() -> None:
    metrics, _ = configured({"default": [("a", "openai")]})
    with pytest.raises(KeyError):
        metrics.series("default", "z")


def test_request_children_are_made_once_and_labelled_with_the_status_as_text() -> None:
    metrics, registry = configured({"default": [("a", "openai")]})
    counter = metrics.request("chat_completions", "default", 503)
    assert metrics.request("chat_completions", "default", 503) is counter
    assert metrics.request("chat_completions", "default", 200) is not counter
    counter.inc()
    duration = metrics.request_duration("messages", "default")
    assert metrics.request_duration("messages", "default") is duration
    duration.observe(0.2)
    g = registry.get_sample_value
    labels = {"route": "chat_completions", "chain": "default", "status": "503"}
    assert g("llm_sidecar_requests_total", labels) == 1
    route = {"route": "messages", "chain": "default"}
    assert g("llm_sidecar_request_duration_seconds_count", route) == 1
    assert g("llm_sidecar_request_duration_seconds_bucket", {**route, "le": "0.25"}) == 1
    assert g("llm_sidecar_request_duration_seconds_bucket", {**route, "le": "0.1"}) == 0


def test_each_failure_class_has_its_own_ready_child() -> None:
    metrics, registry = configured({"default": [("a", "openai")]})
    metrics.series("default", "a").failures[FailureClass.RATE_LIMITED].inc()
    g = registry.get_sample_value
    labels = {"chain": "default", "backend": "a"}
    assert g("llm_sidecar_backend_failures_total", {**labels, "class": "rate_limited"}) == 1
    assert g("llm_sidecar_backend_failures_total", {**labels, "class": "overloaded"}) == 0


async def test_a_request_that_falls_back_moves_exactly_its_series(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    sc = await sidecar(chain_env(a, b))
    before = samples(sc.registry)
    r = await post(http, sc.url, chat())
    assert r.status == 200
    after = samples(sc.registry)
    moved = {
        (name, tuple(sorted(labels)))
        for (name, labels), value in after.items()
        if value != before.get((name, labels), 0.0) and not name.endswith("_bucket")
    }
    b0 = (("backend", "b0"), ("chain", "default"))
    b1 = (("backend", "b1"), ("chain", "default"))
    route = (("chain", "default"), ("route", "chat_completions"))
    assert moved == {
        ("llm_sidecar_backend_attempts_total", (*b0, ("outcome", "failure"))),
        (
            "llm_sidecar_backend_failures_total",
            (("backend", "b0"), ("chain", "default"), ("class", "overloaded")),
        ),
        ("llm_sidecar_backend_attempt_duration_seconds_count", b0),
        ("llm_sidecar_backend_attempt_duration_seconds_sum", b0),
        ("llm_sidecar_backend_attempts_total", (*b1, ("outcome", "success"))),
        ("llm_sidecar_backend_attempt_duration_seconds_count", b1),
        ("llm_sidecar_backend_attempt_duration_seconds_sum", b1),
        ("llm_sidecar_tokens_total", (*b1, ("type", "prompt"))),
        ("llm_sidecar_tokens_total", (*b1, ("type", "completion"))),
        (
            "llm_sidecar_requests_total",
            (("chain", "default"), ("route", "chat_completions"), ("status", "200")),
        ),
        ("llm_sidecar_request_duration_seconds_count", route),
        ("llm_sidecar_request_duration_seconds_sum", route),
    }


def _metrics() -> Metrics:
    m = Metrics(CollectorRegistry())
    m.configure({"default": [("b0", "openai")]})
    return m


def test_token_kinds_count_separately_and_zeros_add_nothing() -> None:
    m = _metrics()
    m.series("default", "b0").count_tokens(Usage(10, 4, cache_read=6, cache_write=2, reasoning=3))
    m.series("default", "b0").count_tokens(Usage())
    g = m.registry.get_sample_value
    labels = {"chain": "default", "backend": "b0"}
    got = {
        t: g("llm_sidecar_tokens_total", {**labels, "type": t})
        for t in ("prompt", "completion", "cache_read", "cache_write", "reasoning")
    }
    assert got == {"prompt": 10, "completion": 4, "cache_read": 6, "cache_write": 2, "reasoning": 3}


def test_credential_reloads_count_by_owner_and_outcome_from_zero() -> None:
    m = _metrics()
    reloaded = m.credential_reloaded("inbound")
    g = m.registry.get_sample_value
    name = "llm_sidecar_credential_reloads_total"
    assert g(name, {"backend": "inbound", "outcome": "success"}) == 0
    assert g(name, {"backend": "inbound", "outcome": "failure"}) == 0
    reloaded(True)
    reloaded(False)
    reloaded(False)
    assert g(name, {"backend": "inbound", "outcome": "success"}) == 1
    assert g(name, {"backend": "inbound", "outcome": "failure"}) == 2


def test_ratelimit_gauges_appear_only_once_reported() -> None:
    m = _metrics()
    reported = m.quota_reported("b0")
    g = m.registry.get_sample_value
    labels = {"backend": "b0", "resource": "requests"}
    assert g("llm_sidecar_backend_ratelimit_remaining", labels) is None
    reported(Quota(Resource.REQUESTS, 7, 100, 1.0))
    reported(Quota(Resource.TOKENS, 0, None, None))
    assert g("llm_sidecar_backend_ratelimit_remaining", labels) == 7
    assert g("llm_sidecar_backend_ratelimit_limit", labels) == 100
    tokens = {"backend": "b0", "resource": "tokens"}
    assert g("llm_sidecar_backend_ratelimit_remaining", tokens) == 0
    assert g("llm_sidecar_backend_ratelimit_limit", tokens) is None


def _exposed(registry: CollectorRegistry) -> list[str]:
    # `_created` series are off in the sidecar (disable_created_metrics), a process-wide switch.
    text = generate_latest(registry).decode() + openmetrics_latest(registry).decode()  # type: ignore[no-untyped-call]
    return [line for line in text.splitlines() if "_created" not in line]


def test_loop_instruments_expose_exactly_what_prometheus_clients_own_classes_do() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    bounds = (0.005, 0.01, 1, 2.5, 600)
    their_count = Counter("x_events", "Events.", ["a", "b"], registry=theirs)
    our_count = LoopCounter("x_events", "Events.", ["a", "b"], registry=ours)
    their_hist = Histogram("x_seconds", "Time.", ["a"], buckets=bounds, registry=theirs)
    our_hist = LoopHistogram("x_seconds", "Time.", ["a"], buckets=bounds, registry=ours)
    for labels, amount in ((("1", "2"), 1), (("1", "2"), 2.5), (("3", "4"), 0), (("5", "6"), 7)):
        their_count.labels(*labels).inc(amount)
        our_count.labels(*labels).inc(amount)
    # Each bound itself (buckets are `le`), just above it, zero, and beyond the last one.
    for amount in (0, 0.005, 0.0051, 0.01, 1, 1.5, 2.5, 600, 600.1, 10_000):
        their_hist.labels("q").observe(amount)
        our_hist.labels("q").observe(amount)
    their_hist.labels("untouched")
    our_hist.labels("untouched")
    assert _exposed(ours) == _exposed(theirs)


def test_loop_instruments_refuse_what_prometheus_client_refuses() -> None:
    counter = LoopCounter("y_events", "Events.", ["a"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="only go up"):
        counter.labels("1").inc(-1)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("1", "2")
    registry = CollectorRegistry()
    LoopCounter("z_events", "Events.", [], registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        LoopCounter("z_events", "Events.", [], registry=registry)
