"""Secrets never leave the sidecar: configured keys, and key-shaped strings upstreams echo back."""

import re

REDACTED = "[REDACTED]"
# Upstreams echo keys back in error bodies, often partly masked ("sk-abc1***wxyz"): anything
# key-shaped goes, as does the exact value of every configured secret. Google's OAuth access
# tokens (`ya29.`, Vertex AI's credential) are fetched at run time, so no list can name them.
_KEY_SHAPED = re.compile(
    rb"\bsk-[-_A-Za-z0-9*]{8,}|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bya29\.[-_A-Za-z0-9.]{8,}"
)


class Redactor:
    def __init__(self, secrets: list[str]) -> None:
        self._known = {s for s in secrets if len(s) >= 4}
        self._secrets = self._ordered()

    def add(self, secret: str) -> None:
        """A secret loaded at run time (a rotated key file); the old ones stay redacted too."""
        if len(secret) >= 4 and secret not in self._known:
            self._known.add(secret)
            # Replaced whole: `bytes` may be iterating the old list on another thread.
            self._secrets = self._ordered()

    def _ordered(self) -> list[bytes]:
        # Longest first, so a secret that contains another is removed whole.
        return [s.encode() for s in sorted(self._known, key=len, reverse=True)]

    def bytes(self, data: bytes) -> bytes:
        for s in self._secrets:
            if s in data:
                data = data.replace(s, REDACTED.encode())
        return _KEY_SHAPED.sub(REDACTED.encode(), data)

    def text(self, data: str) -> str:
        return self.bytes(data.encode()).decode("utf-8", "replace")
