"""How long the `readmission` command line takes to answer: `--version`, `--help` and `status`.

Targets (issue 24): `--version` and `--help` under 0.5 s, `status` under 2 s on the demo's
warehouse. Each command runs `--runs` times as a user types it (a new process each time); the
script prints the fastest, the median and the slowest, next to an anchor measured in the same
run, a bare `python -c pass`, so that numbers taken on a loaded machine can still be compared.

Against a running platform (the demo writes its addresses to .readmission/demo.env):
    .venv/bin/python bench/cli_latency.py --env-file .readmission/demo.env
Without --env-file it starts one like the demo's, in a temporary folder: bin/mlflow-server on a
free port, a SQLite warehouse with a synthetic sample ingested in several batches, a version
trained on each (each with its run and tags), one of them promoted (the alias, the ledger).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from readmission.processes import free_port, running

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


def run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


@contextmanager
def own_platform(rows: int, versions: int) -> Iterator[dict[str, str]]:
    """A warehouse holding `rows` synthetic encounters in `versions` training batches, a version
    trained on each and the last promoted, and the MLflow server holding them; the server is
    stopped on exit, the folder left."""
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
        # Batches as in the demo, several; each becomes a version.
        "BATCH_SIZE": str(rows // (versions + 1)),
        "MIN_BATCH_ROWS": "100",
    }
    mlflow = [str(ROOT / "bin" / "mlflow-server")]
    with running(mlflow, home / "mlflow.log", env, f"{env['MLFLOW_TRACKING_URI']}/health", 300):
        sample = home / "sample.csv"
        readmission = str(BIN / "readmission")
        run([readmission, "sample", str(sample), "--rows", str(rows)], env)
        run([readmission, "ingest", "--source", str(sample)], env)
        run([readmission, "train", "--batches", str(versions)], env)
        run([readmission, "promote", str(versions), "--reason", "bench"], env)
        print(f"platform: {home} (warehouse SQLite, MLflow on port {port})", flush=True)
        yield env


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
    parser.add_argument(
        "--versions", type=int, default=3, help="Versions trained on the platform it starts."
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
        with own_platform(args.rows, args.versions) as env:
            results = {name: timed(command, env, args.runs) for name, command in commands.items()}

    anchor = statistics.median(results["anchor: python -c pass"])
    header = f"{'command':<26} {'min s':>7} {'median s':>9} {'max s':>7} {'x anchor':>9}"
    print(f"{header}  ({args.runs} runs; x anchor: the medians' ratio)")
    for name, seconds in results.items():
        median = statistics.median(seconds)
        print(
            f"{name:<26} {min(seconds):>7.3f} {median:>9.3f} {max(seconds):>7.3f} "
            f"{median / anchor:>9.1f}"
        )


if __name__ == "__main__":
    main()
