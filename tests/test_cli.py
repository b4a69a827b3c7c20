"""The command line as a user runs it: exit codes, stderr naming the env var, redacted `check`."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

SECRET = "sk-canary-cli-secret-0123456789"


def run(
    args: list[str], env: dict[str, str], timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "P_", "PRIMARY_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_invalid_config_exits_2_names_the_var_and_opens_no_socket() -> None:
    port = free_port()
    env = {
        "SIDECAR_BACKENDS": "p",
        "P_API_KEY": SECRET,
        "P_RETRIES": "-3",
        "SIDECAR_PORT": str(port),
    }
    r = run(["serve"], env)
    assert r.returncode == 2
    assert "P_RETRIES" in r.stderr
    assert SECRET not in r.stderr + r.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing is listening there


def test_serve_with_an_unreadable_key_file_exits_2_naming_the_variable(tmp_path: Path) -> None:
    r = run(["serve"], {"SIDECAR_BACKENDS": "p", "P_API_KEY_FILE": str(tmp_path / "missing")})
    assert r.returncode == 2
    assert "P_API_KEY_FILE" in r.stderr


def test_serve_without_any_chain_names_sidecar_backends() -> None:
    r = run(["serve"], {})
    assert r.returncode == 2
    assert "SIDECAR_BACKENDS" in r.stderr and "SIDECAR_CONFIG" in r.stderr


def test_check_prints_only_json_with_every_secret_redacted() -> None:
    env = {
        "SIDECAR_BACKENDS": "p",
        "P_API_KEY": SECRET,
        "P_BASE_URL": "https://user:pw-secret@llm.internal/v1",
        "P_HEADERS": '{"X-Token": "hdr-secret-value"}',
        "SIDECAR_AUTH_TOKEN": "inbound-secret-value",
    }
    r = run(["check"], env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["chains"] == {"default": ["p"]}
    assert doc["backends"]["p"]["api_key"] == "[REDACTED]"
    assert doc["backends"]["p"]["base_url"] == "https://llm.internal/v1"
    for secret in (SECRET, "pw-secret", "hdr-secret-value", "inbound-secret-value"):
        assert secret not in r.stdout + r.stderr


def test_check_with_invalid_config_exits_2() -> None:
    r = run(["check"], {"SIDECAR_BACKENDS": "p", "P_API_KEY": "k", "SIDECAR_PORT": "x"})
    assert r.returncode == 2
    assert "SIDECAR_PORT" in r.stderr
    assert r.stdout == ""


def test_check_names_every_problem_on_its_own_line() -> None:
    env = {"SIDECAR_BACKENDS": "az", "AZ_KIND": "azure", "SIDECAR_PORT": "8800"}
    r = run(["check"], {**env, "SIDECAR_ADMIN_PORT": "8800"})
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "SIDECAR_ADMIN_PORT",
        "AZ_BASE_URL",
        "AZ_API_KEY",
    ]
