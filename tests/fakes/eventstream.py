"""A minimal AWS event-stream encoder (application/vnd.amazon.eventstream) for fake Bedrock.

botocore only decodes these frames, so tests write their own. Layout (AWS event stream encoding): a
12-byte prelude (total length, headers length, CRC32 of those 8 bytes), string headers, the JSON
payload, then a CRC32 of everything before it. All integers are big-endian.
"""

import binascii
import struct
from typing import Any

import orjson

STRING_HEADER = 7


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    encoded_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + encoded_headers + payload
    return body + struct.pack(">I", binascii.crc32(body))


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    headers = {
        ":message-type": "event",
        ":event-type": event_type,
        ":content-type": "application/json",
    }
    return encode_message(headers, orjson.dumps(payload))


def encode_exception(exception_type: str, payload: dict[str, Any]) -> bytes:
    headers = {
        ":message-type": "exception",
        ":exception-type": exception_type,
        ":content-type": "application/json",
    }
    return encode_message(headers, orjson.dumps(payload))


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + struct.pack(">BH", STRING_HEADER, len(raw_value))
        + raw_value
    )
