"""readmission.processes.stop ends a service's whole process group, children that outlive the
leader included, and does not wait for members that have already exited (zombies)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from readmission import processes

pytestmark = pytest.mark.slow

# A child that ignores SIGTERM, started by a leader that dies of it: the shape of an Airflow
# scheduler left behind by `airflow standalone`.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)
LEADER = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {STUBBORN!r}], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(600)
"""

# A leader whose child exits on its own after the leader is gone: an orphan.
ORPHAN = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
print(child.pid, flush=True)
"""


def running_state(pid: int) -> str | None:
    """The process's state letter from /proc, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat[stat.rindex(")") + 2]


def start(code: str) -> tuple[subprocess.Popen, int]:
    leader = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    leader.stdout.close()
    return leader, child


def test_stop_ends_a_child_that_ignores_sigterm_after_its_leader_exits() -> None:
    leader, child = start(LEADER)
    processes.stop(leader, grace=2)
    assert leader.returncode == -15  # the leader died of SIGTERM; its child ignored it
    assert running_state(child) in (None, "Z"), f"child {child} still runs"


def test_a_group_whose_only_members_have_exited_is_not_alive() -> None:
    leader, child = start(ORPHAN)
    leader.wait()
    deadline = time.monotonic() + 30
    while running_state(child) not in (None, "Z"):
        assert time.monotonic() < deadline, f"child {child} did not exit"
        time.sleep(0.05)
    # The orphan may stay a zombie in the group (where PID 1 does not reap): that is not alive.
    assert not processes.group_alive(leader.pid)
