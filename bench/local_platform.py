"""The embedded default in a fresh temporary folder, for benchmarks on the real data set; the CLI
as a user runs it, and the real file cut by `encounter_id` into a trained first half and the
period after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

BIN = Path(sys.executable).parent


def use_local_platform(source: str, prefix: str, **settings: str) -> Path:
    """Point the settings at a new SQLite warehouse and local MLflow store reading `source`.

    Call before anything reads the settings; returns the folder (also the working directory).
    """
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(
        {
            "READMISSION_HOME": str(home),
            "DATA_SOURCE": str(Path(source).resolve()),
            "DATA_SHA256": "",
            "DATABASE_URL": "",
            "MLFLOW_TRACKING_URI": "",
            **settings,
        }
    )
    os.chdir(home)
    return home


def readmission(*args: str, **env: str) -> str:
    """The CLI as a user runs it; its output (exits on failure with the output shown)."""
    done = subprocess.run(
        [str(BIN / "readmission"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    if done.returncode:
        sys.exit(f"readmission {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class FirstHalf:
    trained: pd.DataFrame  # the first 50% by encounter_id: ingested and trained
    next_period: pd.DataFrame  # the next 15%, raw text, written to `next_csv`, not ingested
    next_csv: Path
    versions: list[str]  # the versions the first half trained, oldest first


def train_first_half(home: Path) -> FirstHalf:
    """The real file (DATA_SOURCE) cut by encounter_id, as a user cuts later extracts: the first
    50% ingested and trained through the CLI; the next 15% kept for serving and its outcomes."""
    from readmission.data.dataset import load

    data = load(os.environ["DATA_SOURCE"])  # raw text, in encounter_id order (resolved path)
    first, second = data.iloc[: len(data) // 2], data.iloc[len(data) // 2 : int(len(data) * 0.65)]
    first.to_csv(home / "first.csv", index=False)
    second.to_csv(home / "second.csv", index=False)
    readmission("ingest", "--source", str(home / "first.csv"))
    readmission("train")
    versions = [str(v["version"]) for v in json.loads(readmission("status", "--json"))["versions"]]
    return FirstHalf(first, second, home / "second.csv", versions)
