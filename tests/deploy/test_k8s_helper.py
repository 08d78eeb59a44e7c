"""deploy.k8s without a cluster: rendering (real kustomize), image overrides, apply order, the
rollout rule and the wait loop against fake API objects (no cluster can run here)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError

from deploy import k8s

from .conftest import ROOT, by_kind, env_values


def deployment(
    name: str = "api",
    *,
    replicas: int = 2,
    generation: int = 2,
    observed: int = 2,
    updated: int = 2,
    total: int = 2,
    available: int = 2,
    conditions: list[dict] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "readmission", "generation": generation},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeCluster:
    """Records applies; serves Deployment states from scripted sequences, and pods."""

    def __init__(self, states: dict[str, list[dict]], pods: list[dict] | None = None) -> None:
        self.states = states
        self.applied: list[str] = []
        self.autoscaled: list[str] = []
        self.pod_list = pods or []

    def apply(self, manifest: dict) -> None:
        self.applied.append(k8s.describe(manifest))

    def apply_autoscaled(self, manifest: dict) -> None:
        self.applied.append(k8s.describe(manifest))
        self.autoscaled.append(k8s.describe(manifest))

    def deployment(self, namespace: str, name: str) -> dict:
        sequence = self.states[name]
        return sequence.pop(0) if len(sequence) > 1 else sequence[0]

    def pods(self, namespace: str, selector: dict[str, str]) -> list[dict]:
        return [p for p in self.pod_list if p["metadata"]["labels"] == selector]


@pytest.mark.slow
def test_stock_kubectl_kustomize_builds_the_overlay_after_prepare(
    render_tree: Path, manifests: list[dict], tmp_path: Path
) -> None:
    """Issue 22: plain `kubectl kustomize` / `kubectl apply -k` failed on files outside the
    kustomization (monitoring/, the Secrets' .env values). `prepare` writes them inside."""
    for folder in ("k8s", "monitoring"):
        shutil.copytree(
            render_tree / folder, tmp_path / folder, ignore=shutil.ignore_patterns("generated")
        )
    shutil.copy(render_tree / ".env", tmp_path / ".env")
    overlay = tmp_path / "k8s" / "overlays" / "k3d"
    kubectl = ["kubectl", "kustomize", str(overlay)]
    before = subprocess.run(kubectl, capture_output=True, text=True, timeout=120)
    assert before.returncode != 0 and "generated" in before.stderr
    assert k8s.main(["prepare", "--overlay", str(overlay)]) == 0
    after = subprocess.run(kubectl, capture_output=True, text=True, timeout=120)
    assert after.returncode == 0, after.stderr
    built = [doc for doc in yaml.safe_load_all(after.stdout) if doc]
    assert k8s.kustomize_command() in (["kustomize", "build"], ["kubectl", "kustomize"])
    # The same objects as the helper renders (Secrets' values aside: each tree has its own .env).
    assert sorted(map(k8s.describe, built)) == sorted(map(k8s.describe, manifests))
    assert {"Namespace", "Deployment", "Secret", "EndpointSlice"} <= {m["kind"] for m in built}
    assert (overlay / "generated").stat().st_mode & 0o077 == 0  # Secrets' values: owner only


def test_render_explains_a_missing_env_file(render_tree: Path, tmp_path: Path) -> None:
    for folder in ("k8s", "monitoring"):
        shutil.copytree(render_tree / folder, tmp_path / folder)
    with pytest.raises(k8s.DeployError, match=r"scripts/compose-up creates it \(make up\)"):
        k8s.render(tmp_path / "k8s" / "overlays" / "k3d")


def test_kustomize_command_prefers_kustomize_then_kubectl() -> None:
    assert k8s.kustomize_command(lambda tool: f"/bin/{tool}")[:2] == ["kustomize", "build"]
    assert k8s.kustomize_command(lambda tool: "/bin/kubectl" if tool == "kubectl" else None)[
        :2
    ] == ["kubectl", "kustomize"]
    with pytest.raises(k8s.DeployError, match="install kubectl"):
        k8s.kustomize_command(lambda tool: None)


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("readmission-api:dev", "readmission-api"),
        ("localhost:5000/team/api:1.2", "localhost:5000/team/api"),
        ("localhost:5000/team/api", "localhost:5000/team/api"),
        ("prom/prometheus@sha256:abc", "prom/prometheus"),
        ("grafana/grafana:12.0.2@sha256:abc", "grafana/grafana"),
    ],
)
def test_image_name_drops_tag_and_digest(reference: str, name: str) -> None:
    assert k8s.image_name(reference) == name


