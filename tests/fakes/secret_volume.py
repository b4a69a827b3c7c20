"""A mounted Secret updated the way the kubelet's atomic writer does it.

Layout: `KEY -> ..data/KEY`, `..data -> ..<timestamp>/`. An update writes a new timestamped
directory, points `..data_tmp` at it, renames `..data_tmp` over `..data` (one atomic step) and
then removes the old directory.
"""

import itertools
import os
import shutil
from pathlib import Path

_counter = itertools.count()


class SecretVolume:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def write(self, files: dict[str, bytes | str]) -> None:
        stamp = self.root / f"..2026_12_07_00_00_00.{next(_counter)}"
        stamp.mkdir()
        for key, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            (stamp / key).write_bytes(data)
        data_link = self.root / "..data"
        old = Path(os.readlink(data_link)) if data_link.is_symlink() else None
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp.name)
        tmp.rename(data_link)
        for key in files:
            link = self.root / key
            if not link.is_symlink():
                link.symlink_to(Path("..data") / key)
        if old is not None:
            shutil.rmtree(self.root / old)
