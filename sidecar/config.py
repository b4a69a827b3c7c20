"""`load_config(environ)`: the settings (`sidecar.settings`), checked by each backend's kind.

Settings know no kind; a kind's module (`sidecar.backends.<kind>.SPEC`) has its own rules and
default base URL. An unknown `{PREFIX}KIND` fails here, naming the env var.
"""

import importlib.util
from collections.abc import Mapping
from dataclasses import replace

from sidecar.backends import KINDS, spec_of
from sidecar.backends.base import KindSpec
from sidecar.settings import Backend, Config, ConfigError, read_config


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    config = read_config(environ, _by_kind)
    if config.tracing is not None:
        _require_otel()
    return config


def _require_otel() -> None:
    # Found, not imported: the SDK loads when the app is built (`sidecar.app.build_tracing`).
    missing = [m for m in _OTEL_MODULES if not _importable(m)]
    if missing:
        raise ConfigError(
            "OTEL_TRACES_EXPORTER",
            f"tracing needs the otel extra: pip install 'llm-sidecar[otel]' ({missing[0]} is "
            "missing)",
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a module is blocked
        return False


_OTEL_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")


def spec(backend: Backend) -> KindSpec:
    kind = backend.settings.kind
    if kind not in KINDS:
        raise ConfigError(
            f"{backend.prefix}KIND", f"unknown kind {kind!r} (one of {', '.join(KINDS)})"
        )
    found: KindSpec = spec_of(kind)
    return found


def _by_kind(backend: Backend, env: Mapping[str, str]) -> Backend:
    s = spec(backend)
    if "responses" in backend.settings.model_fields_set and not s.native_responses:
        raise ConfigError(
            f"{backend.prefix}RESPONSES",
            f"only for kinds with a native Responses API (openai, azure), not "
            f"{backend.settings.kind}: it always translates",
        )
    default = s.default_base_url
    backend = replace(backend, default_base_url=default(backend) if callable(default) else default)
    s.check(backend, env)
    return backend
