"""The only code that reads the environment. Invalid configuration fails here, naming the env var.

`read_config(environ)` returns a `Config`: the global `SIDECAR_*` settings, the chains in order,
and one `BackendSettings` per backend, loaded from that backend's own env prefix. It knows no
backend kind: `sidecar.config.load_config` adds each kind's own rules (`sidecar.backends`).
"""

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sidecar.failure import DEFAULT_FALLBACK_ON, FailureClass

S = TypeVar("S", bound=BaseSettings)
Seconds = Annotated[float, Field(gt=0)]
NonNegativeSeconds = Annotated[float, Field(ge=0)]

_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})
_METADATA_NETS = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::254/128"))


class ConfigError(Exception):
    def __init__(self, env_var: str, reason: str) -> None:
        super().__init__(f"{env_var}: {reason}")
        self.env_var = env_var
        self.reason = reason


class GlobalSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIDECAR_", hide_input_in_errors=True, extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8700, ge=0, le=65535)
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(8701, ge=0, le=65535)
    backends: str | None = None
    config: Path | None = None
    fallback_on: str = ",".join(sorted(DEFAULT_FALLBACK_ON))
    request_timeout_s: Seconds = 600
    max_body_bytes: int = Field(33_554_432, gt=0)
    body_timeout_s: Seconds = 30
    idle_timeout_s: Seconds = 30
    max_inflight: int = Field(1024, gt=0)
    auth_token: SecretStr | None = None
    circuit_failures: int = Field(5, gt=0)
    circuit_cooldown_s: Seconds = 10
    circuit_max_cooldown_s: Seconds = 30
    retry_after_max_s: Seconds = 300
    retry_after_wait_max_s: NonNegativeSeconds = 5
    shutdown_delay_s: NonNegativeSeconds = 0
    shutdown_grace_s: Seconds = 25
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("fallback_on")
    @classmethod
    def _classes(cls, v: str) -> str:
        unknown = [c for c in _split(v) if c not in FailureClass.__members__.values()]
        if unknown:
            raise ValueError(f"unknown failure class {unknown[0]!r}")
        return v

    @property
    def fallback_classes(self) -> frozenset[FailureClass]:
        return frozenset(FailureClass(c) for c in _split(self.fallback_on))


class BackendSettings(BaseSettings):
    model_config = SettingsConfigDict(hide_input_in_errors=True, extra="ignore", frozen=True)

    kind: str = "openai"
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    model_map: str | None = None
    connect_timeout_s: Seconds = 5
    first_token_timeout_s: Seconds = 60
    response_timeout_s: Seconds = 600
    stream_idle_timeout_s: Seconds = 120
    retries: int = Field(0, ge=0)
    retry_backoff_s: Seconds = 0.5
    prefill: bool = False
    max_connections: int = Field(100, gt=0)
    headers: str | None = None
    deployment: str | None = None
    api_version: str | None = None
    anthropic_version: str = "2023-06-01"
    region: str | None = None
    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_profile: str | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


@dataclass(frozen=True, slots=True)
class Backend:
    """One configured backend: a name, its env prefix and the settings read from that prefix."""

    name: str
    prefix: str
    settings: BackendSettings
    model_map: Mapping[str, str]
    headers: Mapping[str, str]
    # The kind's own, when BASE_URL is not set (filled in by `sidecar.config`).
    default_base_url: str = ""

    @property
    def base_url(self) -> str:
        return self.settings.base_url or self.default_base_url


@dataclass(frozen=True, slots=True)
class Config:
    settings: GlobalSettings
    chains: Mapping[str, tuple[Backend, ...]]
    backends: Mapping[str, Backend] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def secrets(self) -> list[str]:
        found = [self.settings.auth_token] if self.settings.auth_token else []
        for b in self.backends.values():
            s = b.settings
            found += [x for x in (s.api_key, s.aws_secret_access_key, s.aws_session_token) if x]
        # Static headers often carry a gateway's key: treat every value as one.
        values = [v for b in self.backends.values() for v in b.headers.values()]
        return [x.get_secret_value() for x in found if x.get_secret_value()] + values


