"""The embedded default in a fresh temporary folder, for benchmarks on the real data set."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
