"""The Prometheus configurations, checked by the real promtool: the file_sd one of the embedded
default and compose, and the Kubernetes one, whose pod relabelling promtool runs on sample pods."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.monitoring_files import (
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    PROMETHEUS_K8S_CONFIG,
    RULE_FILES,
    tool,
)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_promtool_accepts_the_config_with_its_rules_and_target_files() -> None:
    result = promtool("check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


@pytest.mark.slow
def test_promtool_accepts_the_config_with_the_compose_target_files(tmp_path: Path) -> None:
    copy = shutil.copytree(PROMETHEUS_DIR, tmp_path / "prometheus")
    shutil.rmtree(copy / "targets")
    shutil.copytree(PROMETHEUS_DIR / "compose-targets", copy / "targets")  # as compose mounts it
    result = promtool("check", "config", copy / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("directory", ["targets", "compose-targets"])
def test_the_api_target_file_names_one_host_and_port(directory: str) -> None:
    groups = json.loads((PROMETHEUS_DIR / directory / "api.json").read_text())
    targets = [target for group in groups for target in group["targets"]]
    assert len(targets) == 1
    host, _, port = targets[0].rpartition(":")
    assert host and port.isdigit()


def test_the_api_is_scraped_by_a_job_named_api_which_the_rules_select() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["api"]["file_sd_configs"][0]["files"] == ["targets/api.json"]


# The Debian promtool is built without Kubernetes service discovery, so kubernetes_sd_configs is
# swapped for static pods carrying the same __meta_kubernetes_* labels that role pod produces;
# promtool then applies the file's own relabel_configs to them.
def pod(address: str, name: str, phase: str = "Running", **annotations: str) -> dict[str, Any]:
    labels = {
        "__meta_kubernetes_namespace": "readmission",
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": name.rsplit("-", 1)[0],
    }
    labels.update(
        {
            f"__meta_kubernetes_pod_annotation_prometheus_io_{key}": value
            for key, value in annotations.items()
        }
    )
    return {"targets": [address], "labels": labels}


SAMPLE_PODS = [
    pod("10.42.0.7:8000", "api-7d9f", scrape="true", port="8000", path="/metrics"),
    pod("10.42.0.8", "api-5c2a", scrape="true", port="8000"),  # a pod without declared ports
    pod("10.42.0.9:9000", "exporter-1", scrape="true", port="9100", path="/probe", scheme="https"),
    pod("10.42.0.10:8000", "api-pending", phase="Pending", scrape="true", port="8000"),
    pod("10.42.0.11:5000", "mlflow-1", scrape="false", port="5000"),
    pod("10.42.0.12:8501", "ui-1"),
]


@pytest.fixture(scope="module")
def k8s_config_on_sample_pods(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = yaml.safe_load(PROMETHEUS_K8S_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    del job["kubernetes_sd_configs"]
    job["static_configs"] = SAMPLE_PODS
    config["rule_files"] = [str(PROMETHEUS_DIR / pattern) for pattern in config["rule_files"]]
    path = tmp_path_factory.mktemp("k8s") / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_promtool_accepts_the_kubernetes_config_apart_from_its_service_discovery(
    k8s_config_on_sample_pods: Path,
) -> None:
    result = promtool("check", "config", k8s_config_on_sample_pods)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


@pytest.mark.slow
def test_kubernetes_relabelling_keeps_annotated_running_pods_with_their_port_path_and_job(
    k8s_config_on_sample_pods: Path,
) -> None:
    # Static targets are discovered at once; promtool still waits out --timeout.
    result = promtool(
        "check", "service-discovery", "--timeout=2s", k8s_config_on_sample_pods, "kubernetes-pods"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kept = [target["labels"] for target in json.loads(result.stdout) if target["labels"]]
    scraped = {
        (t["__scheme__"], t["__address__"], t["__metrics_path__"]): (t["job"], t["pod"])
        for t in kept
    }
    assert scraped == {
        ("http", "10.42.0.7:8000", "/metrics"): ("api", "api-7d9f"),
        ("http", "10.42.0.8:8000", "/metrics"): ("api", "api-5c2a"),
        ("https", "10.42.0.9:9100", "/probe"): ("exporter", "exporter-1"),
    }
    assert all(t["namespace"] == "readmission" for t in kept)
