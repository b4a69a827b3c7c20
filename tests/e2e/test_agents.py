"""The harness itself: a CLI run that hangs fails the test and leaves no process behind."""

import functools
import os
from pathlib import Path

import pytest
from conftest import wait_until
from e2e.agents import run


async def test_a_hung_run_fails_and_its_whole_process_group_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # A child in the background too, as a CLI's helper would be.
    script = f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; wait"
    with pytest.raises(pytest.fail.Exception, match=r"did not finish within 0\.5 s"):
        await run(["/bin/bash", "-c", script], {"PATH": "/usr/bin:/bin"}, tmp_path, 0.5)
    for pid in map(int, pids.read_text().split()):
        # A killed orphan lingers as a zombie until init reaps it.
        await wait_until(functools.partial(_gone, pid), 5.0, f"process {pid} gone")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_finished_run_reports_its_exit_and_output(tmp_path: Path) -> None:
    done = await run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], {}, tmp_path)
    assert (done.rc, done.stdout, done.stderr) == (3, "out\n", "err\n")
