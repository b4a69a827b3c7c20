"""Settings (`sidecar.settings`): chains from env and YAML, per-backend prefixes, errors naming
the env var. Each kind's own rules are `sidecar.config`'s (tests/test_config.py)."""

import pathlib

import pytest

from sidecar.config import load_config
from sidecar.settings import ConfigError, default_prefix


@pytest.mark.parametrize(
    ("name", "prefix"), [("primary", "PRIMARY_"), ("azure-eu", "AZURE_EU_"), ("a.b c", "A_B_C_")]
)
def test_default_prefix_upper_cases_and_replaces_non_alphanumerics(name: str, prefix: str) -> None:
    assert default_prefix(name) == prefix


def test_backends_list_builds_the_default_chain_in_order_with_explicit_prefixes() -> None:
    config = load_config(
        {
            "SIDECAR_BACKENDS": "primary, secondary=OPENAI_FALLBACK_",
            "PRIMARY_API_KEY": "k1",
            "OPENAI_FALLBACK_API_KEY": "k2",
            "OPENAI_FALLBACK_MODEL": "gpt-4o-mini",
        }
    )
    chain = config.chains["default"]
    assert [b.name for b in chain] == ["primary", "secondary"]
    assert chain[1].prefix == "OPENAI_FALLBACK_"
    assert chain[1].settings.model == "gpt-4o-mini"


