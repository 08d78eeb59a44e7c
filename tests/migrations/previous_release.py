"""Earlier releases, their own code extracted from git, for tests that build a warehouse or a
model version with them and go on with this code: the release before migrations
(PREVIOUS_RELEASE), and the one before the domain package was grouped by stage (FLAT_RELEASE)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from readmission import registry
from readmission.config import Settings
from readmission.schema import example_encounter
from tests.api.serving import running_api
from tests.services import ROOT, service_env

PREVIOUS_RELEASE = "555a3c1"  # main before issue 21: its schema made by create_all
FLAT_RELEASE = "bd99cde"  # main before issue 24's regroup: every module in one flat folder


def extract(target: Path, release: str = PREVIOUS_RELEASE) -> Path:
    """A release's src/ under `target`, the previous one by default (CI runs in a full clone:
    history is there)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", release, "src"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    target.mkdir(parents=True, exist_ok=True)
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


def promote_and_serve(settings: Settings, version: str, api_home: Path) -> None:
    """Promote `version`, made by an earlier release, and check bin/api of this code serves it:
    ready, that version, a 200 with a probability for an example encounter."""
    registry.promote(settings, version)
    api_home.mkdir()
    with running_api(settings, api_home) as api:
        api.wait_until(lambda: api.get("/ready").status_code == 200, f"version {version} served")
        assert api.served_version() == version
        scored = api.post("/predict", json=example_encounter())
        assert scored.status_code == 200, scored.text
        assert scored.json()["model_version"] == version
        assert 0 <= scored.json()["probability"] <= 1
