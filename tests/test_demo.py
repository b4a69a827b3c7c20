"""`llm-sidecar demo --traffic` as `make run` starts it: it serves, falls back and reports, and
never reaches beyond its own fakes, whatever the shell has exported."""

import os
import socket
import subprocess
import sys

REAL_KEY = "sk-real-provider-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo(
    *args: str, env: dict[str, str] | None = None, ports: tuple[int, int] | None = None
) -> subprocess.CompletedProcess[str]:
    port, admin = ports or (_free_port(), _free_port())
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    command = [sys.executable, "-m", "sidecar", "demo", "--port", str(port)]
    return subprocess.run(
        [*command, "--admin-port", str(admin), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _table(stdout: str) -> dict[str, str]:
    table = stdout.rsplit("requests: ", 1)[1]
    return {line.split()[0]: line for line in table.splitlines()[2:] if line.strip()}


def test_demo_traffic_shows_fallbacks_per_backend_and_exits_0() -> None:
    r = _demo("--traffic", "--requests", "24")
    assert r.returncode == 0, r.stderr
    assert "llm-sidecar demo" in r.stdout
    table = r.stdout.rsplit("requests: ", 1)[1]
    assert "24 sent" in table
    rows = _table(r.stdout)
    assert "rate_limited=" in rows["flaky"] and "overloaded=" in rows["flaky"]
    assert int(rows["healthy"].split()[2]) > 0
    assert "0 errors" in table


def test_demo_ignores_real_provider_settings_in_the_shell_and_says_so() -> None:
    # A "real provider": a listener that must never see a connection.
    with socket.socket() as real:
        real.bind(("127.0.0.1", 0))
        real.listen()
        real.setblocking(False)
        env = {
            "SIDECAR_BACKENDS": "primary",
            "PRIMARY_BASE_URL": f"http://127.0.0.1:{real.getsockname()[1]}/v1",
            "PRIMARY_API_KEY": REAL_KEY,
            "SIDECAR_LOG_LEVEL": "DEBUG",
            "FLAKY_BASE_URL": f"http://127.0.0.1:{real.getsockname()[1]}/v1",
        }
        r = _demo("--traffic", "--requests", "6", env=env)
        try:
            real.accept()[0].close()
            reached = True
        except BlockingIOError:
            reached = False
    assert r.returncode == 0, r.stderr
    assert not reached, "the demo sent traffic to the shell's provider"
    assert "chain default: flaky → claude → healthy" in r.stdout
    assert "no real provider is ever called" in r.stdout
    for name in ("SIDECAR_BACKENDS", "PRIMARY_BASE_URL", "PRIMARY_API_KEY", "FLAKY_BASE_URL"):
        assert name in r.stdout
    assert REAL_KEY not in r.stdout + r.stderr


def test_demo_with_its_port_busy_says_so_once_without_unclosed_session_noise() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = _demo(ports=(busy.getsockname()[1], _free_port()))
    assert r.returncode == 1
    assert "cannot listen" in r.stderr and "--port" in r.stderr
    assert "Unclosed" not in r.stderr
    assert "Traceback" not in r.stderr
