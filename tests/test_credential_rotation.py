"""Credentials from files, rotated live (README "Credentials from files"), end to end over
loopback: a mounted Secret updated by a kubelet-style symlink swap, and the next request upstream
carries the new key with no restart and no failed request."""

import asyncio
import pathlib

import aiohttp
import pytest
from conftest import FakeFactory, Running, SidecarFactory, chat, post, wait_until
from fakes.anthropic_upstream import FakeAnthropic
from fakes.bedrock_upstream import FakeBedrock
from fakes.gemini_upstream import FakeGemini
from fakes.openai_upstream import Script
from fakes.secret_volume import SecretVolume

from sidecar.config import load_config
from sidecar.settings import ConfigError

OLD, NEW = "rotating-key-old-0123456789", "rotating-key-new-9876543210"
# The poll is 1 s in production; here it is short, and a reload is awaited many polls long.
POLL_S = 0.05
RELOAD_WITHIN_S = 5.0


@pytest.fixture
def volume(tmp_path: pathlib.Path) -> SecretVolume:
    v = SecretVolume(tmp_path / "secret")
    v.write({"api-key": OLD + "\n", "token": "inbound-old-token\n"})
    return v


def _env(fake_url: str, volume: SecretVolume, **extra: str) -> dict[str, str]:
    return {
        "SIDECAR_BACKENDS": "b0",
        "B0_BASE_URL": fake_url,
        "B0_API_KEY_FILE": str(volume.path("api-key")),
        **extra,
    }


def _reloads(sc: Running, owner: str, outcome: str) -> float:
    return sc.metric("llm_sidecar_credential_reloads_total", backend=owner, outcome=outcome)


async def _reloaded(sc: Running, owner: str, outcome: str = "success", count: int = 1) -> None:
    await wait_until(
        lambda: _reloads(sc, owner, outcome) >= count, RELOAD_WITHIN_S, f"{owner} {outcome}"
    )


async def test_a_key_rotated_by_a_symlink_swap_is_sent_on_the_next_request(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    volume: SecretVolume,
) -> None:
    f = await fake()
    sc = await sidecar(_env(f.url, volume), credential_poll_s=POLL_S)
    assert (await post(http, sc.url, chat())).status == 200
    assert f.seen[-1].headers["authorization"] == f"Bearer {OLD}"

    # Requests keep flowing through the swap: none of them fails.
    async def traffic() -> list[int]:
        statuses = []
        while _reloads(sc, "b0", "success") < 1:
            statuses.append((await post(http, sc.url, chat())).status)
        return statuses

    flowing = asyncio.ensure_future(traffic())
    volume.write({"api-key": NEW + "\n"})
    await _reloaded(sc, "b0")
    statuses = await flowing
    assert set(statuses) <= {200}
    assert (await post(http, sc.url, chat())).status == 200
    assert f.seen[-1].headers["authorization"] == f"Bearer {NEW}"
    assert {s.headers["authorization"] for s in f.seen} == {f"Bearer {OLD}", f"Bearer {NEW}"}
    assert _reloads(sc, "b0", "failure") == 0


async def test_an_attempt_in_flight_keeps_its_key_and_the_retry_uses_the_new_one(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    volume: SecretVolume,
) -> None:
    f = await fake()
    # The first attempt is answered (503) only after the key has been rotated; its retry is a
    # new attempt of the same request, built before the rotation.
    f.script(Script(status=503, delay_s=1.0), Script())
    env = _env(f.url, volume, B0_RETRIES="1", B0_RETRY_BACKOFF_S="0.01")
    sc = await sidecar(env, credential_poll_s=POLL_S)
    request = asyncio.ensure_future(post(http, sc.url, chat()))
    await wait_until(lambda: len(f.seen) == 1, what="first attempt sent")
    volume.write({"api-key": NEW})
    await _reloaded(sc, "b0")
    assert (await request).status == 200
    assert [s.headers["authorization"] for s in f.seen] == [f"Bearer {OLD}", f"Bearer {NEW}"]


@pytest.mark.parametrize("bad", [b"", b"\n\n", b"\xff\xfe"])
async def test_a_bad_rotation_keeps_the_old_key_and_counts_a_failure(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    volume: SecretVolume,
    bad: bytes,
) -> None:
    f = await fake()
    sc = await sidecar(_env(f.url, volume), credential_poll_s=POLL_S)
    volume.write({"api-key": bad})
    await _reloaded(sc, "b0", "failure")
    assert (await post(http, sc.url, chat())).status == 200
    assert f.seen[-1].headers["authorization"] == f"Bearer {OLD}"
    assert _reloads(sc, "b0", "success") == 0


async def test_the_old_inbound_token_stops_working_once_the_new_one_is_loaded(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    volume: SecretVolume,
) -> None:
    f = await fake()
    env = _env(f.url, volume, SIDECAR_AUTH_TOKEN_FILE=str(volume.path("token")))
    sc = await sidecar(env, credential_poll_s=POLL_S)

    async def status(token: str) -> int:
        headers = {"authorization": f"Bearer {token}"}
        return (await post(http, sc.url, chat(), headers=headers)).status

    assert await status("inbound-old-token") == 200
    assert await status("inbound-new-token") == 401
    volume.write({"token": "inbound-new-token\n"})
    await _reloaded(sc, "inbound")
    assert await status("inbound-old-token") == 401
    assert await status("inbound-new-token") == 200


