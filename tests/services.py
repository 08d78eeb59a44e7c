"""The processes tests start: a free port, the environment a child gets, start-then-wait and stop.

A test that starts a process, here or with `subprocess` directly, is marked `slow`:
tests/conftest.py fails one that is not (an audit hook counts process starts), and
`make test-fast` runs the others.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What a subprocess inherits from the pytest process: what any program needs to run on this
# machine, nothing that says where a service or database is. Fixtures export AIRFLOW_*, MLFLOW_*,
# DATABASE_URL and the like into this process (the DAG tests must: Airflow reads them when
# imported); a child that inherited them would run on another test's databases.
INHERITED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TERM",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "CI",
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)


def service_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: the allow-listed basics, the venv's bin first on PATH,
    and `extra`, which must name every setting the child needs."""
    env = {k: v for k, v in os.environ.items() if k in INHERITED or k.startswith("LC_")}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(extra)
    return env


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not come up in {timeout}s")


def stop(process: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True`, and its children."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, 9)


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
