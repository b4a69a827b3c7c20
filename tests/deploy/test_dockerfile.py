import json
import re
from dataclasses import dataclass
from fnmatch import fnmatch

from .paths import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    op: str
    args: str


def _instructions() -> list[Instruction]:
    # Joins backslash continuations and drops comments: enough of the Dockerfile grammar to
    # check the image's shape without a Docker engine (none is available here).
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, args = line.partition(" ")
            found.append(Instruction(op.upper(), args.strip()))
    return found


def _stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for ins in _instructions():
        if ins.op == "FROM":
            stages.append([])
        stages[-1].append(ins)
    return stages


def _final() -> list[Instruction]:
    return _stages()[-1]


def _one(stage: list[Instruction], op: str) -> str:
    (args,) = [i.args for i in stage if i.op == op]
    return args


def test_image_is_multi_stage_and_copies_only_the_build_output() -> None:
    stages = _stages()
    assert len(stages) >= 2
    copies = [i.args for i in _final() if i.op == "COPY"]
    assert copies
    assert all(c.startswith("--from=") for c in copies)


def test_runtime_stage_has_no_shell_and_runs_nothing() -> None:
    final = _final()
    assert "distroless" in final[0].args
    assert not [i for i in final if i.op == "RUN"]
    assert "HEALTHCHECK" not in {i.op for i in final}


def test_runtime_user_is_a_numeric_non_root_uid() -> None:
    user = _one(_final(), "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid == "" or (gid.isdigit() and int(gid) > 0)


def test_entrypoint_is_exec_form_llm_sidecar_serve() -> None:
    entrypoint = json.loads(_one(_final(), "ENTRYPOINT"))
    cmd = json.loads(_one(_final(), "CMD"))
    assert entrypoint[0].endswith("/llm-sidecar")
    assert cmd == ["serve"]


def test_image_does_not_write_bytecode_and_exposes_both_ports() -> None:
    final = _final()
    env = " ".join(i.args for i in final if i.op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert set(_one(final, "EXPOSE").split()) == {"8700", "8701"}


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch(path, pattern) or fnmatch(path, pattern + "/*"):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_nothing_secret() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in ("pyproject.toml", "README.md", "sidecar/app.py"):
        assert not _ignored(path, patterns), path
    for path in (".venv/bin/python", ".git/config", "tests/deploy/paths.py", ".env"):
        assert _ignored(path, patterns), path
    build = _stages()[0]
    sources = [i.args.split()[:-1] for i in build if i.op == "COPY"]
    for source in (s for group in sources for s in group):
        assert (REPO / source).exists(), source


def test_image_installs_the_otel_extra_so_tracing_can_be_switched_on_by_env() -> None:
    runs = " ".join(i.args for i in _stages()[0] if i.op == "RUN")
    assert re.search(r"pip install [^&]*\"\.\[otel\]\"", runs)
