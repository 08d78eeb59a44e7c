"""The Dockerfiles and .dockerignore, read statically (no Docker engine here): entrypoints, users,
pins, and that every file a build copies is in the build context."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import ROOT, by_kind

DOCKER = ROOT / "docker"
ENTRYPOINTS = {"api": "bin/api", "ui": "bin/ui", "mlflow": "bin/mlflow-server"}
EXTRAS = {"api": "api", "ui": "ui", "airflow": "airflow"}
NEVER_IN_CONTEXT = [
    ".env",
    ".venv/bin/python",
    ".git/HEAD",
    ".readmission/warehouse.db",
    "test-artifacts/x.png",
    "dataset_diabetes.zip",
    "diabetic_data.csv",
    "tests/conftest.py",
    "src/readmission/__pycache__/config.cpython-311.pyc",
]


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [arg for kw, arg in self.instructions if kw == keyword]
        return values[-1] if values else None

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], rest.split()[0])
            stages.append(Stage(base))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def dockerfile(name: str) -> list[Stage]:
    return parse_dockerfile(DOCKER / f"{name}.Dockerfile")[1]


def copy_sources(stage: Stage) -> list[str]:
    """Sources of the COPY instructions that read the build context (not --from=stage)."""
    sources = []
    for argument in stage.all("COPY"):
        words = shlex.split(argument)
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        sources += words[:-1]
    return sources


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex on a relative path."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex + "$")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            result = not negated
    return result


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def first_group(pattern: str, text: str) -> str:
    """The first group of `pattern`'s first match in `text`, which must have one."""
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in {text!r}"
    return found[1]


def lock_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


@pytest.mark.parametrize("image", sorted(ENTRYPOINTS))
def test_image_runs_the_entrypoint_the_tests_run_natively(image: str) -> None:
    final = dockerfile(image)[-1]
    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint is not None
    assert json.loads(entrypoint) == [ENTRYPOINTS[image]]
    assert final.last("CMD") is None
    assert final.last("WORKDIR") == "/app"
    script = ROOT / ENTRYPOINTS[image]
    assert script.exists() and script.stat().st_mode & 0o111, f"{script} is not executable"
    assert any(ENTRYPOINTS[image] in source or source == "bin" for source in copy_sources(final)), (
        f"{image} does not copy {ENTRYPOINTS[image]}"
    )


