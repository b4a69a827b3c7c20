"""Kind `azure` (`sidecar.backends.azure`): classic deployment URLs and the v1 API, the `api-key`
header, the deployment as the model, `stream_options` only where the API version accepts it."""

from typing import Any

import aiohttp
import orjson
import pytest
from conftest import FakeFactory, SidecarFactory, chat, post
from fakes.openai_upstream import Script

from sidecar.backends.azure import AzureBackend
from sidecar.call import Call, Dialect, Route
from sidecar.config import load_config

ROOT = "https://r.openai.azure.com"


def azure(**settings: str) -> AzureBackend:
    env = {"SIDECAR_BACKENDS": "az", "AZ_KIND": "azure", "AZ_BASE_URL": ROOT + "/"}
    env.update({"AZ_API_KEY": "azure-key", **{f"AZ_{k.upper()}": v for k, v in settings.items()}})
    return AzureBackend(load_config(env).chains["default"][0])


def classic(**settings: str) -> AzureBackend:
    return azure(deployment="gpt 4o/prod", api_version="2024-10-21", **settings)


def call(route: Route = Route.CHAT_COMPLETIONS, **fields: Any) -> Call:
    body = fields.pop("body", {"model": "gpt-4o", "messages": []})
    made = {
        "route": route,
        "dialect": Dialect.OPENAI,
        "method": "POST",
        "path": "",
        "query": "",
        "raw": orjson.dumps(body),
        "body": body,
        "stream": False,
        "model": body.get("model") if body else None,
        "headers": {},
        "request_id": "rid-1",
        "chain": "default",
    }
    made.update(fields)
    return Call(**made)


def test_classic_urls_name_the_quoted_deployment_and_the_api_version() -> None:
    az = classic()
    base = f"{ROOT}/openai/deployments/gpt%204o/prod"
    assert az.url(call()) == f"{base}/chat/completions?api-version=2024-10-21"
    assert az.url(call(Route.EMBEDDINGS)) == f"{base}/embeddings?api-version=2024-10-21"


def test_v1_urls_have_no_deployment_in_the_path_and_no_api_version() -> None:
    az = azure(deployment="my-deployment")
    assert az.url(call()) == f"{ROOT}/openai/v1/chat/completions"
    assert az.url(call(Route.EMBEDDINGS)) == f"{ROOT}/openai/v1/embeddings"


def test_pass_through_keeps_the_callers_query_before_the_api_version() -> None:
    passthrough = call(Route.PASSTHROUGH, path="files", query="purpose=batch", body=None)
    assert classic().url(passthrough) == (
        f"{ROOT}/openai/deployments/gpt%204o/prod/files?purpose=batch&api-version=2024-10-21"
    )
    assert azure().url(passthrough) == f"{ROOT}/openai/v1/files?purpose=batch"
    assert azure().url(call(Route.PASSTHROUGH, path="files", body=None)) == (
        f"{ROOT}/openai/v1/files"
    )


@pytest.mark.parametrize(
    ("settings", "sent"),
    [
        ({"deployment": "dep"}, "dep"),  # v1: the deployment is the model
        ({}, "gpt-4o"),  # v1 without a deployment: the caller's model
        ({"model_map": "gpt-4o=gpt-4o-eu"}, "gpt-4o-eu"),
        ({"deployment": "dep", "api_version": "2024-10-21"}, "gpt-4o"),  # classic: in the URL
    ],
    ids=["v1-deployment", "v1-callers", "v1-model-map", "classic"],
)
def test_the_model_sent_is_the_deployment_on_v1_only(settings: dict[str, str], sent: str) -> None:
    assert azure(**settings).sent_model(call()) == sent


def test_the_key_goes_in_api_key_and_never_as_a_bearer_token() -> None:
    req = classic().build(call(headers={"authorization": "Bearer caller"}))
    assert req.headers["api-key"] == "azure-key"
    assert req.headers["authorization"] == "Bearer caller"  # the caller's own, not ours
    assert req.headers["x-request-id"] == "rid-1"


@pytest.mark.parametrize(
    ("version", "asks"),
    [("2024-06-01", False), ("2024-09-01", True), ("2025-01-01-preview", True), (None, True)],
)
def test_streams_ask_for_usage_only_from_the_api_version_that_accepts_it(
    version: str | None, asks: bool
) -> None:
    settings = {"deployment": "dep"} | ({"api_version": version} if version else {})
    az = azure(**settings)
    body = {"model": "gpt-4o", "messages": [], "stream": True}
    sent = orjson.loads(az.build(call(body=body, stream=True)).body)
    assert az.asks_usage is asks
    assert ("stream_options" in sent) is asks


async def test_azure_classic_and_v1_urls_and_api_key_header(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    classic, v1 = await fake(Script(status=503)), await fake()
    env = {
        "SIDECAR_BACKENDS": "az1,az2",
        "AZ1_KIND": "azure",
        "AZ1_BASE_URL": classic.url.removesuffix("/v1"),
        "AZ1_API_KEY": "azure-key-one",
        "AZ1_DEPLOYMENT": "gpt4o-prod",
        "AZ1_API_VERSION": "2024-10-21",
        "AZ2_KIND": "azure",
        "AZ2_BASE_URL": v1.url.removesuffix("/v1"),
        "AZ2_API_KEY": "azure-key-two",
        "AZ2_DEPLOYMENT": "my-deployment",
    }
    sc = await sidecar(env)
    r = await post(http, sc.url, chat())
    assert r.status == 200
    c, v = classic.seen[0], v1.seen[0]
    assert c.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert c.query == "api-version=2024-10-21"
    assert c.headers["api-key"] == "azure-key-one"
    assert "authorization" not in c.headers
    assert v.path == "/openai/v1/chat/completions"
    assert v.json["model"] == "my-deployment"
    assert v.headers["api-key"] == "azure-key-two"


async def test_azure_api_versions_without_stream_options_are_not_sent_it(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    old = await fake()
    env = {
        "SIDECAR_BACKENDS": "az",
        "AZ_KIND": "azure",
        "AZ_BASE_URL": old.url.removesuffix("/v1"),
        "AZ_API_KEY": "azure-key-one",
        "AZ_DEPLOYMENT": "gpt4o",
        "AZ_API_VERSION": "2024-06-01",
    }
    sc = await sidecar(env)
    r = await post(http, sc.url, chat(stream=True))
    assert r.status == 200
    assert "stream_options" not in old.seen[0].json
