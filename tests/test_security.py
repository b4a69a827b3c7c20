"""Secrets never leave: canary keys through error bodies, logs, metrics, /status and streams."""

import logging

import aiohttp
import pytest
from conftest import FakeFactory, SidecarFactory, chain_env, chat, post
from fakes.openai_upstream import Script

CANARIES = ("sk-canary-key-0-0123456789", "sk-canary-key-1-0123456789")


def echo_key(key: str, status: int) -> Script:
    body = {
        "error": {
            "message": f"Incorrect API key provided: {key}.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    return Script(status=status, body=body)


async def test_upstream_error_bodies_are_scrubbed_of_keys(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(echo_key(CANARIES[0], 503))
    b = await fake(echo_key(CANARIES[1], 401))
    sc = await sidecar(chain_env(a, b))
    r = await post(http, sc.url, chat())
    assert r.status == 401
    assert "Incorrect API key provided" in r.text
    assert all(c not in r.text for c in CANARIES)


async def test_partially_masked_keys_echoed_upstream_are_scrubbed_too(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake(echo_key("sk-proj-abcd****************wxyz", 401))
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat())
    assert "abcd" not in r.text and "wxyz" not in r.text


async def test_in_band_stream_errors_are_scrubbed(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    err = {"message": f"key {CANARIES[0]} revoked", "type": "server_error"}
    a = await fake(Script(end="error", after=2, error=err))
    sc = await sidecar(chain_env(a))
    r = await post(http, sc.url, chat(stream=True))
    assert "revoked" in r.text
    assert CANARIES[0] not in r.text


def leaked(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


async def test_keys_never_appear_in_metrics_status_or_logs(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = await fake(echo_key(CANARIES[0], 500)), await fake()
    sc = await sidecar(chain_env(a, b))
    with caplog.at_level(logging.INFO):
        await post(http, sc.url, chat(stream=True))
        await post(http, sc.url, chat())
    async with http.get(sc.admin + "/metrics") as r:
        metrics = await r.text()
    async with http.get(sc.admin + "/status") as r:
        status = await r.text()
    # The access log as written (two lines), and anything the loggers got.
    sc.app.access_log.flush()
    access = sc.log.getvalue().decode()
    assert len(access.splitlines()) == 2
    for text in (metrics, status, access, caplog.text):
        assert leaked(text) == []
    # The check reads what is really written: a key in the access log is seen.
    sc.log.write(f'{{"leak": "{CANARIES[1]}"}}\n'.encode())
    assert leaked(sc.log.getvalue().decode()) == [CANARIES[1]]


async def test_one_json_log_line_per_request_with_attempts_and_no_bodies(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await fake(Script(status=503)), await fake()
    sc = await sidecar(chain_env(a, b))
    await post(http, sc.url, chat(), headers={"x-request-id": "rid-1"})
    lines = sc.log_lines()
    assert len(lines) == 1
    fields = lines[0]
    assert fields["request_id"] == "rid-1"
    assert fields["route"] == "chat_completions"
    assert fields["chain"] == "default"
    assert fields["model"] == "gpt-test"
    assert fields["served_by"] == "b1"
    assert fields["status"] == 200
    assert fields["level"] == "info"
    assert fields["ts"].endswith("Z")
    assert [(x["backend"], x["class"], x["status"]) for x in fields["attempts"]] == [
        ("b0", "overloaded", 503),
        ("b1", None, 200),
    ]
    assert "hi" not in str(fields)


async def test_access_log_is_off_above_info_and_redacted(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    a = await fake()
    quiet = await sidecar(chain_env(a, SIDECAR_LOG_LEVEL="WARNING"))
    await post(http, quiet.url, chat())
    assert quiet.log_lines() == []
    loud = await sidecar(chain_env(a))
    await post(http, loud.url, chat(model=CANARIES[0]))
    assert CANARIES[0] not in loud.log.getvalue().decode()


async def test_static_header_values_are_treated_as_secrets(
    fake: FakeFactory, sidecar: SidecarFactory, http: aiohttp.ClientSession
) -> None:
    gateway = "gw-token-0123456789"
    a = await fake(echo_key(gateway, 401))
    sc = await sidecar(chain_env(a, B0_HEADERS=f'{{"X-Gateway-Token": "{gateway}"}}'))
    r = await post(http, sc.url, chat())
    assert a.seen[0].headers["x-gateway-token"] == gateway
    assert gateway not in r.text
