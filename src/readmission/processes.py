"""Child services of the tests and the benchmarks: a free port, start one in a session of its own,
wait until it answers, stop it with its children.

The one start-then-wait loop of the repository (tests/services.py and bench/serving.py use it):
a service that dies while starting fails at once with the end of its log, not at the timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

# Seconds between two readiness probes: a probe is one local HTTP request, so polling often costs
# little and every start returns within this much of the moment the service answers.
READY_POLL_SECONDS = 0.1
# At most this long for a SIGKILLed process group to be gone (a process in uninterruptible sleep
# acts on the signal only when it wakes).
KILL_SECONDS = 5.0


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(READY_POLL_SECONDS)
    raise TimeoutError(f"{url} did not come up in {timeout}s")


def terminate(process: subprocess.Popen) -> None:
    """SIGTERM to the process group of a process started with `start_new_session=True`: the
    process and its children (signalling only the parent would leave them holding their ports)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)


def reap(process: subprocess.Popen, deadline: float) -> None:
    """Wait until no process of the group runs, SIGKILL what is left of it at `deadline` (a
    `time.monotonic()` value). The group, not only its leader: a child can outlive the leader.
    (An Airflow scheduler did, in a test run: orphaned, it sat in multiprocessing's exit handler
    waiting for its idle LocalExecutor workers, holding its database connections.)"""
    if not group_ended(process, deadline):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        # SIGKILL is delivered at once but acted on when each process is next scheduled.
        group_ended(process, time.monotonic() + KILL_SECONDS)
    process.wait()


def group_ended(process: subprocess.Popen, until: float) -> bool:
    """Whether, by `until`, no process of `process`'s group runs; reaps the leader meanwhile (as
    a zombie it would not count, but it would stay one)."""
    while True:
        process.poll()
        if not group_alive(process.pid):
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: where PID 1 does not reap
    orphans (this sandbox's init does not), an orphan that has exited stays in its group as a
    zombie for good. Read from /proc where there is one; elsewhere every member counts."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, _, group = stat[stat.rindex(")") + 2 :].split(" ", 3)[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


def stop(process: subprocess.Popen, grace: float = 20) -> None:
    """Stop a process started with `start_new_session=True`, and its children: SIGTERM to its
    process group, SIGKILL to what is left of it after `grace` seconds."""
    terminate(process)
    reap(process, time.monotonic() + grace)


@contextmanager
def running(
    command: Sequence[str],
    log: Path,
    env: dict[str, str],
    ready_url: str | None = None,
    timeout: float = 120,
) -> Iterator[subprocess.Popen]:
    """`command` in a session of its own, its output in `log`, until the context ends; once
    `ready_url` answers 200 when one is given. The end of the log is printed if the start or the
    body fails, and the process and its children are stopped either way."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        if ready_url is not None:
            wait_for(ready_url, process, timeout)
        yield process
    except BaseException:
        print(f"--- {log.name}\n{log.read_text()[-5000:]}")
        raise
    finally:
        stop(process)
