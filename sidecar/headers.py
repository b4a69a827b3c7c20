"""Which headers cross the sidecar, in which direction, on which route: the one table.

    direction          route                 what crosses
    -----------------  --------------------  ------------------------------------------------
    caller → upstream  chat, messages,       FORWARDED only; content-type is always JSON. An
                       embeddings            upstream may keep fewer (KEPT), and the caller's
                                             own `anthropic-*` only when it speaks that too
    caller → upstream  pass-through          everything but NEVER_FORWARDED
    upstream → caller  chat, messages,       the names starting with the upstream's
                       embeddings            RELAYED prefixes; retry-after on an error (when
                                             it parses: the chain decides)
    upstream → caller  pass-through          everything but NOT_RELAYED
    either way         every route           never a HOP_BY_HOP header, nor any header the
                                             sender's own `Connection` header names

The credential of an upstream request is always the backend's own (README "Kinds"): the
caller's `authorization`, `x-api-key` and `api-key` never cross. Names are lower-cased on the
way through, so that merging with the sidecar's own headers replaces rather than doubles one.
"""

from collections.abc import Iterable, Mapping
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

# Headers aiohttp computes itself or that must never cross the sidecar (RFC 9110 §7.6.1).
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "host",
    }
)

FORWARDED: Final = frozenset(
    {"accept", "user-agent", "openai-beta", "anthropic-version", "anthropic-beta"}
)

# Credentials and cookies stay here; the sidecar sets its own request id; the chain header is
# the sidecar's; accept-encoding is the HTTP client's (sidecar.http1 decompresses what it asks for).
NEVER_FORWARDED: Final = HOP_BY_HOP | {
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "x-request-id",
    "x-sidecar-chain",
    "accept-encoding",
}

# Ours replace them, or they are the upstream's business: cookies are credentials.
NOT_RELAYED: Final = HOP_BY_HOP | {"set-cookie", "x-request-id", "date", "server"}

# Of FORWARDED, what an upstream of another wire keeps (beside its own-dialect prefix).
KEPT: Final[Mapping[str, frozenset[str]]] = {
    "anthropic": frozenset({"accept", "user-agent", "content-type"}),
    "gemini": frozenset({"user-agent"}),
}

# Upstream → caller on the routes the sidecar understands, by the upstream's wire dialect.
RELAYED: Final[Mapping[str, tuple[str, ...]]] = {
    "openai": ("x-ratelimit-",),
    "anthropic": ("anthropic-ratelimit-", "request-id"),
}


def hop_by_hop(headers: Mapping[str, str]) -> frozenset[str]:
    """HOP_BY_HOP plus every field a `Connection` header names: those are hop-by-hop too."""
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        # multidicts (aiohttp's server, sidecar.http1): a case-blind lookup, not a walk over all.
        values: Iterable[str] = headers.getall("connection", ())
    else:
        values = (v for k, v in headers.items() if k.lower() == "connection")
    named = {name.strip().lower() for v in values for name in v.split(",")}
    return HOP_BY_HOP | named if named else HOP_BY_HOP


def to_upstream(headers: Mapping[str, str], *, passthrough: bool) -> dict[str, str]:
    """The caller's headers that may go upstream (before the backend adds its own)."""
    hop = hop_by_hop(headers)
    if passthrough:
        never = NEVER_FORWARDED | hop
        return {k.lower(): v for k, v in headers.items() if k.lower() not in never}
    forwarded = FORWARDED if hop is HOP_BY_HOP else FORWARDED - hop
    out = {low: v for k, v in headers.items() if (low := k.lower()) in forwarded}
    out["content-type"] = "application/json"
    return out


def kept_by(headers: Mapping[str, str], kept: frozenset[str], prefix: str = "") -> dict[str, str]:
    """What a kind keeps of the forwarded caller headers: the `kept` names and, if given, every
    name starting with `prefix`."""
    return {k: v for k, v in headers.items() if k in kept or (prefix and k.startswith(prefix))}


def relayed(headers: Mapping[str, str], wire: str) -> dict[str, str]:
    """Upstream → caller on the routes the sidecar understands."""
    prefixes = RELAYED[wire]
    out = {k: v for k, v in headers.items() if k.lower().startswith(prefixes)}
    if out:  # the Connection header is looked at only when there is something it could name
        hop = hop_by_hop(headers)
        out = {k: v for k, v in out.items() if k.lower() not in hop}
    return out


def passed_through(headers: Mapping[str, str]) -> dict[str, str]:
    """Upstream → caller on pass-through routes."""
    dropped = NOT_RELAYED | hop_by_hop(headers)
    return {k.lower(): v for k, v in headers.items() if k.lower() not in dropped}
