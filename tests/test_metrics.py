from prometheus_client import CollectorRegistry

from sidecar.call import Usage
from sidecar.metrics import Metrics
from sidecar.ratelimit import Quota, Resource


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
