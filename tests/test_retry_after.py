from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.retry_after import parse_retry_after

NOW = 1_700_000_000.0


def http_date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "5"}, 5.0),
        ({"Retry-After": "5"}, 5.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": " 7 "}, 7.0),
        ({"retry-after": "86400000"}, 86400000.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "20"}, 0.02),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": http_date(NOW + 30)}, 30.0),
        ({"retry-after": http_date(NOW - 30)}, 0.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),
        ({"retry-after": "Tuesday, 14-Nov-23 22:13:50 GMT"}, 30.0),  # RFC 850, obsolete
        ({"retry-after": "Tue Nov 14 22:13:50 2023"}, 30.0),  # asctime, no zone: GMT
    ],
)
def test_parses_delay(headers: dict[str, str], seconds: float) -> None:
    assert parse_retry_after(headers, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after-ms": "-5", "retry-after": "2"}, 2.0),
        ({"retry-after-ms": "inf", "retry-after": "2"}, 2.0),
        ({"retry-after-ms": "", "retry-after": http_date(NOW + 4)}, 4.0),
    ],
)
def test_invalid_milliseconds_fall_back_to_retry_after(
    headers: dict[str, str], seconds: float
) -> None:
    assert parse_retry_after(headers, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "soon",
        "-5",
        "+5",
        "5s",
        "1e3",
        "1_000",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1" * 400,  # overflows a float to inf
        "Tue, 32 Nov 2023 22:13:50 GMT",
        "Tue, 14 Nov 99999 22:13:50 GMT",
    ],
)
def test_ignores_garbage(value: str) -> None:
    assert parse_retry_after({"retry-after": value}, now=NOW) is None
    assert parse_retry_after({"retry-after-ms": value}, now=NOW) is None


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/json"}])
def test_absent_header_gives_none(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers, now=NOW) is None


def test_reads_aiohttp_case_insensitive_headers() -> None:
    headers: Mapping[str, str] = CIMultiDictProxy(CIMultiDict({"RETRY-AFTER": "3"}))
    assert parse_retry_after(headers, now=NOW) == 3.0
