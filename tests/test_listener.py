"""What aiohttp's parser rejects on either port answers JSON, echoes nothing and closes."""

import asyncio
import json

import pytest
from conftest import FakeFactory, SidecarFactory, chain_env

SECRET = "sk-caller-secret-0123456789"
HEADS = {
    "bare LF in a header": f"Authorization: Bearer {SECRET}\r\nx-request-id: abc\nEvil: x\r\n",
    "NUL byte": f"Authorization: Bearer {SECRET}\r\nx-a: a\x00{SECRET}\r\n",
    "header over 8190 bytes": f"Authorization: Bearer {SECRET}{'a' * 9000}\r\n",
    "Content-Length with Transfer-Encoding": (
        f"Authorization: Bearer {SECRET}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
    ),
    "Content-Length: abc": f"x-api-key: {SECRET}\r\nContent-Length: abc{SECRET}\r\n",
}


async def _raw(port: int, head: str) -> tuple[bytes, bool]:
    """The whole answer, and whether the server closed the connection after it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # EOF: the sidecar hung up
    writer.close()
    return answer, reader.at_eof()


@pytest.mark.parametrize("port", ["proxy", "admin"])
@pytest.mark.parametrize("case", sorted(HEADS))
async def test_a_malformed_request_head_gets_json_without_any_echo_and_a_close(
    fake: FakeFactory,
    sidecar: SidecarFactory,
    caplog: pytest.LogCaptureFixture,
    case: str,
    port: str,
) -> None:
    a = await fake()
    sc = await sidecar(chain_env(a))
    number = int((sc.url if port == "proxy" else sc.admin).rsplit(":", 1)[1])
    answer, closed = await _raw(number, HEADS[case])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert SECRET.encode() not in answer and b"Evil" not in answer
    assert SECRET not in caplog.text
    assert closed
    assert a.seen == []