@pytest.mark.slow
def test_set_images_replaces_only_the_named_images_and_copies(manifests: list[dict]) -> None:
    original = copy.deepcopy(manifests)
    result = k8s.set_images(manifests, {"readmission-api": "readmission-api:0123456789ab"})
    assert manifests == original
    deployments = by_kind(result, "Deployment")
    assert (
        deployments["api"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "readmission-api:0123456789ab"
    )
    assert (
        deployments["ui"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "readmission-ui:dev"
    )


@pytest.mark.slow
def test_set_images_rejects_an_image_no_container_runs(manifests: list[dict]) -> None:
    with pytest.raises(k8s.DeployError, match="readmission-apii"):
        k8s.set_images(manifests, {"readmission-apii": "x:1"})


@pytest.mark.slow
def test_apply_order_puts_dependencies_first_and_keeps_the_rest_stable(
    manifests: list[dict],
) -> None:
    kinds = [m["kind"] for m in k8s.apply_order(manifests)]
    assert kinds[0] == "Namespace"
    assert kinds.index("ConfigMap") < kinds.index("Deployment")
    assert kinds.index("Secret") < kinds.index("Deployment")
    assert max(i for i, k in enumerate(kinds) if k == "NetworkPolicy") < kinds.index("Deployment")
    assert max(i for i, k in enumerate(kinds) if k == "ClusterRoleBinding") < kinds.index(
        "Deployment"
    )
    assert kinds.index("Deployment") < kinds.index("HorizontalPodAutoscaler")
    custom = [
        {"kind": "Widget", "metadata": {"name": "a"}},
        {"kind": "Namespace", "metadata": {"name": "n"}},
    ]
    assert [m["kind"] for m in k8s.apply_order(custom)] == ["Namespace", "Widget"]
    assert sorted(map(k8s.describe, manifests)) == sorted(
        map(k8s.describe, k8s.apply_order(manifests))
    )


@pytest.mark.parametrize(
    ("state", "done", "message"),
    [
        (deployment(generation=3, observed=2), False, "waiting for the new spec to be observed"),
        (deployment(updated=1, total=3), False, "1 of 2 new replicas updated"),
        (deployment(total=3), False, "1 old replicas pending termination"),
        (deployment(available=1), False, "1 of 2 updated replicas available"),
        (deployment(), True, "rolled out (2 available)"),
        (deployment(replicas=1, total=1, updated=1, available=1), True, "rolled out (1 available)"),
    ],
)
def test_rollout_status_follows_kubectls_rule(state: dict, done: bool, message: str) -> None:
    assert k8s.rollout_status(state) == (done, message)


def test_rollout_status_of_a_deployment_without_status_is_pending() -> None:
    fresh = {"metadata": {"name": "api", "generation": 1}, "spec": {"replicas": 2}}
    assert k8s.rollout_status(fresh) == (False, "waiting for the new spec to be observed")


def test_rollout_status_fails_once_the_progress_deadline_is_exceeded() -> None:
    stuck = deployment(
        available=0,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet api-1 has timed out progressing.",
            }
        ],
    )
    with pytest.raises(k8s.DeployError, match=r"progress deadline.*timed out"):
        k8s.rollout_status(stuck)


