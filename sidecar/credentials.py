"""Credentials read from files and re-read when the file changes (a mounted Kubernetes Secret).

The kubelet updates a mounted Secret atomically: it writes the new keys into a fresh timestamped
directory, then renames the `..data` symlink onto it, so `KEY -> ..data/KEY` resolves to a new
inode from one instant to the next. `FileCredential.check()` stats the path, following symlinks,
and re-reads it when (device, inode, mtime, size) differ from the last look; `watch` calls it every
`POLL_INTERVAL_S`.

Why a poll and not inotify (`watchfiles`): a watch on the file stays on the old inode after the
swap and never fires again, so a watcher has to follow the directory and re-resolve anyway; one
stat per second per file costs nothing measurable, needs no dependency, and works on every volume
type (NFS, FUSE, overlay) and under inotify watch limits. The kubelet itself takes up to its sync
period (about a minute) to propagate a change, so a second more is noise.

Rules (at each poll)

    the file                                     value     counted
    -------------------------------------------  --------  ---------------------------------
    stat unchanged                               kept      nothing
    changed, readable, non-empty, a new value    replaced  success
    changed, the same value (touched, re-synced) kept      nothing
    changed, missing, unreadable, empty, binary  kept      failure, once per change; logged
                                                           with the reason, never the value

A value is the file's UTF-8 text with trailing newlines stripped (editors and `echo` add one); a
line break left inside it could not travel in an HTTP header, so such a file is refused.
"""

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("sidecar.credentials")

POLL_INTERVAL_S = 1.0
# A credential is a few hundred bytes; the cap keeps a mistaken path (a log, /dev/zero) harmless.
MAX_BYTES = 65_536

Signature = tuple[int, int, int, int]


class UnusableSecret(Exception):
    """Why a credential file cannot be used. The message never contains the file's content."""


def read_secret(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UnusableSecret(f"{path} does not exist") from None
    except IsADirectoryError:
        raise UnusableSecret(f"{path} is a directory") from None
    except OSError as e:
        raise UnusableSecret(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    if len(raw) > MAX_BYTES:
        raise UnusableSecret(f"{path} is larger than {MAX_BYTES} bytes")
    try:
        value = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise UnusableSecret(f"{path} is not UTF-8 text") from None
    if not value.strip():
        raise UnusableSecret(f"{path} is empty")
    if "\n" in value or "\r" in value:
        raise UnusableSecret(f"{path} holds more than one line")
    return value


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class FileCredential:
    """The current value of one credential file. `owner` names it in logs and metrics: a backend
    name, or `inbound` for the sidecar's own token."""

    def __init__(
        self,
        path: Path,
        owner: str,
        *,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = path
        self.owner = owner
        # Settable later: the settings read the file before the app has its metrics.
        self.on_reload = on_reload
        self._seen = _signature(path)
        self._value = read_secret(path)

    @property
    def value(self) -> str:
        return self._value

    def check(self) -> bool | None:
        """One poll. None: nothing new; True: a new value is in use; False: a bad change."""
        seen = _signature(self.path)
        if seen is not None and seen == self._seen:
            return None
        if seen is None and self._seen is None:
            return None  # still missing: counted once, when it went
        self._seen = seen
        try:
            value = read_secret(self.path)
        except UnusableSecret as e:
            log.error(
                "credential file of %s changed but cannot be used, keeping the previous value: %s",
                self.owner,
                e,
            )
            self._report(False)
            return False
        if value == self._value:
            return None
        self._value = value
        log.info("credential of %s reloaded from %s", self.owner, self.path)
        self._report(True)
        return True

    def _report(self, ok: bool) -> None:
        if self.on_reload is not None:
            self.on_reload(ok)


async def watch(credentials: Sequence[FileCredential], interval_s: float = POLL_INTERVAL_S) -> None:
    """Poll every credential file until cancelled."""
    if not credentials:
        return
    while True:
        await asyncio.sleep(interval_s)
        # In a worker thread: a stat on a hung network mount must not stall the proxy.
        await asyncio.to_thread(_check_all, credentials)


def _check_all(credentials: Sequence[FileCredential]) -> None:
    for credential in credentials:
        credential.check()
