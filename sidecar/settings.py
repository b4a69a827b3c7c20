"""The only code that reads the environment. Invalid configuration fails here, naming the env var.

`read_config(environ)` returns a `Config`: the global `SIDECAR_*` settings, the chains in order,
and one `BackendSettings` per backend, loaded from that backend's own env prefix. It knows no
backend kind: `sidecar.config.load_config` adds each kind's own rules (`sidecar.backends`).
"""

import difflib
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sidecar.credentials import FileCredential, UnusableSecret
from sidecar.failure import DEFAULT_FALLBACK_ON, FailureClass
from sidecar.tracing import TracingConfigError, TracingSettings, tracing_settings

S = TypeVar("S", bound=BaseSettings)
# `inf`, `nan` and `1e309` parse as floats: none is a duration (and JSON has no word for them).
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]

_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "api-key", "x-api-key", "x-goog-api-key", "proxy-authorization"}
)
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})
_METADATA_NETS = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fd00:ec2::254/128"))


Problem = tuple[str, str]  # (env var, reason)


class ConfigError(Exception):
    """Every problem found, so that one run names them all; `env_var`/`reason` are the first."""

    def __init__(self, env_var: str, reason: str, *more: Problem) -> None:
        self.problems: list[Problem] = [(env_var, reason), *more]
        super().__init__("; ".join(f"{var}: {why}" for var, why in self.problems))
        self.env_var = env_var
        self.reason = reason

    def report(self) -> None:
        """One line per problem on stderr: a run names every one, so one edit can fix them all."""
        for var, why in self.problems:
            print(f"llm-sidecar: invalid configuration: {var}: {why}", file=sys.stderr)


class _FromMapping(BaseSettings):
    """Settings read from the mapping `load_config` is given, and nothing else: pydantic-settings
    would otherwise fill every field left out from os.environ (a stray `MODEL` or `API_KEY` in
    the process environment would become every backend's, and the demo would inherit a shell's
    `SIDECAR_AUTH_TOKEN`)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class GlobalSettings(_FromMapping):
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
    auth_token_file: Path | None = None
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


class BackendSettings(_FromMapping):
    model_config = SettingsConfigDict(hide_input_in_errors=True, extra="ignore", frozen=True)

    kind: str = "openai"
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    model: str | None = None
    model_map: str | None = None
    connect_timeout_s: Seconds = 5
    first_token_timeout_s: Seconds = 60
    response_timeout_s: Seconds = 600
    stream_idle_timeout_s: Seconds = 120
    retries: int = Field(0, ge=0)
    retry_backoff_s: Seconds = 0.5
    prefill: bool = False
    # openai/azure: serve `/v1/responses` natively, or translated to chat completions.
    responses: Literal["native", "chat"] = "native"
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
    project: str | None = None
    api: Literal["converse", "invoke"] = "converse"
    credentials_file: Path | None = None

    @field_validator("kind", "responses", mode="before")
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
    # API_KEY_FILE, read at start and watched (`sidecar.credentials`).
    key_file: FileCredential | None = None

    @property
    def base_url(self) -> str:
        return self.settings.base_url or self.default_base_url

    def api_key(self) -> str | None:
        """The key to send now: API_KEY_FILE's current value, else API_KEY."""
        if self.key_file is not None:
            return self.key_file.value
        key = self.settings.api_key
        return key.get_secret_value() if key else None


