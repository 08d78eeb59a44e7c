"""The processes tests start: where the repository and the venv's programs are, and the
environment a child gets. A free port, start-then-wait and stop are readmission.processes's.

A test that starts a process, here or with `subprocess` directly, is marked `slow`:
tests/conftest.py fails one that is not (an audit hook counts process starts), and
`make test-fast` runs the others.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
