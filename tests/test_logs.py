"""Logging (`sidecar.logs`): one line per record in JSON or key=value, scrubbed of secrets; the
access log buffered off the request path and flushed on a timer and at shutdown."""

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import wait_until

from sidecar.logs import AccessLog, configure
from sidecar.redact import Redactor

Log = Callable[..., str]


@pytest.fixture
def log(capsys: pytest.CaptureFixture[str]) -> Iterator[Log]:
    """`log(fmt, level, emit)`: configure the root logger, run `emit()`, return stderr."""
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    handlers, level, access_level = root.handlers[:], root.level, access.level

    def run(fmt: str, emit: Callable[[], None], level: str = "INFO") -> str:
        configure(level, fmt, Redactor(["my-inbound-token"]))
        emit()
        return capsys.readouterr().err

    yield run
    root.handlers[:] = handlers
    root.setLevel(level)
    access.setLevel(access_level)


def test_log_formatter_redacts_configured_secrets_and_key_shaped_strings(log: Log) -> None:
    err = log(
        "json",
        lambda: logging.getLogger("sidecar.test").info(
            "token my-inbound-token key sk-live-abcdefghijkl"
        ),
    )
    assert "my-inbound-token" not in err
    assert "sk-live-abcdefghijkl" not in err
    assert "[REDACTED]" in err


def test_a_json_record_is_one_line_with_its_fields_merged(log: Log) -> None:
    err = log(
        "json",
        lambda: logging.getLogger("sidecar.x").warning(
            "draining", extra={"fields": {"inflight": 3}}
        ),
    )
    lines = err.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert {k: record[k] for k in ("level", "logger", "msg", "inflight")} == {
        "level": "warning",
        "logger": "sidecar.x",
        "msg": "draining",
        "inflight": 3,
    }
    assert record["ts"].endswith("Z") and len(record["ts"]) == len("2026-01-01T00:00:00.000Z")


def test_key_value_lines_quote_only_values_that_need_it(log: Log) -> None:
    fields = {"backend": "b0", "reason": "two words", "n": 2, "empty": ""}
    err = log("text", lambda: logging.getLogger("s").info("hi", extra={"fields": fields}))
    assert err.rstrip("\n").endswith('backend=b0 reason="two words" n=2 empty=""')
    assert " level=info logger=s msg=hi " in err


def test_exceptions_are_named_on_errors_only(log: Log) -> None:
    def emit() -> None:
        logger = logging.getLogger("s")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.warning("retrying", exc_info=True)
            logger.error("gave up", exc_info=True)

    warning, error = (json.loads(line) for line in log("json", emit).splitlines())
    assert "error" not in warning
    assert error["error"] == "ValueError('boom')"


def test_configure_replaces_the_handlers_sets_the_level_and_quiets_aiohttps_access_log(
    log: Log,
) -> None:
    logging.getLogger().addHandler(logging.NullHandler())
    err = log("json", lambda: logging.getLogger("s").info("dropped"), level="WARNING")
    assert err == ""
    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger("aiohttp.access").level == logging.WARNING


def access_log(stream: io.BytesIO | None, level: str = "INFO", fmt: str = "json") -> AccessLog:
    return AccessLog(stream, level, fmt, Redactor(["my-inbound-token"]))


def lines(stream: io.BytesIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_access_lines_wait_in_the_buffer_until_a_flush() -> None:
    stream = io.BytesIO()
    log = access_log(stream)
    log.write({"route": "chat_completions", "status": 200})
    log.write({"route": "messages", "status": 503})
    assert stream.getvalue() == b""
    log.flush()
    assert [(x["route"], x["status"]) for x in lines(stream)] == [
        ("chat_completions", 200),
        ("messages", 503),
    ]
    log.flush()
    assert len(lines(stream)) == 2  # each line written once


def test_an_access_line_says_what_it_is_and_is_redacted() -> None:
    stream = io.BytesIO()
    log = access_log(stream)
    log.write({"model": "my-inbound-token"})
    log.flush()
    (line,) = lines(stream)
    assert (line["level"], line["logger"], line["msg"]) == ("info", "sidecar.access", "request")
    assert line["ts"].endswith("Z")
    assert line["model"] == "[REDACTED]"


def test_a_full_buffer_is_written_at_once() -> None:
    stream = io.BytesIO()
    log = access_log(stream)
    log.write({"pad": "x" * (64 * 1024)})
    assert len(lines(stream)) == 1


def test_access_lines_in_key_value_form() -> None:
    stream = io.BytesIO()
    log = access_log(stream, fmt="text")
    log.write({"route": "models", "status": 200})
    log.flush()
    assert stream.getvalue().endswith(
        b" logger=sidecar.access msg=request route=models status=200\n"
    )


@pytest.mark.parametrize(
    ("level", "enabled"), [("DEBUG", True), ("INFO", True), ("WARNING", False)]
)
def test_the_access_log_is_on_at_info_and_below(level: str, enabled: bool) -> None:
    assert access_log(None, level=level).enabled is enabled


async def test_the_flusher_writes_on_its_timer_and_once_more_when_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(AccessLog, "FLUSH_S", 0.01)
    stream = io.BytesIO()
    log = access_log(stream)
    flusher = asyncio.create_task(log.flusher())
    log.write({"n": 1})
    await wait_until(lambda: len(lines(stream)) == 1, within_s=1, what="a timed flush")
    # At shutdown: what is still buffered is written when the flusher is cancelled.
    monkeypatch.setattr(AccessLog, "FLUSH_S", 60)
    await asyncio.sleep(0.02)  # the flusher is now in its 60 s sleep
    log.write({"n": 2})
    flusher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flusher
    assert [x["n"] for x in lines(stream)] == [1, 2]
