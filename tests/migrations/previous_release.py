"""The release before migrations (PREVIOUS_RELEASE), its own code extracted from git, for tests
that build a warehouse with it and upgrade it with this code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.services import ROOT, service_env

PREVIOUS_RELEASE = "555a3c1"  # main before issue 21: its schema made by create_all


def extract(target: Path) -> Path:
    """The previous release's src/ under `target` (CI runs in a full clone: history is there)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE, "src"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


def run(src: Path, cwd: Path, args: list[str], **env: str) -> str:
    """`python ARGS` with the previous release's `readmission` package; its output."""
    done = subprocess.run(
        [sys.executable, *args],
        # PYTHONPATH comes ahead of the venv's editable install of this code.
        env=service_env(PYTHONPATH=str(src), **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout
