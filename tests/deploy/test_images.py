"""deploy.images: every third-party image reference of the deployment found, and pinned by the
digest the registry answers (a stand-in resolver here: no registry access on this machine)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import images, k8s

from .conftest import ROOT, run_compose


def fake_digest(ref: str) -> str:
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()


@pytest.mark.slow
def test_every_image_compose_and_kubernetes_run_is_a_reference_it_knows(
    compose_model: dict[str, Any], manifests: list[dict]
) -> None:
    """The mechanism misses none: compose's images, the rendered pods' and k3d's node image."""
    known = {reference.ref for reference in images.references()}
    running = {
        service["image"]
        for service in compose_model["services"].values()
        if not service["image"].startswith(images.OWN_IMAGES)
    }
    running |= {
        container["image"]
        for manifest in manifests
        for container in k8s.containers(manifest)
        if not container["image"].startswith(images.OWN_IMAGES)
    }
    running.add(yaml.safe_load((ROOT / "k3d" / "cluster.yaml").read_text())["image"])
    assert running <= known
    assert "python:3.11-slim-bookworm" in known  # the Dockerfiles' base images too


@pytest.mark.slow
def test_pin_appends_the_resolved_digest_and_the_files_still_work(
    tmp_path: Path, env_file: Path
) -> None:
    for folder in ("docker", "k8s", "k3d"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    shutil.copy(ROOT / "docker-compose.yaml", tmp_path / "docker-compose.yaml")
    before = images.references(tmp_path)
    assert before and not any(reference.pinned for reference in before)

    pinned = images.pin(tmp_path, resolve=fake_digest)
    after = images.references(tmp_path)
    assert len(after) == len(before) and all(reference.pinned for reference in after)
    assert {f"{r.ref}@{fake_digest(r.ref)}" for r in before} == {r.ref for r in after}
    assert len(pinned) == len({r.ref for r in before})
    assert images.pin(tmp_path, resolve=fake_digest) == []  # idempotent

    compose = run_compose(
        "config",
        "--format",
        "json",
        env_file=env_file,
        compose_file=tmp_path / "docker-compose.yaml",
    )
    assert compose.returncode == 0, compose.stderr
    assert f'"postgres:16.9-alpine@{fake_digest("postgres:16.9-alpine")}"' in compose.stdout
    dockerfile = (tmp_path / "docker" / "airflow.Dockerfile").read_text()
    assert (
        f"FROM python:3.11-slim-bookworm@{fake_digest('python:3.11-slim-bookworm')} AS build"
        in (dockerfile)
    )


def test_check_fails_until_every_reference_is_pinned(tmp_path: Path, capsys: Any) -> None:
    for folder in ("docker", "k8s", "k3d"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    shutil.copy(ROOT / "docker-compose.yaml", tmp_path / "docker-compose.yaml")
    assert images.main(["check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "TAG ONLY postgres:16.9-alpine  (docker-compose.yaml)" in out
    assert "without a digest: run `python3 -m deploy.images pin`" in out
    images.pin(tmp_path, resolve=fake_digest)
    assert images.main(["check", "--root", str(tmp_path)]) == 0
    assert "TAG ONLY" not in capsys.readouterr().out