def test_wait_for_rollouts_echoes_each_change_once_and_returns_when_all_are_done() -> None:
    states = {
        "api": [
            deployment(available=0),
            deployment(available=0),
            deployment(available=1),
            deployment(),
        ],
        "ui": [deployment("ui", replicas=1, total=1, updated=1, available=1)],
    }
    lines: list[str] = []
    clock, cluster = FakeClock(), FakeCluster(states)
    k8s.wait_for_rollouts(
        ["api", "ui"],
        lambda name: k8s.rollout_status(cluster.deployment("readmission", name)),
        timeout=60,
        poll=2,
        clock=clock,
        sleep=clock.sleep,
        echo=lines.append,
    )
    assert lines == [
        "deployment/api: 0 of 2 updated replicas available",
        "deployment/ui: rolled out (1 available)",
        "deployment/api: 1 of 2 updated replicas available",
        "deployment/api: rolled out (2 available)",
    ]
    assert clock.now == 6


def test_wait_for_rollouts_times_out_naming_what_it_waits_for() -> None:
    clock = FakeClock()
    with pytest.raises(k8s.DeployError, match=r"after 10s: api \(0 of 2 updated"):
        k8s.wait_for_rollouts(
            ["api"],
            lambda name: k8s.rollout_status(deployment(available=0)),
            timeout=10,
            poll=2,
            clock=clock,
            sleep=clock.sleep,
            echo=lambda line: None,
        )
    assert clock.now == 10


def pod(name: str, app: str, **status: Any) -> dict:
    return {"metadata": {"name": name, "labels": {"app": app}}, "status": status}


def test_pod_problems_name_waiting_reasons_crashes_readiness_and_scheduling() -> None:
    pulling = pod(
        "api-1",
        "api",
        containerStatuses=[
            {
                "name": "api",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}
                },
            }
        ],
    )
    assert k8s.pod_problems(pulling) == ["api: ErrImageNeverPull image not present"]
    crashing = pod(
        "api-2",
        "api",
        containerStatuses=[
            {
                "name": "api",
                "ready": False,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
            }
        ],
    )
    assert k8s.pod_problems(crashing) == [
        "api: CrashLoopBackOff",
        "api: restarted 3x, last exit 1 (Error)",
    ]
    unready = pod(
        "api-3",
        "api",
        containerStatuses=[
            {"name": "api", "ready": False, "restartCount": 0, "state": {"running": {}}}
        ],
    )
    assert k8s.pod_problems(unready) == ["api: running, not ready (readiness probe failing)"]
    pending = pod(
        "api-4",
        "api",
        conditions=[{"type": "PodScheduled", "status": "False", "message": "Insufficient cpu"}],
    )
    assert k8s.pod_problems(pending) == ["unschedulable: Insufficient cpu"]
    healthy = pod(
        "api-5",
        "api",
        containerStatuses=[
            {"name": "api", "ready": True, "restartCount": 0, "state": {"running": {}}}
        ],
    )
    assert k8s.pod_problems(healthy) == []


def test_pod_problems_read_the_clients_to_dict_form_with_none_for_absent_fields() -> None:
    as_client_returns = pod(
        "api-6",
        "api",
        conditions=None,
        containerStatuses=[
            {
                "name": "api",
                "ready": False,
                "restartCount": 1,
                "state": {
                    "running": None,
                    "terminated": None,
                    "waiting": {"reason": "ImagePullBackOff", "message": None},
                },
                "lastState": {
                    "running": None,
                    "waiting": None,
                    "terminated": {"exitCode": 0, "reason": None},
                },
            }
        ],
    )
    assert k8s.pod_problems(as_client_returns) == [
        "api: ImagePullBackOff",
        "api: restarted 1x, last exit 0 (unknown)",
    ]


