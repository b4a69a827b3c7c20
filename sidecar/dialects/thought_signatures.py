"""Gemini thought signatures, carried through dialects that have no field for them.

Gemini 3 rejects a follow-up turn whose `functionCall` part lacks the `thoughtSignature` the
model gave it (400 "Function call is missing a thought_signature"). The sidecar's pivot carries
it as `tool_calls[].extra_content.google.thought_signature`, the convention of Google's own
OpenAI-compatible endpoint, so OpenAI callers send it back as they got it.

Anthropic `tool_use` blocks have no room for it, and an unknown field there is a 400 at Claude.
What Anthropic callers always send back unchanged is the block's `id`: the signature rides in
it, `{call id}__thought__{signature}`, the signature's UTF-8 in unpadded URL-safe base64 so that
the id keeps to the `[A-Za-z0-9_-]` Claude allows (a chain that falls back from Gemini to Claude
mid-conversation keeps working). On the way back in, the id is split again: the pivot sees the
short id and the signature in `extra_content`.
"""

import base64
import binascii
from typing import Any, Final

JSON = dict[str, Any]

SEPARATOR: Final = "__thought__"


def signature_of(call: Any) -> str | None:
    """The thought signature an OpenAI tool call (or tool-call fragment) carries, if any."""
    if not isinstance(call, dict):
        return None
    google = (call.get("extra_content") or {}).get("google")
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def extra_content(signature: str) -> JSON:
    return {"google": {"thought_signature": signature}}


def tool_use_id(call_id: Any, signature: str | None) -> Any:
    """An Anthropic `tool_use` id that carries `signature` (the id itself when there is none)."""
    if signature is None or not isinstance(call_id, str):
        return call_id
    encoded = base64.urlsafe_b64encode(signature.encode()).rstrip(b"=").decode()
    return f"{call_id}{SEPARATOR}{encoded}"


def split_tool_use_id(value: Any) -> tuple[Any, str | None]:
    """(call id, signature) of an Anthropic `tool_use` id; an id that carries none is itself."""
    if not isinstance(value, str) or SEPARATOR not in value:
        return value, None
    call_id, _, encoded = value.partition(SEPARATOR)
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
        if not raw:
            raise ValueError
        return call_id, raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        # Not one of ours: an id is opaque, so it stays whole.
        return value, None