@pytest.mark.slow
def test_compose_and_kubernetes_keep_the_image_entrypoints(
    compose_model: dict, manifests: list[dict]
) -> None:
    for service in ENTRYPOINTS:
        assert compose_model["services"][service].get("entrypoint") is None
        assert compose_model["services"][service].get("command") is None
    for name in ("api", "ui"):
        container = by_kind(manifests, "Deployment")[name]["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert "command" not in container and "args" not in container


@pytest.mark.parametrize("image", ["api", "ui", "mlflow"])
def test_services_listen_on_all_interfaces_inside_their_container(image: str) -> None:
    env = " ".join(dockerfile(image)[-1].all("ENV"))
    prefix = {"api": "API", "ui": "UI", "mlflow": "MLFLOW"}[image]
    assert f"{prefix}_HOST=0.0.0.0" in env


@pytest.mark.parametrize("image", ["api", "ui", "mlflow", "airflow"])
def test_images_run_as_a_non_root_user(image: str) -> None:
    user = dockerfile(image)[-1].last("USER")
    assert user and user.split(":")[0] not in ("root", "0"), f"{image} runs as {user}"


@pytest.mark.slow
def test_serving_images_use_the_numeric_user_kubernetes_runs_them_as(manifests: list[dict]) -> None:
    for image in ("api", "ui"):
        user = dockerfile(image)[-1].last("USER")
        assert user is not None, f"{image} names no USER"
        uid = int(user.split(":")[0])
        pod = by_kind(manifests, "Deployment")[image]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == uid


@pytest.mark.parametrize("image", ["api", "ui", "mlflow", "airflow"])
def test_base_images_are_pinned_slim_images(image: str) -> None:
    for stage in dockerfile(image):
        tag = stage.base.partition(":")[2]
        assert tag and re.search(r"\d", tag), f"{image}: {stage.base} is not pinned"
        assert "slim" in tag, f"{image}: {stage.base} is not a slim image"


@pytest.mark.parametrize("image", ["api", "ui", "airflow"])
def test_dependencies_come_from_the_lock_with_the_images_extra(image: str) -> None:
    commands = " ".join(run for stage in dockerfile(image) for run in stage.all("RUN"))
    assert "--frozen" in commands and f"--extra {EXTRAS[image]}" in commands
    assert "--no-dev" in commands


def test_every_package_of_every_image_comes_from_the_lock_hash_checked() -> None:
    """Issue 22: the MLflow image pip-installed three pinned packages (their dependencies
    unpinned), the Airflow image dropped the lock's hashes. uv sync --frozen checks the lock's
    hashes; pip does in --require-hashes mode. No image pip-installs a package by name but uv."""
    mlflow = " ".join(run for stage in dockerfile("mlflow") for run in stage.all("RUN"))
    assert "uv sync --frozen --only-group mlflow-server --no-install-project" in mlflow
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    assert f"mlflow[auth]=={lock_version('mlflow')}" in groups["mlflow-server"]
    airflow = " ".join(run for stage in dockerfile("airflow") for run in stage.all("RUN"))
    assert "--no-hashes" not in airflow
    assert "pip install --no-cache-dir --require-hashes -r /tmp/build/requirements.txt" in airflow
    for image in ("api", "ui", "mlflow", "airflow"):
        for stage in dockerfile(image):
            for run in stage.all("RUN"):
                for install in re.findall(r"pip install ([^&]*)", run):
                    words = [w for w in install.split() if not w.startswith("-")]
                    named = [w for w in words if "==" in w or w.isidentifier()]
                    assert named in ([], [f"uv=={UV_PIN}"]), f"{image}: pip install {install}"


UV_PIN = "0.13.9"


def test_pinned_versions_match_the_lock() -> None:
    airflow_base = dockerfile("airflow")[-1].base
    assert airflow_base.startswith(f"apache/airflow:slim-{lock_version('apache-airflow')}-")
    uv_pins = {
        first_group(r"uv==([\d.]+)", run)
        for name in ("api", "ui", "airflow", "mlflow")
        for stage in dockerfile(name)
        for run in stage.all("RUN")
        if "uv==" in run
    }
    assert uv_pins == {UV_PIN}


def test_airflow_image_bakes_in_the_dags() -> None:
    final = dockerfile("airflow")[-1]
    assert any(shlex.split(c)[-2:] == ["dags/", "/opt/airflow/dags/"] for c in final.all("COPY"))
    assert (ROOT / "dags").is_dir()


@pytest.mark.parametrize("image", ["api", "ui", "mlflow", "airflow"])
def test_every_file_a_build_copies_is_in_the_build_context(image: str) -> None:
    patterns = dockerignore()
    for stage in dockerfile(image):
        for source in copy_sources(stage):
            path = ROOT / source.rstrip("/")
            assert path.exists(), f"{image} copies {source}, which does not exist"
            files = (
                [path]
                if path.is_file()
                else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            )
            assert files, f"{image} copies the empty {source}"
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                assert not ignored(relative, patterns), f"{image} needs {relative}: .dockerignore"


@pytest.mark.parametrize("path", NEVER_IN_CONTEXT)
def test_secrets_state_and_data_never_reach_the_build_context(path: str) -> None:
    assert ignored(path, dockerignore())


def test_the_dockerignore_matcher_follows_dockers_rules() -> None:
    patterns = ["*", "!src", "**/__pycache__", "!keep/**/*.md"]
    assert ignored("README.md", patterns) and ignored("docs/a.md", patterns)
    assert not ignored("src/a/b.py", patterns)
    assert ignored("src/a/__pycache__/b.pyc", patterns)
    assert not ignored("keep/x/y.md", patterns) and ignored("keep/x/y.py", patterns)


def python_version(image: str) -> str:
    """The Python of an image's final stage and of every build stage, as `3.11`."""
    versions = {
        first_group(r"python:?(\d+\.\d+)", stage.base)  # python:3.11-slim, ...-python3.11
        for stage in dockerfile(image)
    }
    assert len(versions) == 1, f"{image} mixes Pythons: {versions}"
    return versions.pop()


def test_training_and_serving_images_run_the_python_of_the_lock() -> None:
    """A model pickled in the Airflow image is loaded in the API image: same Python, and (one
    resolution in uv.lock, tests/deploy/test_mlflow_auth.py) the same numpy/scipy/scikit-learn."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert lock["requires-python"] == "==3.11.*" and "resolution-markers" not in lock
    for image in ("airflow", "api", "ui", "mlflow"):
        assert python_version(image) == "3.11", image
