"""The real agent CLIs (pinned, in .clis/ from scripts/ensure-clis) as callers of the sidecar.

Each run gets a fresh HOME holding only the config this module writes (the README's own blocks
for each CLI), an environment built from nothing (no key, proxy or token of the machine leaks
in), and a proxy sentinel: every proxy variable points at a loopback listener that records and
refuses whatever reaches it, while `NO_PROXY` lets loopback through. A CLI that tried to reach
anything but the sidecar (telemetry, update checks, plugin sync) shows up in `Sentinel.seen`, and
the tests assert it stayed empty.

A run is bounded (`TIMEOUT_S`); the CLI runs in its own session and its whole process group is
killed by its PID when the run ends, so a hung CLI or a helper it left behind never outlives a test.
"""

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
BIN: Final = ROOT / ".clis" / "node_modules" / ".bin"
TIMEOUT_S: Final = 120.0
DUMMY_KEY: Final = "sk-e2e-dummy-not-a-key"

# The shell command the fakes ask the CLIs to run: its output (e2e-42) is not in the command
# itself, so only a shell that ran it can have sent it back.
COMMAND: Final = "echo e2e-$((6*7))"
OUTPUT: Final = "e2e-42"
SAW: Final = "The tool printed e2e-42."
MISSING: Final = "The tool output never arrived."

JSON = dict[str, Any]


def cli(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        # Never a skip: `make test` installs them (scripts/ensure-clis), so missing is a failure.
        pytest.fail(f"{path} is missing: run scripts/ensure-clis (make test does)")
    return path


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    def check(self) -> Self:
        assert self.rc == 0, f"exit {self.rc}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        return self


@dataclass
class Sentinel:
    """A loopback listener that every proxy variable points at: it records the first line of
    each request (a CONNECT names the host a CLI tried to reach) and refuses it."""

    seen: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            self.seen.append(line.decode("latin-1").strip())
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def env(self) -> dict[str, str]:
        url = f"http://127.0.0.1:{self.port}"
        proxies = {k: url for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
        proxies |= {k.lower(): v for k, v in proxies.items()}
        return proxies | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def base_env(home: Path, sentinel: Sentinel) -> dict[str, str]:
    node = shutil.which("node")
    assert node is not None, "node is missing: scripts/ensure-tools installs it"
    path = os.pathsep.join(dict.fromkeys([str(Path(node).parent), "/usr/bin", "/bin"]))
    return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb", **sentinel.env()}


async def run(argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float = TIMEOUT_S) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        pytest.fail(f"{argv[0]} did not finish within {timeout_s} s")
    finally:
        _kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _kill_group(pid: int) -> None:
    # The CLI leads its own process group (start_new_session): this ends it and any helper it
    # started, and nothing else.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# The README's configuration for each CLI is what the runs use: its sidecar URL replaced by the
# test's, and only what keeps a CLI offline and failing loudly added.

README_URL: Final = "http://127.0.0.1:8700"
_FENCE: Final = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def readme_block(lang: str, marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    (found,) = [m.group(2) for m in _FENCE.finditer(text) if m[1] == lang and marker in m[2]]
    return found


# ---------------------------------------------------------------------------------------------
# Codex CLI: `codex exec`, the README's model provider block

CODEX_MARKER: Final = 'wire_api = "responses"'
CODEX_OFFLINE: Final = """
# Plugins sync a curated marketplace from github.com at startup.
[features]
plugins = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
"""


def codex_config(sidecar_url: str) -> tuple[str, dict[str, Any]]:
    """The config.toml to write, and the README's provider block as parsed."""
    readme = readme_block("toml", CODEX_MARKER)
    assert README_URL in readme
    config = tomllib.loads(readme)
    (provider,) = config["model_providers"].values()
    offline = f"check_for_update_on_startup = false\n{readme}{CODEX_OFFLINE}"
    return offline.replace(README_URL, sidecar_url), provider


async def codex(sidecar_url: str, prompt: str, tmp: Path, sentinel: Sentinel, *extra: str) -> Run:
    home, work = tmp / "home", tmp / "work"
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    config, provider = codex_config(sidecar_url)
    (home / ".codex" / "config.toml").write_text(config)
    env = base_env(home, sentinel) | {provider["env_key"]: DUMMY_KEY}
    argv = [str(cli("codex")), "exec", "--skip-git-repo-check", "--ephemeral", "--color=never"]
    # The sidecar does the retrying and the falling back: a failure must reach the test.
    table = "model_providers." + tomllib.loads(config)["model_provider"]
    argv += ["-c", f"{table}.request_max_retries=0", "-c", f"{table}.stream_max_retries=0"]
    # The sandbox is Codex's own business, not the sidecar's: it needs user namespaces, which
    # CI containers may not have, and the only commands run here are the fakes' `echo`.
    argv += ["--sandbox", "danger-full-access", *extra, prompt]
    return await run(argv, env, work)


# ---------------------------------------------------------------------------------------------
# Claude Code: `claude -p`, the README's exports

CLAUDE_MARKER: Final = "export ANTHROPIC_BASE_URL="
CLAUDE_QUIET: Final = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    # Its own retries off: the sidecar does the retrying and the falling back.
    "CLAUDE_CODE_MAX_RETRIES": "0",
}


def claude_exports(sidecar_url: str) -> dict[str, str]:
    exports: dict[str, str] = {}
    for line in readme_block("sh", CLAUDE_MARKER).splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            exports.update(word.split("=", 1) for word in words[1:])  # type: ignore[misc]
    assert exports["ANTHROPIC_BASE_URL"] == README_URL
    return exports | {"ANTHROPIC_BASE_URL": sidecar_url}


async def claude(sidecar_url: str, prompt: str, tmp: Path, sentinel: Sentinel, *extra: str) -> Run:
    home, work = tmp / "home", tmp / "work"
    home.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    env = base_env(home, sentinel) | CLAUDE_QUIET | claude_exports(sidecar_url)
    argv = [str(cli("claude")), "-p", "--output-format", "text", *extra, prompt]
    return await run(argv, env, work)


# ---------------------------------------------------------------------------------------------
# What the fakes answer once the tool has run: whether its output came back, in each dialect


def _said(text: str) -> str:
    return SAW if OUTPUT in text else MISSING


def responses_tool_output(body: JSON) -> str:
    items = body["input"] if isinstance(body.get("input"), list) else []
    outs = [str(i.get("output")) for i in items if i.get("type") == "function_call_output"]
    return _said(" ".join(outs))


def anthropic_tool_output(body: JSON) -> str:
    found = []
    for m in body.get("messages", []):
        for block in m.get("content") if isinstance(m.get("content"), list) else []:
            if block.get("type") == "tool_result":
                found.append(str(block.get("content")))
    return _said(" ".join(found))


def chat_tool_output(body: JSON) -> str:
    found = [str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "tool"]
    return _said(" ".join(found))
