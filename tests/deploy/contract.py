# The README's metrics reference: metric name -> (type, labels). Dashboards and rules may use
# nothing else.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "llm_sidecar_requests_total": ("counter", frozenset({"route", "chain", "status"})),
    "llm_sidecar_request_duration_seconds": ("histogram", frozenset({"route", "chain"})),
    "llm_sidecar_backend_attempts_total": ("counter", frozenset({"chain", "backend", "outcome"})),
    "llm_sidecar_backend_failures_total": ("counter", frozenset({"chain", "backend", "class"})),
    "llm_sidecar_fallback_exhausted_total": ("counter", frozenset({"chain"})),
    "llm_sidecar_backend_attempt_duration_seconds": (
        "histogram",
        frozenset({"chain", "backend"}),
    ),
    "llm_sidecar_backend_first_token_seconds": ("histogram", frozenset({"chain", "backend"})),
    "llm_sidecar_tokens_total": ("counter", frozenset({"chain", "backend", "type"})),
    "llm_sidecar_stream_recoveries_total": (
        "counter",
        frozenset({"chain", "backend", "outcome"}),
    ),
    "llm_sidecar_client_disconnects_total": ("counter", frozenset({"route"})),
    "llm_sidecar_inflight_requests": ("gauge", frozenset()),
    "llm_sidecar_backend_circuit_state": ("gauge", frozenset({"backend"})),
    "llm_sidecar_backend_info": ("gauge", frozenset({"chain", "backend", "kind", "position"})),
    "llm_sidecar_build_info": ("gauge", frozenset({"version"})),
    # §12.4
    "llm_sidecar_backend_ratelimit_remaining": ("gauge", frozenset({"backend", "resource"})),
    "llm_sidecar_credential_reloads_total": ("counter", frozenset({"backend", "outcome"})),
    # Not named in §12.4, but a headroom ratio needs the window's size beside what remains.
    "llm_sidecar_backend_ratelimit_limit": ("gauge", frozenset({"backend", "resource"})),
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def series_names() -> set[str]:
    names: set[str] = set()
    for name, (kind, _) in METRICS.items():
        names.add(name)
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names