async def test_a_rotated_key_echoed_by_the_upstream_is_redacted(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    volume: SecretVolume,
) -> None:
    f = await fake()
    sc = await sidecar(_env(f.url, volume), credential_poll_s=POLL_S)
    volume.write({"api-key": NEW})
    await _reloaded(sc, "b0")
    f.script(Script(status=400, body={"error": {"message": f"bad key {NEW}", "type": "x"}}))
    r = await post(http, sc.url, chat())
    assert r.status == 400
    assert NEW not in r.text and "[REDACTED]" in r.text


async def test_an_anthropic_backend_takes_its_key_from_a_file(
    claude: FakeAnthropic,
    sidecar: SidecarFactory,
    http: aiohttp.ClientSession,
    volume: SecretVolume,
) -> None:
    env = {
        "SIDECAR_BACKENDS": "claude",
        "CLAUDE_KIND": "anthropic",
        "CLAUDE_BASE_URL": claude.url,
        "CLAUDE_API_KEY_FILE": str(volume.path("api-key")),
    }
    sc = await sidecar(env, credential_poll_s=POLL_S)
    assert (await post(http, sc.url, chat(model="claude-test"))).status == 200
    volume.write({"api-key": NEW})
    await _reloaded(sc, "claude")
    assert (await post(http, sc.url, chat(model="claude-test"))).status == 200
    assert [s.headers["x-api-key"] for s in claude.seen] == [OLD, NEW]


def _config_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config(env)
    return e.value


def test_a_missing_key_file_fails_startup_naming_the_variable(tmp_path: pathlib.Path) -> None:
    e = _config_error({"SIDECAR_BACKENDS": "p", "P_API_KEY_FILE": str(tmp_path / "nope")})
    assert e.env_var == "P_API_KEY_FILE"
    assert "does not exist" in e.reason


def test_an_empty_token_file_fails_startup_without_its_content(tmp_path: pathlib.Path) -> None:
    token = tmp_path / "token"
    token.write_text("  \n")
    env = {"SIDECAR_BACKENDS": "p", "P_API_KEY": "k", "SIDECAR_AUTH_TOKEN_FILE": str(token)}
    e = _config_error(env)
    assert e.env_var == "SIDECAR_AUTH_TOKEN_FILE"
    assert "empty" in e.reason


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"P_API_KEY": "k", "P_API_KEY_FILE": "FILE"}, "P_API_KEY"),
        ({"SIDECAR_AUTH_TOKEN": "t", "SIDECAR_AUTH_TOKEN_FILE": "FILE"}, "SIDECAR_AUTH_TOKEN"),
    ],
)
def test_a_credential_set_both_ways_fails_startup_naming_both(
    tmp_path: pathlib.Path, env: dict[str, str], var: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-the-file")
    full = {"SIDECAR_BACKENDS": "p", "P_API_KEY": "k"} | {
        k: str(secret) if v == "FILE" else v for k, v in env.items()
    }
    e = _config_error(full)
    assert var in str(e) and f"{var}_FILE" in str(e)
    assert "from-the-file" not in str(e)


def test_a_key_file_satisfies_a_kind_that_requires_a_key(volume: SecretVolume) -> None:
    env = {
        "SIDECAR_BACKENDS": "claude",
        "CLAUDE_KIND": "anthropic",
        "CLAUDE_API_KEY_FILE": str(volume.path("api-key")),
    }
    backend = load_config(env).backends["claude"]
    assert backend.api_key() == OLD


async def test_a_gemini_key_rotated_in_its_file_is_sent_on_the_next_request(
    gemini: FakeGemini, sidecar: SidecarFactory, http: aiohttp.ClientSession, volume: SecretVolume
) -> None:
    env = {
        "SIDECAR_BACKENDS": "g",
        "G_KIND": "gemini",
        "G_BASE_URL": gemini.url,
        "G_MODEL": "gemini-3-pro-preview",
        "G_API_KEY_FILE": str(volume.path("api-key")),
    }
    sc = await sidecar(env, credential_poll_s=POLL_S)
    assert (await post(http, sc.url, chat())).status == 200
    volume.write({"api-key": NEW + "\n"})
    await _reloaded(sc, "g")
    assert (await post(http, sc.url, chat())).status == 200
    assert [s.headers["x-goog-api-key"] for s in gemini.seen] == [OLD, NEW]


async def test_a_bedrock_api_key_rotated_in_its_file_is_sent_on_the_next_request(
    bedrock: FakeBedrock, sidecar: SidecarFactory, http: aiohttp.ClientSession, volume: SecretVolume
) -> None:
    env = {
        "SIDECAR_BACKENDS": "aws",
        "AWS_KIND": "bedrock",
        "AWS_ENDPOINT_URL": bedrock.url,
        "AWS_REGION": "us-east-1",
        "AWS_MODEL": "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "AWS_API_KEY_FILE": str(volume.path("api-key")),
    }
    sc = await sidecar(env, credential_poll_s=POLL_S)
    assert (await post(http, sc.url, chat())).status == 200
    volume.write({"api-key": NEW + "\n"})
    await _reloaded(sc, "aws")
    assert (await post(http, sc.url, chat())).status == 200
    assert [s.headers["authorization"] for s in bedrock.seen] == [f"Bearer {OLD}", f"Bearer {NEW}"]
