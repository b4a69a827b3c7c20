"""`llm-sidecar demo --traffic` as `make run` starts it: it serves, falls back and reports."""

import os
import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_traffic_shows_fallbacks_per_backend_and_exits_0() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
        "SIDECAR_PORT": str(_free_port()),
        "SIDECAR_ADMIN_PORT": str(_free_port()),
    }
    r = subprocess.run(
        [sys.executable, "-m", "sidecar", "demo", "--traffic", "--requests", "24"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "llm-sidecar demo" in r.stdout
    table = r.stdout.rsplit("requests: ", 1)[1]
    assert "24 sent" in table
    rows = {line.split()[0]: line for line in table.splitlines()[2:] if line.strip()}
    assert "rate_limited=" in rows["flaky"] and "overloaded=" in rows["flaky"]
    assert int(rows["healthy"].split()[2]) > 0
    assert "0 errors" in table