@dataclass(frozen=True, slots=True)
class Config:
    settings: GlobalSettings
    chains: Mapping[str, tuple[Backend, ...]]
    backends: Mapping[str, Backend] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # SIDECAR_AUTH_TOKEN_FILE, read at start and watched.
    auth_token_file: FileCredential | None = None
    # None: tracing is off (no OTEL_* exporter configured).
    tracing: TracingSettings | None = None

    def auth_token(self) -> str | None:
        """The inbound token now: SIDECAR_AUTH_TOKEN_FILE's current value, else the variable."""
        if self.auth_token_file is not None:
            return self.auth_token_file.value
        token = self.settings.auth_token
        return token.get_secret_value() if token else None

    def credential_files(self) -> list[FileCredential]:
        found = [self.auth_token_file] if self.auth_token_file is not None else []
        return found + [b.key_file for b in self.backends.values() if b.key_file is not None]

    def secrets(self) -> list[str]:
        found = [self.settings.auth_token] if self.settings.auth_token else []
        for b in self.backends.values():
            s = b.settings
            found += [x for x in (s.api_key, s.aws_secret_access_key, s.aws_session_token) if x]
        # Static headers often carry a gateway's key: treat every value as one.
        values = [v for b in self.backends.values() for v in b.headers.values()]
        values += [f.value for f in self.credential_files()]
        values += self.tracing.secrets() if self.tracing is not None else []
        return [x.get_secret_value() for x in found if x.get_secret_value()] + values


