"""`load_config` (`sidecar.config`): each backend checked by its kind's own rules, with its kind's
default base URL; an unknown kind fails naming `{PREFIX}KIND`."""

import pytest

from sidecar.backends import KINDS
from sidecar.config import load_config
from sidecar.settings import Backend, ConfigError


def only(env: dict[str, str]) -> Backend:
    return load_config(env).chains["default"][0]


def error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config(env)
    return e.value


@pytest.mark.parametrize(
    ("env", "var", "reason"),
    [
        ({"SIDECAR_BACKENDS": "p", "P_KIND": "cohere"}, "P_KIND", "unknown kind 'cohere'"),
        ({"SIDECAR_BACKENDS": "p"}, "P_API_KEY", "required for api.openai.com"),
        ({"SIDECAR_BACKENDS": "a", "A_KIND": "azure", "A_API_KEY": "k"}, "A_BASE_URL", "azure"),
        (
            {
                "SIDECAR_BACKENDS": "a",
                "A_KIND": "azure",
                "A_API_KEY": "k",
                "A_BASE_URL": "https://r.openai.azure.com",
                "A_API_VERSION": "2024-10-21",
            },
            "A_DEPLOYMENT",
            "required",
        ),
        ({"SIDECAR_BACKENDS": "c", "C_KIND": "anthropic"}, "C_API_KEY", "required"),
        ({"SIDECAR_BACKENDS": "br", "BR_KIND": "bedrock"}, "BR_REGION", "required"),
    ],
)
def test_each_kinds_own_rules_fail_naming_the_env_var(
    env: dict[str, str], var: str, reason: str
) -> None:
    e = error(env)
    assert e.env_var == var
    assert reason in e.reason


def test_an_unknown_kind_lists_every_kind_there_is() -> None:
    e = error({"SIDECAR_BACKENDS": "p", "P_KIND": "cohere"})
    assert all(kind in e.reason for kind in KINDS)


def test_kinds_are_read_case_insensitively() -> None:
    b = only({"SIDECAR_BACKENDS": "c", "C_KIND": "Anthropic", "C_API_KEY": "k"})
    assert b.settings.kind == "anthropic"


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"P_API_KEY": "k"}, "https://api.openai.com/v1"),
        ({"P_KIND": "anthropic", "P_API_KEY": "k"}, "https://api.anthropic.com"),
        ({"P_KIND": "bedrock", "P_REGION": "us-east-1"}, ""),  # the AWS SDK picks the endpoint
    ],
    ids=["openai", "anthropic", "bedrock"],
)
def test_a_backend_without_base_url_goes_to_its_kinds_default(
    env: dict[str, str], url: str
) -> None:
    assert only({"SIDECAR_BACKENDS": "p", **env}).base_url == url


def test_base_url_wins_over_the_kinds_default() -> None:
    env = {"SIDECAR_BACKENDS": "c", "C_KIND": "anthropic", "C_API_KEY": "k"}
    b = only({**env, "C_BASE_URL": "http://127.0.0.1:9/anthropic"})
    assert b.base_url == "http://127.0.0.1:9/anthropic"


def test_an_openai_compatible_server_of_our_own_needs_no_key() -> None:
    b = only({"SIDECAR_BACKENDS": "local", "LOCAL_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert b.settings.api_key is None


def test_every_setting_a_kind_misses_is_named_at_once() -> None:
    e = error({"SIDECAR_BACKENDS": "a", "A_KIND": "azure", "A_API_VERSION": "2024-10-21"})
    assert [var for var, _ in e.problems] == ["A_BASE_URL", "A_DEPLOYMENT", "A_API_KEY"]


@pytest.mark.parametrize("var", ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"])
def test_bedrock_may_take_its_region_from_the_standard_aws_variables(var: str) -> None:
    b = only({"SIDECAR_BACKENDS": "br", "BR_KIND": "bedrock", var: "eu-west-1"})
    assert b.settings.kind == "bedrock"