@pytest.mark.slow
def test_deploy_applies_in_order_then_waits_for_every_deployment(manifests: list[dict]) -> None:
    names = by_kind(manifests, "Deployment")
    cluster = FakeCluster(
        {name: [deployment(name, replicas=1, total=1, updated=1, available=1)] for name in names}
    )
    lines: list[str] = []
    k8s.deploy(manifests, cluster, timeout=5, echo=lines.append)
    assert cluster.applied == [k8s.describe(m) for m in k8s.apply_order(manifests)]
    assert {f"deployment/{name}: rolled out (1 available)" for name in names} <= set(lines)


def started_pod(name: str, labels: dict[str, str], started: bool) -> dict:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {
            "containerStatuses": [
                {"name": "api", "ready": False, "started": started, "state": {"running": {}}}
            ]
        },
    }


@pytest.mark.slow
def test_without_a_production_model_deploy_waits_for_the_api_pods_to_run_not_to_be_ready(
    manifests: list[dict],
) -> None:
    """The first `make k8s-up` after `make up`: nothing promoted, so /ready stays 503."""
    names = by_kind(manifests, "Deployment")
    states = {
        name: [deployment(name, replicas=1, total=1, updated=1, available=1)] for name in names
    }
    states["api"] = [
        deployment("api", updated=1, total=1, available=0),
        deployment("api", available=0),
    ]
    labels = names["api"]["spec"]["selector"]["matchLabels"]
    pods = [started_pod("api-1", labels, True), started_pod("api-2", labels, True)]
    lines: list[str] = []
    k8s.deploy(
        manifests,
        FakeCluster(states, pods),
        timeout=5,
        echo=lines.append,
        model_in_production=False,
    )
    assert "deployment/api: 1 of 2 new replicas created" in lines
    assert "deployment/api: 2 pods running, not ready until a version is in production" in lines


def test_started_status_waits_for_every_container_to_start() -> None:
    pods = [started_pod("a", {}, True), started_pod("b", {}, False)]
    assert k8s.started_status(deployment(available=0), pods) == (False, "1 of 2 pods started")
    assert k8s.started_status(deployment(generation=3, observed=2), pods)[0] is False


def test_started_status_accepts_a_rollout_held_by_unready_old_pods() -> None:
    """maxUnavailable 0: with no pod ready, a new image stops at one surge pod; nothing serves
    either way, so a second `make k8s-up` before any promotion still ends."""
    held = deployment(available=0, updated=1, total=3)
    pods = [started_pod(name, {}, True) for name in ("old-1", "old-2", "new-1")]
    assert k8s.started_status(held, pods) == (
        True,
        "3 pods running, not ready until a version is in production",
    )
    creating = deployment(available=0, updated=1, total=1)
    assert k8s.started_status(creating, pods[:1]) == (False, "1 of 2 new replicas created")


@pytest.mark.slow
def test_a_long_wait_for_a_model_is_not_a_failed_deploy(manifests: list[dict]) -> None:
    names = by_kind(manifests, "Deployment")
    states = {
        name: [deployment(name, replicas=1, total=1, updated=1, available=1)] for name in names
    }
    deadline = {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "slow"}
    states["api"] = [deployment("api", available=0, conditions=[deadline])]
    labels = names["api"]["spec"]["selector"]["matchLabels"]
    pods = [started_pod("api-1", labels, True), started_pod("api-2", labels, True)]
    k8s.deploy(
        manifests,
        FakeCluster(states, pods),
        timeout=0,
        echo=lambda line: None,
        model_in_production=False,
    )


@pytest.mark.slow
def test_with_a_production_model_an_unready_api_still_fails_the_deploy(
    manifests: list[dict],
) -> None:
    names = by_kind(manifests, "Deployment")
    states = {
        name: [deployment(name, replicas=1, total=1, updated=1, available=1)] for name in names
    }
    states["api"] = [deployment("api", available=0)]
    labels = names["api"]["spec"]["selector"]["matchLabels"]
    pods = [started_pod("api-1", labels, True), started_pod("api-2", labels, True)]
    with pytest.raises(k8s.DeployError, match="not rolled out"):
        k8s.deploy(manifests, FakeCluster(states, pods), timeout=0, echo=lambda line: None)


