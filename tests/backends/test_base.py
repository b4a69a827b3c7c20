"""What every backend kind shares (`sidecar.backends.base`), pure: reading a 2xx body, the model
sent, and settings a kind requires."""

import pytest

from sidecar.backends.base import InvalidResponse, json_object_body, require, require_all
from sidecar.backends.openai import OpenAIBackend
from sidecar.call import Route
from sidecar.config import load_config
from sidecar.settings import Backend, ConfigError


def backend(**settings: str) -> Backend:
    env = {"SIDECAR_BACKENDS": "p", "P_BASE_URL": "http://up/v1"}
    env.update({f"P_{k.upper()}": v for k, v in settings.items()})
    return load_config(env).chains["default"][0]


def test_a_2xx_body_must_be_a_json_object() -> None:
    assert json_object_body(b'{"a": 1}') == {"a": 1}
    with pytest.raises(InvalidResponse, match="not JSON"):
        json_object_body(b"<html>")
    with pytest.raises(InvalidResponse, match="not a JSON object"):
        json_object_body(b"[1]")


@pytest.mark.parametrize(
    ("settings", "requested", "sent"),
    [
        ({"model": "fixed"}, "gpt-4o", "fixed"),  # MODEL wins over everything
        ({"model": "fixed", "model_map": "gpt-4o=mapped"}, "gpt-4o", "fixed"),
        ({"model_map": "gpt-4o=mapped"}, "gpt-4o", "mapped"),
        ({"model_map": "gpt-4o=mapped"}, "other", "other"),  # unmapped: as requested
        ({}, None, None),
        ({"model": "fixed"}, None, "fixed"),
    ],
)
def test_the_model_sent_is_model_else_the_mapped_else_the_requested(
    settings: dict[str, str], requested: str | None, sent: str | None
) -> None:
    assert OpenAIBackend(backend(**settings)).model_for(requested) == sent


def test_a_backend_serves_only_its_kinds_routes() -> None:
    adapter = OpenAIBackend(backend())
    assert adapter.supports(Route.CHAT_COMPLETIONS)
    assert not adapter.supports(Route.MODELS)
    assert (adapter.name, adapter.kind) == ("p", "openai")


def test_required_settings_name_every_missing_env_var_at_once() -> None:
    b = backend(deployment="d")
    needs = [("DEPLOYMENT", "set"), ("API_KEY", "needed"), ("API_VERSION", "wanted")]
    with pytest.raises(ConfigError) as e:
        require_all(b, needs)
    assert e.value.problems == [("P_API_KEY", "needed"), ("P_API_VERSION", "wanted")]
    require(b, "DEPLOYMENT", "set")  # present: no error