def default_prefix(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"


# A backend's kind rules, given by the caller of `read_config`: checks, defaults (see the module's
# docstring). It returns the backend as it is to be used.
KindRules = Callable[["Backend", Mapping[str, str]], "Backend"]


def read_config(environ: Mapping[str, str] | None = None, kinds: KindRules | None = None) -> Config:
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    problems: list[Problem] = []
    settings = _load(GlobalSettings, "SIDECAR_", env, problems)
    problems += _check_global(settings)
    token_file = _credential_file(
        "SIDECAR_AUTH_TOKEN", settings.auth_token, settings.auth_token_file, "inbound", problems
    )
    tracing = _tracing(env, problems)
    try:
        specs = _chain_specs(settings, env)
    except ConfigError as e:
        raise ConfigError(*[*problems, *e.problems][0], *[*problems, *e.problems][1:]) from None
    backends: dict[str, Backend] = {}
    chains: dict[str, tuple[Backend, ...]] = {}
    for chain, items in specs.items():
        var = "SIDECAR_BACKENDS" if chain == "default" and settings.backends else "SIDECAR_CONFIG"
        problems += _duplicates(var, chain, items)
        members = []
        for name, prefix in items:
            try:
                members.append(_backend(var, name, prefix, backends, env, kinds, problems))
            except ConfigError as e:
                problems += e.problems
        chains[chain] = tuple(members)
    if problems:
        raise ConfigError(*problems[0], *problems[1:])
    return Config(
        settings=settings,
        chains=chains,
        backends=backends,
        warnings=_unknown(env, backends),
        auth_token_file=token_file,
        tracing=tracing,
    )


def _credential_file(
    var: str, value: SecretStr | None, path: Path | None, owner: str, problems: list[Problem]
) -> FileCredential | None:
    """`{var}_FILE` read now; a bad file fails startup naming the variable, never the content."""
    if path is None:
        return None
    if value is not None:
        problems.append((f"{var}_FILE", f"set either {var} or {var}_FILE, not both"))
        return None
    try:
        return FileCredential(path, owner)
    except UnusableSecret as e:
        problems.append((f"{var}_FILE", str(e)))
        return None


def _tracing(env: Mapping[str, str], problems: list[Problem]) -> TracingSettings | None:
    try:
        return tracing_settings(env)
    except TracingConfigError as e:
        problems.append((e.env_var, e.reason))
        return None


def _check_global(s: GlobalSettings) -> list[Problem]:
    found = []
    if s.circuit_max_cooldown_s < s.circuit_cooldown_s:
        found.append(
            ("SIDECAR_CIRCUIT_MAX_COOLDOWN_S", "must be at least SIDECAR_CIRCUIT_COOLDOWN_S")
        )
    if s.port and s.port == s.admin_port:
        # Caught here, it is a config error (exit 2), not "address already in use" at bind time.
        found.append(("SIDECAR_ADMIN_PORT", f"must differ from SIDECAR_PORT (both are {s.port})"))
    return found


def _duplicates(var: str, chain: str, items: list[tuple[str, str]]) -> list[Problem]:
    # The same name with two prefixes is `_backend`'s error, with its own message.
    twice = sorted({name for name, prefix in items if items.count((name, prefix)) > 1})
    return [(var, f"chain {chain!r} lists backend {n!r} more than once") for n in twice]


def _unknown(env: Mapping[str, str], backends: Mapping[str, Backend]) -> list[str]:
    """Variables that carry the global prefix or a backend's but name no setting: most likely
    typos (`SIDECAR_REQUEST_TIMEOUT`, `PRIMARY_APIKEY`)."""
    known = {f.upper() for f in BackendSettings.model_fields}
    prefixes = {b.prefix.upper() for b in backends.values()}
    found = [
        f"{var}: not a setting of backend prefix {prefix} (a typo?)"
        for var in env
        for prefix in prefixes
        if var.startswith(prefix)
        and var[len(prefix) :] not in known
        and not any(var.startswith(p) and len(p) > len(prefix) for p in prefixes)
    ]
    settings = [f"SIDECAR_{f.upper()}" for f in GlobalSettings.model_fields]
    for var in env:
        if var.startswith("SIDECAR_") and var not in settings and "SIDECAR_" not in prefixes:
            close = difflib.get_close_matches(var, settings, n=1)
            hint = f" (did you mean {close[0]}?)" if close else " (a typo?)"
            found.append(f"{var}: not a SIDECAR_ setting{hint}")
    return sorted(found)


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
        specs[str(chain)] = [_yaml_item(path, str(chain), i) for i in items]
    return specs


_ITEM_KEYS = ("name", "env_prefix")


def _yaml_item(path: Path, chain: str, item: Any) -> tuple[str, str]:
    if isinstance(item, str):
        return item, default_prefix(item)
    unknown = sorted(str(k) for k in item if k not in _ITEM_KEYS) if isinstance(item, dict) else []
    if unknown:
        raise ConfigError(
            "SIDECAR_CONFIG",
            f"{path}: chain {chain!r}: unknown key {unknown[0]!r} (each item has "
            + " and ".join(_ITEM_KEYS)
            + ")",
        )
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
    problems: list[Problem],
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
    s = _load(BackendSettings, prefix, env, problems)
    model_map: dict[str, str] = {}
    headers: dict[str, str] = {}
    try:
        model_map = _model_map(prefix, s.model_map)
    except ConfigError as e:
        problems += e.problems
    try:
        headers = _headers(prefix, s.headers)
    except ConfigError as e:
        problems += e.problems
    key_file = _credential_file(f"{prefix}API_KEY", s.api_key, s.api_key_file, name, problems)
    backend = Backend(
        name=name,
        prefix=prefix,
        settings=s,
        model_map=model_map,
        headers=headers,
        key_file=key_file,
    )
    problems += _check_backend(backend)
    if kinds is not None:
        try:
            backend = kinds(backend, env)
        except ConfigError as e:
            problems += e.problems
    known[name] = backend
    return backend


def _check_backend(b: Backend) -> list[Problem]:
    s, p = b.settings, b.prefix
    found: list[Problem] = []
    for var, url in ((f"{p}BASE_URL", s.base_url), (f"{p}ENDPOINT_URL", s.endpoint_url)):
        try:
            if url is not None:
                _check_url(var, url)
        except ConfigError as e:
            found += e.problems
    return found


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


def _load(cls: type[S], prefix: str, env: Mapping[str, str], problems: list[Problem]) -> S:
    """Every invalid field goes to `problems`; the object is built with their defaults, so that
    the checks after it still run and report theirs in the same pass."""
    # Values come from the given mapping only (os.environ by default), so tests and the demo
    # never pick up stray variables; names match case-insensitively, as pydantic-settings does.
    values = {
        name: env[key] for name in cls.model_fields if (key := prefix.upper() + name.upper()) in env
    }
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        bad = {str(err["loc"][0]) if err["loc"] else "": err["msg"] for err in e.errors()}
    problems += [(prefix + loc.upper(), msg) for loc, msg in bad.items()]
    return cls.model_validate({k: v for k, v in values.items() if k not in bad})


def _split(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]