@pytest.mark.slow
def test_deploy_failure_explains_unready_api_pods(manifests: list[dict]) -> None:
    names = by_kind(manifests, "Deployment")
    done = {name: [deployment(name, replicas=1, total=1, updated=1, available=1)] for name in names}
    done["api"] = [deployment("api", available=0)]
    labels = names["api"]["spec"]["selector"]["matchLabels"]
    unready = {
        "metadata": {"name": "api-7d9f", "labels": labels},
        "status": {
            "containerStatuses": [
                {"name": "api", "ready": False, "restartCount": 0, "state": {"running": {}}}
            ]
        },
    }
    with pytest.raises(k8s.DeployError) as failure:  # timeout 0: fails after the first look
        k8s.deploy(manifests, FakeCluster(done, [unready]), timeout=0, echo=lambda line: None)
    message = str(failure.value)
    assert "not rolled out after 0s: api (0 of 2 updated replicas available)" in message
    assert "pod/api-7d9f: api: running, not ready" in message
    assert "hint: the API is ready only once a model is in production" in message


class FakeDynamic:
    """Stands in for kubernetes.dynamic.DynamicClient: records the server-side apply calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.resources = self

    def get(self, api_version: str, kind: str) -> tuple[str, str]:
        return (api_version, kind)

    def server_side_apply(self, resource: Any, body: dict, **kwargs: Any) -> None:
        self.calls.append((resource, body["metadata"]["name"], kwargs))


@pytest.mark.slow
def test_cluster_apply_is_a_forced_server_side_apply_by_one_field_manager(
    manifests: list[dict],
) -> None:
    dynamic = FakeDynamic()
    cluster = k8s.Cluster(dynamic)
    api = by_kind(manifests, "Deployment")["api"]
    cluster.apply(api)
    cluster.apply(by_kind(manifests, "ClusterRole")["readmission-prometheus"])
    assert dynamic.calls == [
        (
            ("apps/v1", "Deployment"),
            "api",
            {
                "namespace": "readmission",
                "field_manager": "readmission-deploy",
                "force_conflicts": True,
            },
        ),
        (
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            "readmission-prometheus",
            {"namespace": None, "field_manager": "readmission-deploy", "force_conflicts": True},
        ),
    ]


class RejectingDynamic(FakeDynamic):
    def server_side_apply(self, resource: Any, body: dict, **kwargs: Any) -> None:
        error = ApiException(status=422, reason="Unprocessable Entity")
        error.body = json.dumps(
            {
                "kind": "Status",
                "message": 'Deployment.apps "api" is invalid: spec.replicas: Invalid value: -1',
            }
        )
        raise error


@pytest.mark.slow
def test_cluster_apply_reports_the_api_servers_message(manifests: list[dict]) -> None:
    cluster = k8s.Cluster(RejectingDynamic())
    with pytest.raises(
        k8s.DeployError,
        match=r'deployment/api: Deployment.apps "api" is '
        r"invalid: spec.replicas",
    ):
        cluster.apply(by_kind(manifests, "Deployment")["api"])


def test_api_error_message_falls_back_to_status_and_reason() -> None:
    assert k8s.api_error_message(ApiException(status=403, reason="Forbidden")) == "403 Forbidden"
    assert k8s.api_error_message(ConnectionError("refused")) == "refused"


def test_connecting_to_an_unknown_context_says_how_to_create_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []}
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(k8s.DeployError, match=r"'k3d-readmission'.*scripts/k8s-up"):
        k8s.Cluster.connect("k3d-readmission")


def test_parse_images_wants_name_equals_reference() -> None:
    assert k8s.parse_images(["a=b:1", "c=d@sha256:e"]) == {"a": "b:1", "c": "d@sha256:e"}
    with pytest.raises(Exception, match="NAME=REFERENCE"):
        k8s.parse_images(["readmission-api"])


@pytest.mark.slow
def test_render_command_prints_the_manifests_with_images_set(
    render_tree: Path, capsys: pytest.CaptureFixture
) -> None:
    code = k8s.main(
        [
            "render",
            "--overlay",
            str(render_tree / "k8s" / "overlays" / "k3d"),
            "--image",
            "readmission-ui=readmission-ui:feedbeef0000",
        ]
    )
    assert code == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    ui = by_kind(printed, "Deployment")["ui"]
    assert ui["spec"]["template"]["spec"]["containers"][0]["image"] == "readmission-ui:feedbeef0000"


def test_commands_report_errors_without_a_traceback(
    render_tree: Path, capsys: pytest.CaptureFixture
) -> None:
    code = k8s.main(
        ["render", "--overlay", str(render_tree / "k8s" / "overlays" / "k3d"), "--image", "nope"]
    )
    assert code == 1
    assert capsys.readouterr().err.startswith("deploy failed: --image wants NAME=REFERENCE")


class FakeMlflow:
    """Answers the registry's alias lookup like MLflow does; records what it was asked."""

    def __init__(self, status: int, body: dict | None = None) -> None:
        self.status, self.body = status, body or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, **kwargs: Any) -> httpx.Response:
        self.calls.append((url, kwargs))
        return httpx.Response(self.status, json=self.body, request=httpx.Request("GET", url))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (FakeMlflow(401), "refuses the API's user 'readmission-api'"),
        (FakeMlflow(500), "answered 500"),
    ],
)
def test_production_version_failures_say_what_to_do(
    render_tree: Path, answer: FakeMlflow, message: str
) -> None:
    with pytest.raises(k8s.DeployError, match=message):
        k8s.production_version(render_tree / "k8s" / "overlays" / "k3d", get=answer)


