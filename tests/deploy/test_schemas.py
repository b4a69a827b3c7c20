import hashlib
import re

import pytest

from .paths import require_schemas

_ROW = re.compile(r"^- `(?P<name>[\w.]+\.json)`: SHA-256 `(?P<sha>[0-9a-f]{64})`", re.M)


def test_vendored_schemas_are_the_upstream_files_the_readme_names() -> None:
    schemas = require_schemas()
    listed = {m["name"]: m["sha"] for m in _ROW.finditer((schemas / "README.md").read_text())}
    found = {p.name: p for p in schemas.rglob("*.json")}
    assert listed.keys() == found.keys()
    for name, sha in listed.items():
        assert hashlib.sha256(found[name].read_bytes()).hexdigest() == sha, name


@pytest.mark.parametrize(
    "licence", ["datreeio-CRDs-catalog", "grafana-foundation-sdk", "prometheus-operator"]
)
def test_every_vendored_source_ships_its_licence(licence: str) -> None:
    assert (require_schemas() / "LICENSES" / f"{licence}.LICENSE.txt").stat().st_size > 0
