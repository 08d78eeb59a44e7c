"""How long the `readmission` command line takes to answer: `--version`, `--help` and `status`.

Targets (issue 24): `--version` and `--help` under 0.5 s, `status` under 2 s on the demo's
warehouse. Each command runs `--runs` times as a user types it (a new process each time); the
script prints the median and the fastest, next to an anchor measured in the same run, a bare
`python -c pass`, so that numbers taken on a loaded machine can still be compared.

Against a running platform (the demo writes its addresses to .readmission/demo.env):
    .venv/bin/python bench/cli_latency.py --env-file .readmission/demo.env
Without --env-file it starts its own: a SQLite warehouse with a synthetic sample ingested and
one trained version, and bin/mlflow-server on a free port, all in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (an `export ` prefix and quotes allowed), as a shell would source them."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip().removeprefix("export ")
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip("'\"")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


@contextmanager
def own_platform(rows: int) -> Iterator[dict[str, str]]:
    """A warehouse holding `rows` synthetic encounters and one trained version, and an MLflow
    server holding that version; stopped and left in a temporary folder on exit."""
    home = Path(tempfile.mkdtemp(prefix="cli-latency-"))
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "READMISSION_HOME": str(home),
        "DATABASE_URL": f"sqlite:///{home / 'warehouse.db'}",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
        "MLFLOW_PORT": str(port),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{home / 'mlflow-server.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(home / "mlartifacts"),
    }
    with (home / "mlflow.log").open("w") as log:
        server = subprocess.Popen(
            [str(ROOT / "bin" / "mlflow-server")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{env['MLFLOW_TRACKING_URI']}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log_path = home / "mlflow.log"
                    raise SystemExit(f"MLflow server did not start: see {log_path}") from None
                time.sleep(0.5)
        sample = home / "sample.csv"
        readmission = str(BIN / "readmission")
        run([readmission, "sample", str(sample), "--rows", str(rows)], env)
        run([readmission, "ingest", "--source", str(sample)], env)
        run([readmission, "train", "--batches", "1"], env)
        print(f"platform: {home} (warehouse SQLite, MLflow on port {port})", flush=True)
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: their own session
        server.wait(timeout=30)


def timed(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="Runs of each command.")
    parser.add_argument(
        "--env-file", type=Path, help="Settings of a running platform (e.g. the demo's)."
    )
    parser.add_argument(
        "--rows", type=int, default=3000, help="Synthetic encounters of the platform it starts."
    )
    args = parser.parse_args()

    readmission = str(BIN / "readmission")
    commands = {
        "anchor: python -c pass": [sys.executable, "-c", "pass"],
        "readmission --version": [readmission, "--version"],
        "readmission --help": [readmission, "--help"],
        "readmission status": [readmission, "status"],
    }
    if args.env_file:
        env = {**os.environ, **read_env_file(args.env_file)}
        results = {name: timed(command, env, args.runs) for name, command in commands.items()}
    else:
        with own_platform(args.rows) as env:
            results = {name: timed(command, env, args.runs) for name, command in commands.items()}

    anchor = statistics.median(results["anchor: python -c pass"])
    print(f"{'command':<26} {'median s':>9} {'fastest s':>10} {'x anchor':>9}  ({args.runs} runs)")
    for name, seconds in results.items():
        median = statistics.median(seconds)
        print(f"{name:<26} {median:>9.3f} {min(seconds):>10.3f} {median / anchor:>9.1f}")


if __name__ == "__main__":
    main()