def test_an_unreachable_mlflow_points_at_make_up(render_tree: Path) -> None:
    def refuse(url: str, **kwargs: Any) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(k8s.DeployError, match=r"does not answer .*make up"):
        k8s.production_version(render_tree / "k8s" / "overlays" / "k3d", get=refuse)


def test_workload_secrets_need_the_generated_env(render_tree: Path, tmp_path: Path) -> None:
    for folder in ("k8s", "monitoring"):
        shutil.copytree(
            render_tree / folder, tmp_path / folder, ignore=shutil.ignore_patterns("generated")
        )
    (tmp_path / ".env").write_text("API_RELOAD_TOKEN=x\n")
    with pytest.raises(
        k8s.DeployError,
        match=r"lacks GRAFANA_ADMIN_PASSWORD, MLFLOW_API_PASSWORD, MLFLOW_WEBHOOK_SECRET, "
        r"WAREHOUSE_API_PASSWORD: run `make up`",
    ):
        k8s.render(tmp_path / "k8s" / "overlays" / "k3d")
    written = tmp_path / "k8s" / "overlays" / "k3d" / "generated"
    assert not written.exists()


def test_the_apis_database_url_is_made_of_env_with_its_password_quoted(
    render_tree: Path, tmp_path: Path
) -> None:
    """A password set by hand may hold any character: in the URL it is percent-quoted, and
    SQLAlchemy (the API's Settings.warehouse_url) reads it back intact."""
    for folder in ("k8s", "monitoring"):
        shutil.copytree(render_tree / folder, tmp_path / folder)
    password = "p@ss:w/o%rd #?"
    env = (render_tree / ".env").read_text()
    (tmp_path / ".env").write_text(f"{env}WAREHOUSE_API_PASSWORD='{password}'\n")
    secret_dir = k8s.write_workload_secrets(tmp_path / "k8s" / "overlays" / "k3d")
    written = env_values((secret_dir / "api.env").read_text())
    url = sa.make_url(written["DATABASE_URL"])
    assert (url.drivername, url.username, url.password) == (
        "postgresql+psycopg",
        "readmission_api",
        password,
    )
    assert (url.host, url.port, url.database) == ("postgres", 5432, "warehouse")
    assert password not in written["DATABASE_URL"]  # quoted, so the URL parses


