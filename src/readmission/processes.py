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
from contextlib import contextmanager
from pathlib import Path

import httpx

# Seconds between two readiness probes: a probe is one local HTTP request, so polling often costs
# little and every start returns within this much of the moment the service answers.
READY_POLL_SECONDS = 0.1


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


def stop(process: subprocess.Popen, grace: float = 20) -> None:
    """Stop a process started with `start_new_session=True`, and its children: SIGTERM to its
    process group, SIGKILL after `grace` seconds (signalling only the parent would leave its
    children holding their ports)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            process.wait()


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
