"""The processes tests start: where the repository and the venv's programs are, the
environment a child gets, and `readmission` command lines forked from a server that has
imported the platform once. A free port, start-then-wait and stop are readmission.processes's.

A test that starts a process, here or with `subprocess` directly, is marked `slow`:
tests/conftest.py fails one that is not (an audit hook counts process starts), and
`make test-fast` runs the others.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

from tests import slow_guard

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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


# --- `readmission` command lines, forked from a process that has imported the platform once

# A `readmission` process started as a fresh interpreter spends 3-5 s of CPU importing MLflow,
# pandas, scikit-learn and SQLAlchemy's PostgreSQL driver before it does anything, and chaos and
# the CLI's tests start about sixty. multiprocessing's fork server imports these once and forks
# each command line from there: every command is still a process of its own (its pid, its
# database sessions and MLflow client, a real SIGKILL ends it where it stands), running
# bin/readmission's `readmission.cli.app` on the argv and environment the test gives it and
# exiting through its atexit handlers as an interpreter does. What forking skips, the console
# script and the imports, is tested in tests/core/test_cli.py (python -m readmission) and
# tests/core/test_cli_imports.py.
PRELOAD = [
    "readmission.cli",
    "readmission.change_control",
    "readmission.extracts",
    "readmission.status",
    "readmission.training",
    "readmission.monitoring.realized",
    "readmission.release.live",
    "readmission.release.promotion",
    "readmission.release.production_changes",
    "readmission.release.webhooks",
    "tests.chaos.crash",
    "mlflow.store.model_registry.rest_store",
    "mlflow.store.tracking.rest_store",
    "psycopg",
    "rich.progress",
    "sqlalchemy.dialects.postgresql.psycopg",
]


@functools.cache
def _fork_server() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    # The server imports with the basic environment only: no test's settings stay in a module.
    with mock.patch.dict(os.environ, service_env(), clear=True):
        multiprocessing.forkserver.ensure_running()
    return context


def _command_line(
    args: list[str],
    env: dict[str, str],
    stdout: str,
    stderr: str,
    prepare: Callable[[], None] | None,
) -> None:
    """The forked process: bin/readmission's work on `args` and `env`, output to the files."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(ROOT)
    for fd, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = ["readmission", *args]
    if prepare is not None:
        prepare()
    try:
        from readmission.cli import app

        app()
    finally:
        atexit._run_exitfuncs()  # MLflow ends a run left open, as at an interpreter's exit


class CommandLine:
    """A running `readmission` command line: Popen's pid, poll, wait and communicate."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        merge_stderr: bool,
        prepare: Callable[[], None] | None,
    ) -> None:
        self.args = ["readmission", *args]
        sys.audit(slow_guard.FORK_EVENT, self.args)  # a process start
        self._stdout = _output_file()
        self._stderr = self._stdout if merge_stderr else _output_file()
        self._process = _fork_server().Process(
            target=_command_line, args=(args, env, self._stdout, self._stderr, prepare)
        )
        self._process.start()
        assert self._process.pid is not None  # started
        self.pid: int = self._process.pid
        self._ended: int | None = None  # the exit status, kept once the process is closed

    @property
    def returncode(self) -> int | None:
        """The exit status, -N if signal N ended it, None while it runs."""
        return self._ended if self._ended is not None else self._process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def communicate(self, timeout: float = 300) -> tuple[str, str | None]:
        """Wait for the end; its output, and its error output unless merged into the output."""
        self._process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        self._ended = self.returncode
        self._process.close()
        stdout = Path(self._stdout).read_text()
        stderr = None if self._stderr == self._stdout else Path(self._stderr).read_text()
        for path in {self._stdout, self._stderr}:
            os.unlink(path)
        return stdout, stderr


def _output_file() -> str:
    handle, path = tempfile.mkstemp(prefix="readmission-output-")
    os.close(handle)
    return path


def start_cli(
    *args: str,
    env: dict[str, str],
    merge_stderr: bool = False,
    prepare: Callable[[], None] | None = None,
) -> CommandLine:
    """`readmission *args` in a process of its own with exactly `env` (see service_env);
    `prepare` runs in it first (a picklable module-level callable)."""
    return CommandLine(list(args), env, merge_stderr, prepare)


def run_cli(
    *args: str,
    env: dict[str, str],
    merge_stderr: bool = False,
    prepare: Callable[[], None] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`start_cli` to its end: exit status, output and error output (None if merged)."""
    process = start_cli(*args, env=env, merge_stderr=merge_stderr, prepare=prepare)
    stdout, stderr = process.communicate(timeout)
    assert process.returncode is not None  # communicate returned: it has ended
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