class StatefulDynamic(FakeDynamic):
    """FakeDynamic that also answers reads of Deployments: `existing` maps a name to its
    spec.replicas (absent: 404, as the API server answers)."""

    def __init__(self, existing: dict[str, int]) -> None:
        super().__init__()
        self.existing = existing

    def get(self, api_version: str, kind: str) -> Any:
        dynamic = self

        class Resource:
            def get(self, name: str, namespace: str) -> Any:
                if name not in dynamic.existing:
                    raise NotFoundError(ApiException(status=404, reason="Not Found"))
                state = {"spec": {"replicas": dynamic.existing[name]}}
                return type("Found", (), {"to_dict": lambda self: state})()

        return Resource()

    def server_side_apply(self, resource: Any, body: dict, **kwargs: Any) -> None:
        self.calls.append(
            (kwargs["field_manager"], body["spec"].get("replicas"), len(body["spec"]))
        )


@pytest.mark.slow
def test_deploy_applies_the_autoscaled_api_through_the_replica_handover(
    manifests: list[dict],
) -> None:
    names = by_kind(manifests, "Deployment")
    states = {
        name: [deployment(name, replicas=1, total=1, updated=1, available=1)] for name in names
    }
    states["api"] = [deployment("api", available=2)]
    cluster = FakeCluster(states)
    k8s.deploy(manifests, cluster, timeout=0, echo=lambda line: None)
    assert cluster.autoscaled == ["deployment/api"]
    assert k8s.autoscaled(manifests) == {"deployment/api"}


@pytest.mark.slow
def test_an_autoscaled_deployment_is_created_with_its_replicas_and_then_never_resized(
    manifests: list[dict],
) -> None:
    """Issue 22: `replicas: 2`, force-applied on every `make k8s-up`, undid the HPA's scaling."""
    api = by_kind(manifests, "Deployment")["api"]
    created = StatefulDynamic({})
    k8s.Cluster(created).apply_autoscaled(api)
    # Created at the manifest's size, which the replicas manager then co-owns at that value.
    assert created.calls[0][:2] == ("readmission-deploy", 2)
    assert created.calls[1] == ("readmission-deploy-replicas", 2, 1)
    assert len(created.calls) == 2

    scaled = StatefulDynamic({"api": 5})  # the HPA scaled it to 5 since
    k8s.Cluster(scaled).apply_autoscaled(api)
    # First the count, at what the HPA set, then the Deployment without it: 5 stays 5.
    assert scaled.calls[0] == ("readmission-deploy-replicas", 5, 1)
    assert scaled.calls[1][:2] == ("readmission-deploy", None)
    assert len(scaled.calls) == 2


@pytest.mark.slow
def test_the_helper_runs_in_the_deploy_group_alone(render_tree: Path, tmp_path: Path) -> None:
    """Issue 22: `make k8s-up` built the whole development venv (Airflow, Playwright: 1.7 GB) for
    a helper that needs four packages. The same uv command as the Makefile's, from uv.lock."""
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    venv = tmp_path / "venv"
    synced = subprocess.run(
        [uv, "sync", "--frozen", "--only-group", "deploy", "--no-install-project"],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert synced.returncode == 0, synced.stderr
    site = next(venv.glob("lib/python*/site-packages"))
    assert not (site / "mlflow").exists() and not (site / "airflow").exists()
    rendered = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "deploy.k8s",
            "render",
            "--overlay",
            str(render_tree / "k8s" / "overlays" / "k3d"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "kind: HorizontalPodAutoscaler" in rendered.stdout
    # Cluster's client is imported when it is used: import it too, as apply does.
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import kubernetes.dynamic, deploy.k8s"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
