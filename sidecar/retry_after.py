"""How long an upstream asked us to wait, from its response headers.

Rules

    header           form                                   result
    ---------------  -------------------------------------  ---------------------------------
    retry-after-ms   DIGITS[.DIGITS] milliseconds           ms / 1000; preferred when valid
    retry-after      DIGITS[.DIGITS] seconds                seconds
    retry-after      HTTP-date (RFC 9110 §5.6.7, 3 forms)   seconds from `now`; past → 0.0
    either           anything else, or a non-finite number  ignored (next header, else None)

Only plain non-negative decimals count as numbers: Python's float() would also accept "-5",
"nan", "inf", "1e3" and "1_000", none of which an upstream means as a delay.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    millis = _number(_header(headers, "retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = _header(headers, "retry-after")
    if value is None:
        return None
    seconds = _number(value)
    return seconds if seconds is not None else _seconds_until_date(value, now)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's CIMultiDictProxy matches any case; a plain dict needs the canonical spelling.
    value = headers.get(name)
    if value is None:
        value = headers.get("-".join(part.capitalize() for part in name.split("-")))
    return value.strip() if value is not None else None


def _number(value: str | None) -> float | None:
    if value is None or not _DECIMAL.fullmatch(value):
        return None
    number = float(value)
    # A few hundred digits overflow to inf: no usable delay.
    return number if math.isfinite(number) else None


def _seconds_until_date(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP-dates are always GMT; the asctime form carries no zone at all.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