def test_yaml_chains_share_backends_with_the_same_prefix(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "chains.yaml"
    path.write_text(
        "fallback_chains:\n"
        "  default:\n"
        "    - {name: azure, env_prefix: AZURE_FALLBACK_}\n"
        "    - {name: openai, env_prefix: OPENAI_FALLBACK_}\n"
        "  gpt-4o:\n"
        "    - {name: openai, env_prefix: OPENAI_FALLBACK_}\n"
    )
    config = load_config(
        {
            "SIDECAR_CONFIG": str(path),
            "AZURE_FALLBACK_KIND": "azure",
            "AZURE_FALLBACK_BASE_URL": "https://r.openai.azure.com",
            "AZURE_FALLBACK_API_KEY": "a",
            "OPENAI_FALLBACK_API_KEY": "o",
        }
    )
    assert list(config.chains) == ["default", "gpt-4o"]
    assert config.chains["gpt-4o"][0] is config.chains["default"][1]
    assert set(config.backends) == {"azure", "openai"}


def test_per_backend_settings_are_typed_with_contract_defaults() -> None:
    s = load_config({"SIDECAR_BACKENDS": "p", "P_API_KEY": "k"}).chains["default"][0].settings
    assert (s.kind, s.connect_timeout_s, s.first_token_timeout_s) == ("openai", 5, 60)
    assert (s.response_timeout_s, s.stream_idle_timeout_s, s.retries) == (600, 120, 0)
    assert (s.retry_backoff_s, s.prefill, s.max_connections) == (0.5, False, 100)
    assert s.anthropic_version == "2023-06-01"


def test_circuit_defaults_probe_a_recovered_backend_within_30_s() -> None:
    s = load_config({"SIDECAR_BACKENDS": "p", "P_API_KEY": "k"}).settings
    assert (s.circuit_failures, s.circuit_cooldown_s, s.circuit_max_cooldown_s) == (5, 10, 30)
    assert s.retry_after_max_s == 300


def _error(env: dict[str, str], tmp_path: pathlib.Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config(env)
    return e.value


BASE = {"SIDECAR_BACKENDS": "p", "P_API_KEY": "k"}


@pytest.mark.parametrize(
    ("env", "var", "reason"),
    [
        ({}, "SIDECAR_BACKENDS", "SIDECAR_CONFIG"),
        ({"SIDECAR_BACKENDS": " , "}, "SIDECAR_BACKENDS", "empty"),
        ({**BASE, "SIDECAR_PORT": "http"}, "SIDECAR_PORT", "integer"),
        ({**BASE, "SIDECAR_REQUEST_TIMEOUT_S": "0"}, "SIDECAR_REQUEST_TIMEOUT_S", "greater than 0"),
        ({**BASE, "SIDECAR_CIRCUIT_COOLDOWN_S": "-1"}, "SIDECAR_CIRCUIT_COOLDOWN_S", "greater"),
        ({**BASE, "SIDECAR_FALLBACK_ON": "timeout,bogus"}, "SIDECAR_FALLBACK_ON", "bogus"),
        ({**BASE, "SIDECAR_LOG_FORMAT": "xml"}, "SIDECAR_LOG_FORMAT", "json"),
        ({**BASE, "P_RETRIES": "-1"}, "P_RETRIES", "greater than or equal to 0"),
        ({**BASE, "P_RETRIES": "1.5"}, "P_RETRIES", "integer"),
        ({**BASE, "P_CONNECT_TIMEOUT_S": "0"}, "P_CONNECT_TIMEOUT_S", "greater than 0"),
        ({**BASE, "P_BASE_URL": "ftp://x"}, "P_BASE_URL", "http"),
        ({**BASE, "P_BASE_URL": "http://169.254.169.254/v1"}, "P_BASE_URL", "metadata"),
        ({**BASE, "P_BASE_URL": "http://[fd00:ec2::254]/"}, "P_BASE_URL", "metadata"),
        ({**BASE, "P_BASE_URL": "http://metadata.google.internal/"}, "P_BASE_URL", "metadata"),
        ({**BASE, "P_BASE_URL": "https://llm.internal/v1?key=abc"}, "P_BASE_URL", "query"),
        ({**BASE, "P_BASE_URL": "https://llm.internal/v1#x"}, "P_BASE_URL", "fragment"),
        ({**BASE, "P_BASE_URL": "https://llm.internal/v1?\n"}, "P_BASE_URL", "query"),
        ({**BASE, "P_MODEL_MAP": "a=b,c"}, "P_MODEL_MAP", "requested=sent"),
        ({**BASE, "P_HEADERS": "[1]"}, "P_HEADERS", "JSON object"),
        ({**BASE, "P_HEADERS": '{"Authorization": "Bearer x"}'}, "P_HEADERS", "P_API_KEY"),
        ({**BASE, "P_HEADERS": '{"X-Goog-Api-Key": "AIza"}'}, "P_HEADERS", "P_API_KEY"),
        (
            {**BASE, "SIDECAR_CIRCUIT_COOLDOWN_S": "60", "SIDECAR_CIRCUIT_MAX_COOLDOWN_S": "30"},
            "SIDECAR_CIRCUIT_MAX_COOLDOWN_S",
            "at least",
        ),
        (
            {"SIDECAR_BACKENDS": "p,p=OTHER_", "P_API_KEY": "k", "OTHER_API_KEY": "k"},
            "SIDECAR_BACKENDS",
            "two env prefixes (P_ and OTHER_)",
        ),
        (
            {"SIDECAR_BACKENDS": "p", "SIDECAR_CONFIG": "/nonexistent.yaml"},
            "SIDECAR_CONFIG",
            "cannot read",
        ),
    ],
)
def test_invalid_config_names_the_env_var(env: dict[str, str], var: str, reason: str) -> None:
    e = _error(env)
    assert e.env_var == var
    assert reason in e.reason


def test_a_backend_given_two_prefixes_in_the_chains_file_names_sidecar_config(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("fallback_chains:\n  fast: [p, {name: p, env_prefix: OTHER_}]\n")
    e = _error({"SIDECAR_CONFIG": str(path), "P_API_KEY": "k", "OTHER_API_KEY": "k"})
    assert e.env_var == "SIDECAR_CONFIG"
    assert "two env prefixes (P_ and OTHER_)" in e.reason


def test_default_chain_in_both_places_is_an_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("fallback_chains:\n  default: [p]\n")
    e = _error({**BASE, "SIDECAR_CONFIG": str(path)})
    assert e.env_var == "SIDECAR_BACKENDS"
    assert "SIDECAR_CONFIG" in e.reason


@pytest.mark.parametrize(
    "text",
    [
        "fallback_chains:\n  default: []\n",
        "fallback_chains: [1]\n",
        "a: [\n",
        "fallback_chains:\n  x: [{}]\n",
    ],
)
def test_bad_yaml_is_an_error_naming_sidecar_config(tmp_path: pathlib.Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert _error({"SIDECAR_CONFIG": str(path)}).env_var == "SIDECAR_CONFIG"


def test_validation_errors_never_echo_the_value() -> None:
    e = _error({**BASE, "P_MAX_CONNECTIONS": "sk-secret-value-123"})
    assert "sk-secret-value-123" not in str(e)


def test_zero_is_allowed_for_shutdown_delay_and_retry_after_wait() -> None:
    s = load_config(
        {**BASE, "SIDECAR_SHUTDOWN_DELAY_S": "0", "SIDECAR_RETRY_AFTER_WAIT_MAX_S": "0"}
    ).settings
    assert s.shutdown_delay_s == 0 and s.retry_after_wait_max_s == 0


def test_variables_with_a_backend_prefix_that_name_no_setting_are_warned_about() -> None:
    config = load_config({**BASE, "P_APIKEY": "x", "P_MODEL": "m", "PX_OTHER": "y"})
    assert config.warnings == ["P_APIKEY: not a setting of backend prefix P_ (a typo?)"]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e309", "Infinity"])
@pytest.mark.parametrize(
    "var", ["SIDECAR_REQUEST_TIMEOUT_S", "SIDECAR_SHUTDOWN_DELAY_S", "P_CONNECT_TIMEOUT_S"]
)
def test_durations_that_are_not_finite_numbers_are_refused(var: str, value: str) -> None:
    assert _error({**BASE, var: value}).env_var == var


def test_a_backend_listed_twice_in_one_chain_is_an_error() -> None:
    e = _error({"SIDECAR_BACKENDS": "primary,primary", "PRIMARY_API_KEY": "k"})
    assert e.env_var == "SIDECAR_BACKENDS"
    assert "'primary' more than once" in e.reason


def test_a_backend_listed_twice_in_a_chains_file_names_sidecar_config(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("fallback_chains:\n  fast: [p, {name: p}]\n")
    e = _error({"SIDECAR_CONFIG": str(path), "P_API_KEY": "k"})
    assert (e.env_var, "'p' more than once" in e.reason) == ("SIDECAR_CONFIG", True)


def test_proxy_and_admin_on_one_port_is_a_config_error() -> None:
    e = _error({**BASE, "SIDECAR_PORT": "9000", "SIDECAR_ADMIN_PORT": "9000"})
    assert e.env_var == "SIDECAR_ADMIN_PORT"
    assert "SIDECAR_PORT" in e.reason
    load_config({**BASE, "SIDECAR_PORT": "0", "SIDECAR_ADMIN_PORT": "0"})  # both ephemeral


def test_unknown_keys_in_a_chains_file_item_name_the_file_chain_and_key(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("fallback_chains:\n  gpt-4o:\n    - {name: p, env_prefx: P_}\n")
    e = _error({"SIDECAR_CONFIG": str(path), "P_API_KEY": "k"})
    assert e.env_var == "SIDECAR_CONFIG"
    assert str(path) in e.reason and "'gpt-4o'" in e.reason and "'env_prefx'" in e.reason


def test_every_problem_is_reported_at_once() -> None:
    e = _error(
        {
            "SIDECAR_BACKENDS": "az,p",
            "AZ_KIND": "azure",
            "P_RETRIES": "-1",
            "P_MODEL_MAP": "nonsense",
            "SIDECAR_PORT": "x",
        }
    )
    assert {var for var, _ in e.problems} == {
        "AZ_BASE_URL",
        "AZ_API_KEY",
        "P_RETRIES",
        "P_MODEL_MAP",
        "P_API_KEY",
        "SIDECAR_PORT",
    }


def test_unknown_sidecar_variables_are_warned_about_with_the_likely_name() -> None:
    config = load_config(
        {**BASE, "SIDECAR_REQUEST_TIMEOUT": "5", "SIDECAR_MAXINFLIGHT": "3", "SIDECAR_PORT": "1"}
    )
    assert config.warnings == [
        "SIDECAR_MAXINFLIGHT: not a SIDECAR_ setting (did you mean SIDECAR_MAX_INFLIGHT?)",
        "SIDECAR_REQUEST_TIMEOUT: not a SIDECAR_ setting (did you mean SIDECAR_REQUEST_TIMEOUT_S?)",
    ]


def test_settings_come_from_the_given_mapping_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # pydantic-settings reads os.environ for every field it is not given, unless told not to.
    monkeypatch.setenv("MODEL", "leaked")
    monkeypatch.setenv("SIDECAR_AUTH_TOKEN", "leaked")
    config = load_config(BASE)
    assert config.settings.auth_token is None
    assert config.backends["p"].settings.model is None


def test_responses_is_refused_on_a_kind_that_always_translates() -> None:
    env = {
        "SIDECAR_BACKENDS": "claude",
        "CLAUDE_KIND": "anthropic",
        "CLAUDE_API_KEY": "sk-ant-0123456789",
        "CLAUDE_RESPONSES": "chat",
    }
    with pytest.raises(ConfigError) as e:
        load_config(env)
    assert e.value.env_var == "CLAUDE_RESPONSES"


@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_responses_chat_is_accepted_on_openai_and_azure(kind: str) -> None:
    env = {
        "SIDECAR_BACKENDS": "p",
        "P_KIND": kind,
        "P_BASE_URL": "https://example.openai.azure.com",
        "P_API_KEY": "sk-0123456789",
        "P_RESPONSES": "chat",
    }
    assert load_config(env).backends["p"].settings.responses == "chat"


def test_responses_must_be_native_or_chat() -> None:
    env = {"SIDECAR_BACKENDS": "p", "P_BASE_URL": "http://vllm:8000/v1", "P_RESPONSES": "both"}
    with pytest.raises(ConfigError) as e:
        load_config(env)
    assert e.value.env_var == "P_RESPONSES"