def default_prefix(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"


# A backend's kind rules, given by the caller of `read_config`: checks, defaults (see the module's
# docstring). It returns the backend as it is to be used.
KindRules = Callable[["Backend", Mapping[str, str]], "Backend"]


def read_config(environ: Mapping[str, str] | None = None, kinds: KindRules | None = None) -> Config:
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    settings = _load(GlobalSettings, "SIDECAR_", env)
    if settings.circuit_max_cooldown_s < settings.circuit_cooldown_s:
        raise ConfigError(
            "SIDECAR_CIRCUIT_MAX_COOLDOWN_S", "must be at least SIDECAR_CIRCUIT_COOLDOWN_S"
        )
    specs = _chain_specs(settings, env)
    backends: dict[str, Backend] = {}
    chains: dict[str, tuple[Backend, ...]] = {}
    for chain, items in specs.items():
        var = "SIDECAR_BACKENDS" if chain == "default" and settings.backends else "SIDECAR_CONFIG"
        chains[chain] = tuple(
            _backend(var, name, prefix, backends, env, kinds) for name, prefix in items
        )
    return Config(
        settings=settings, chains=chains, backends=backends, warnings=_unknown(env, backends)
    )


def _unknown(env: Mapping[str, str], backends: Mapping[str, Backend]) -> list[str]:
    """Variables that carry a backend's prefix but name no setting: most likely typos."""
    known = {f.upper() for f in BackendSettings.model_fields}
    prefixes = {b.prefix.upper() for b in backends.values()}
    return sorted(
        f"{var}: not a setting of backend prefix {prefix} (a typo?)"
        for var in env
        for prefix in prefixes
        if var.startswith(prefix)
        and var[len(prefix) :] not in known
        and not any(var.startswith(p) and len(p) > len(prefix) for p in prefixes)
    )


def _chain_specs(
    settings: GlobalSettings, env: Mapping[str, str]
) -> dict[str, list[tuple[str, str]]]:
    specs: dict[str, list[tuple[str, str]]] = {}
    if settings.config is not None:
        specs = _yaml_chains(settings.config)
    if settings.backends is not None:
        if "default" in specs:
            raise ConfigError(
                "SIDECAR_BACKENDS", "chain 'default' is also defined in SIDECAR_CONFIG"
            )
        specs = {"default": _backends_list(settings.backends), **specs}
    if not specs:
        raise ConfigError(
            "SIDECAR_BACKENDS",
            "no chain configured: set SIDECAR_BACKENDS=name,... "
            "or SIDECAR_CONFIG=/path/chains.yaml",
        )
    return specs


def _backends_list(value: str) -> list[tuple[str, str]]:
    items = []
    for item in _split(value):
        name, sep, prefix = item.partition("=")
        name = name.strip()
        if not name or (sep and not prefix.strip()):
            raise ConfigError("SIDECAR_BACKENDS", f"malformed item {item!r}")
        items.append((name, prefix.strip() if sep else default_prefix(name)))
    if not items:
        raise ConfigError("SIDECAR_BACKENDS", "the default chain is empty")
    return items


def _yaml_chains(path: Path) -> dict[str, list[tuple[str, str]]]:
    import yaml  # only when a chains file is configured

    var = "SIDECAR_CONFIG"
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(var, f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(var, f"{path} is not valid YAML: {e}") from None
    chains = doc.get("fallback_chains") if isinstance(doc, dict) else None
    if not isinstance(chains, dict):
        raise ConfigError(var, f"{path} has no 'fallback_chains' mapping")
    specs: dict[str, list[tuple[str, str]]] = {}
    for chain, items in chains.items():
        if not isinstance(items, list) or not items:
            raise ConfigError(var, f"chain {chain!r} is empty")
        specs[str(chain)] = [_yaml_item(str(chain), i) for i in items]
    return specs


def _yaml_item(chain: str, item: Any) -> tuple[str, str]:
    if isinstance(item, str):
        return item, default_prefix(item)
    if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]:
        prefix = item.get("env_prefix") or default_prefix(item["name"])
        return item["name"], str(prefix)
    raise ConfigError("SIDECAR_CONFIG", f"chain {chain!r}: each item needs a 'name'")


def _backend(
    var: str,
    name: str,
    prefix: str,
    known: dict[str, Backend],
    env: Mapping[str, str],
    kinds: KindRules | None,
) -> Backend:
    """`var` is the chain setting that named the backend: the one to fix if it conflicts."""
    if name in known:
        if known[name].prefix != prefix:
            raise ConfigError(
                var,
                f"backend {name!r} is defined with two env prefixes "
                f"({known[name].prefix} and {prefix})",
            )
        return known[name]
    s = _load(BackendSettings, prefix, env)
    backend = Backend(
        name=name,
        prefix=prefix,
        settings=s,
        model_map=_model_map(prefix, s.model_map),
        headers=_headers(prefix, s.headers),
    )
    _check_backend(backend)
    if kinds is not None:
        backend = kinds(backend, env)
    known[name] = backend
    return backend


def _check_backend(b: Backend) -> None:
    s, p = b.settings, b.prefix
    if s.base_url is not None:
        _check_url(f"{p}BASE_URL", s.base_url)
    if s.endpoint_url is not None:
        _check_url(f"{p}ENDPOINT_URL", s.endpoint_url)


def _check_url(var: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ConfigError(var, "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(var, "must be an http:// or https:// URL with a host")
    if host.lower().rstrip(".") in _METADATA_HOSTS or _is_metadata_ip(host):
        raise ConfigError(var, "points at a cloud metadata address")
    if "?" in url or "#" in url:
        # The operation path is appended to the URL; a query would also be printed by `check`.
        raise ConfigError(
            var, "must not carry a query string or fragment (credentials go in API_KEY or HEADERS)"
        )


def _is_metadata_ip(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in _METADATA_NETS)


def _model_map(prefix: str, value: str | None) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in _split(value or ""):
        requested, sep, sent = item.partition("=")
        if not sep or not requested.strip() or not sent.strip():
            raise ConfigError(f"{prefix}MODEL_MAP", f"expected requested=sent, got {item!r}")
        mapping[requested.strip()] = sent.strip()
    return mapping


def _headers(prefix: str, value: str | None) -> dict[str, str]:
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise ConfigError(
            f"{prefix}HEADERS", 'expected a JSON object of strings ({"name": "value"})'
        )
    credentials = sorted(k for k in parsed if k.lower() in _CREDENTIAL_HEADERS)
    if credentials:
        # Exactly one credential per upstream request, and it comes from API_KEY (README "Kinds").
        raise ConfigError(f"{prefix}HEADERS", f"may not set {credentials[0]}: use {prefix}API_KEY")
    return parsed


def _load(cls: type[S], prefix: str, env: Mapping[str, str]) -> S:
    # Values come from the given mapping only (os.environ by default), so tests and the demo
    # never pick up stray variables; names match case-insensitively, as pydantic-settings does.
    values = {
        name: env[key] for name in cls.model_fields if (key := prefix.upper() + name.upper()) in env
    }
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = str(err["loc"][0]) if err["loc"] else ""
        raise ConfigError(prefix + loc.upper(), err["msg"]) from None


def _split(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]
