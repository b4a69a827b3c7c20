"""`load_config(environ)`: the settings (`sidecar.settings`), checked by each backend's kind.

Settings know no kind; a kind's module (`sidecar.backends.<kind>.SPEC`) has its own rules and
default base URL. An unknown `{PREFIX}KIND` fails here, naming the env var.
"""

from collections.abc import Mapping
from dataclasses import replace

from sidecar.backends import KINDS, spec_of
from sidecar.backends.base import KindSpec
from sidecar.settings import Backend, Config, ConfigError, read_config


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    return read_config(environ, _by_kind)


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
    backend = replace(backend, default_base_url=s.default_base_url)
    s.check(backend, env)
    return backend
