"""The Kubernetes manifests as kustomize renders them (k8s/overlays/k3d), validated against the
Kubernetes 1.31 schemas and checked for the properties the platform relies on."""

from __future__ import annotations

import base64
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes_validate import utils as kubernetes_validate

from deploy import dotenv, k8s
from readmission.data import tables

from .conftest import ROOT, by_kind, env_values, load_yaml, load_yaml_all, strings

KUBERNETES_VERSION = "1.31.0"
K8S = ROOT / "k8s"
MONITORING = ROOT / "monitoring"
SERVING_PORTS = {"api": 8000, "ui": 8501, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
TRAEFIK = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def allowed_sources(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [peer for rule in policy["spec"].get("ingress", []) for peer in rule.get("from", [])]


def files(folder: Path, extension: str) -> dict[str, str]:
    """Every file of `folder` with that extension, as a ConfigMap holds them."""
    return {path.name: path.read_text() for path in folder.glob(f"*.{extension}")}


def app(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}


@pytest.mark.slow
def test_every_rendered_object_validates_strictly_against_kubernetes_1_31(
    manifests: list[dict],
) -> None:
    assert len(manifests) > 20
    failures = []
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            failures.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {e}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_strict_validation_rejects_an_unknown_field(manifests: list[dict]) -> None:
    deployment = dict(by_kind(manifests, "Deployment")["api"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.slow
def test_namespaced_objects_live_in_the_readmission_namespace(manifests: list[dict]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for manifest in manifests:
        namespace = manifest["metadata"].get("namespace")
        if manifest["kind"] in cluster_scoped:
            assert namespace is None, manifest["metadata"]["name"]
        else:
            assert namespace == "readmission", f"{manifest['kind']}/{manifest['metadata']}"
    namespace = by_kind(manifests, "Namespace")["readmission"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.slow
def test_every_container_is_probed_limited_and_unprivileged(manifests: list[dict]) -> None:
    deployments = by_kind(manifests, "Deployment")
    assert set(deployments) == set(SERVING_PORTS)
    for name, deployment in deployments.items():
        pod = pod_spec(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in container, f"{where} has no {probe}"
                port = container[probe]["httpGet"]["port"]
                ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                assert ports.get(port, port) == SERVING_PORTS[name], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["limits"].keys(), where
            assert {"cpu", "memory"} <= resources["requests"].keys(), where
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert ":" in container["image"] and not container["image"].endswith(":latest")


@pytest.mark.slow
def test_writable_paths_are_volumes_since_root_filesystems_are_read_only(
    manifests: list[dict],
) -> None:
    writable = {
        "api": "/tmp",
        "ui": "/tmp",
        "prometheus": "/prometheus",
        "alertmanager": "/alertmanager",
        "grafana": "/var/lib/grafana",
    }
    for name, path in writable.items():
        pod = pod_spec(by_kind(manifests, "Deployment")[name])
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert "emptyDir" in volumes[mounts[path]], f"{name}: {path}"


@pytest.mark.slow
def test_the_api_rolls_out_without_losing_capacity(manifests: list[dict]) -> None:
    api = by_kind(manifests, "Deployment")["api"]
    assert api["spec"]["replicas"] >= 2
    strategy = api["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    container = pod_spec(api)["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    labels = api["spec"]["selector"]["matchLabels"]
    pdb = by_kind(manifests, "PodDisruptionBudget")["api"]
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert 1 <= pdb["spec"]["minAvailable"] < api["spec"]["replicas"]
    hpa = by_kind(manifests, "HorizontalPodAutoscaler")["api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.slow
def test_the_api_pods_are_scraped_by_prometheus(manifests: list[dict]) -> None:
    annotations = by_kind(manifests, "Deployment")["api"]["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }
    config = load_yaml(MONITORING / "prometheus" / "prometheus-k8s.yml")
    discovery = [c for job in config["scrape_configs"] for c in job["kubernetes_sd_configs"]]
    assert {"role": "pod"} in discovery
    rules = by_kind(manifests, "ClusterRole")["readmission-prometheus"]["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = by_kind(manifests, "ClusterRoleBinding")["readmission-prometheus"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus", "namespace": "readmission"}
    ]
    assert (
        pod_spec(by_kind(manifests, "Deployment")["prometheus"])["serviceAccountName"]
        == "prometheus"
    )


@pytest.mark.slow
def test_services_and_ingresses_route_to_the_right_pods(manifests: list[dict]) -> None:
    deployments = by_kind(manifests, "Deployment")
    services = by_kind(manifests, "Service")
    for name in SERVING_PORTS:
        service = services[name]
        assert service["spec"]["selector"] == deployments[name]["spec"]["selector"]["matchLabels"]
        assert service["spec"]["ports"][0]["port"] == SERVING_PORTS[name]
    hosts = {}
    for ingress in by_kind(manifests, "Ingress").values():
        assert ingress["spec"]["ingressClassName"] == "traefik"
        for rule in ingress["spec"]["rules"]:
            backend = rule["http"]["paths"][0]["backend"]["service"]
            # k3d's MLflow webhook rule names a path, no host (api-webhook-ingress.yaml)
            hosts[rule.get("host") or rule["http"]["paths"][0]["path"]] = backend["name"]
            assert backend["name"] in services
    assert hosts == {
        "api.localhost": "api",
        "ui.localhost": "ui",
        "grafana.localhost": "grafana",
        "/webhooks/mlflow": "api",
    }


@pytest.mark.slow
@pytest.mark.parametrize(("service", "port"), [("mlflow", 5000), ("postgres", 5432)])
def test_compose_servers_are_reached_through_selectorless_services(
    manifests: list[dict], service: str, port: int
) -> None:
    spec = by_kind(manifests, "Service")[service]["spec"]
    assert "selector" not in spec
    endpoints = by_kind(manifests, "EndpointSlice")[f"{service}-compose"]
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == service
    assert endpoints["ports"][0]["name"] == spec["ports"][0]["name"]
    assert endpoints["ports"][0]["port"] == spec["ports"][0]["port"] == port


@pytest.mark.slow
def test_mlflow_is_the_api_registry(manifests: list[dict]) -> None:
    config = next(
        c for n, c in by_kind(manifests, "ConfigMap").items() if n.startswith("api-config-")
    )
    assert config["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert {"MODEL_NAME", "MODEL_ALIAS", "MODEL_POLL_SECONDS"} <= config["data"].keys()


@pytest.mark.slow
def test_network_policies_deny_by_default_and_allow_only_the_expected_paths(
    manifests: list[dict],
) -> None:
    policies = by_kind(manifests, "NetworkPolicy")
    default = policies.pop("default-deny-ingress")
    assert default["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    policies.pop("api-egress-compose")  # egress only: test_the_api_reaches_only_...
    expected = {
        "api": [TRAEFIK, app("ui"), app("prometheus")],
        "ui": [TRAEFIK],
        "grafana": [TRAEFIK],
        "prometheus": [app("grafana")],
        "alertmanager": [app("prometheus"), app("grafana")],
    }
    assert policies.keys() == expected.keys()
    for name, sources in expected.items():
        policy = policies[name]
        assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
        assert allowed_sources(policy) == sources, name
        ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
        assert ports == [SERVING_PORTS[name]], name


@pytest.mark.slow
def test_the_api_reaches_only_dns_mlflow_and_the_warehouse(manifests: list[dict]) -> None:
    """Egress of the API pods: what the policies selecting them allow together (they add up)."""
    api = app("api")["podSelector"]
    policies = [
        p for p in by_kind(manifests, "NetworkPolicy").values() if p["spec"]["podSelector"] == api
    ]
    assert all("Egress" in p["spec"]["policyTypes"] for p in policies)  # none leaves it open
    rules = [rule for policy in policies for rule in policy["spec"].get("egress", [])]
    dns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    reached = set()
    for rule in rules:
        (peer,) = rule["to"]
        ports = {(p["port"], p["protocol"]) for p in rule["ports"]}
        if peer == dns:
            assert ports == {(53, "UDP"), (53, "TCP")}
            reached.add("dns")
            continue
        network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        assert network.num_addresses == 1 and "except" not in peer["ipBlock"]
        # Policies see the endpoint's address: the EndpointSlice behind each Service.
        (service,) = [
            name
            for name, slice_ in by_kind(manifests, "EndpointSlice").items()
            if slice_["endpoints"][0]["addresses"] == [str(network.network_address)]
        ]
        slice_port = by_kind(manifests, "EndpointSlice")[service]["ports"][0]["port"]
        assert ports == {(slice_port, "TCP")}, service
        reached.add(service)
    assert reached == {"dns", "mlflow-compose", "postgres-compose"}
    others = [p for p in by_kind(manifests, "NetworkPolicy").values() if p not in policies]
    assert not [p for p in others if "egress" in p["spec"]]


BACK_OFFICE = re.compile(r"POSTGRES|_DB_|MINIO|AIRFLOW|FERNET|JWT|MLFLOW_ADMIN|FLASK|SECRET_KEY")


def secret_references(deployment: dict[str, Any]) -> dict[str, set[str] | None]:
    """The Secrets a Deployment's containers read: name -> keys (None: the whole Secret)."""
    used: dict[str, set[str] | None] = {}
    for container in pod_spec(deployment)["containers"]:
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                used[source["secretRef"]["name"]] = None
        for var in container.get("env", []):
            if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                keys = used.setdefault(ref["name"], set())
                if keys is not None:
                    keys.add(ref["key"])
    return used


@pytest.mark.slow
def test_each_workload_reads_a_secret_of_its_own_holding_only_its_keys(
    manifests: list[dict], env_file: Path
) -> None:
    secrets = by_kind(manifests, "Secret")
    deployments = by_kind(manifests, "Deployment")
    owners = {}
    for name, deployment in deployments.items():
        for secret, keys in secret_references(deployment).items():
            assert secret.startswith(f"{name}-secrets-"), f"{name} reads {secret}"
            assert secret in secrets, f"{name} reads the missing {secret}"
            assert keys is None or keys <= secrets[secret]["data"].keys()
            owners[secret] = name
    assert owners.keys() == secrets.keys(), "a Secret no workload reads"
    assert sorted(owners.values()) == ["alertmanager", "api", "grafana"]
    values = env_values(env_file.read_text())
    for secret, workload in owners.items():
        data = {k: base64.b64decode(v).decode() for k, v in secrets[secret]["data"].items()}
        expected = {
            key: k8s.secret_value(source, values)
            for key, source in k8s.WORKLOAD_SECRETS[workload].items()
        }
        assert data == expected, workload


@pytest.mark.slow
def test_no_back_office_credential_enters_the_cluster(
    manifests: list[dict], env_file: Path
) -> None:
    values = env_values(env_file.read_text())
    back_office = {key: value for key, value in values.items() if BACK_OFFICE.search(key) and value}
    assert {
        "POSTGRES_PASSWORD",
        "WAREHOUSE_DB_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_JWT_SECRET",
        "MLFLOW_ADMIN_PASSWORD",
        "AIRFLOW_ADMIN_PASSWORD",
    } <= back_office.keys()
    generated = {key: values[key] for key in dotenv.SECRETS if BACK_OFFICE.search(key)}
    for secret in by_kind(manifests, "Secret").values():
        assert not any(BACK_OFFICE.search(key) for key in secret["data"]), secret["metadata"]
        decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert not set(decoded.values()) & set(back_office.values()), secret["metadata"]["name"]
        # Not even inside a value (a database URL carries its password): the generated
        # secrets, random tokens, are searched for (user names like `readmission` are not).
        for key, value in decoded.items():
            leaked = [name for name, credential in generated.items() if credential in value]
            assert not leaked, f"{secret['metadata']['name']}: {key} holds {leaked}"
    rendered = str(manifests)
    assert not [key for key, value in generated.items() if value in rendered]


@pytest.mark.slow
def test_the_api_reads_mlflow_as_its_read_only_user(manifests: list[dict], env_file: Path) -> None:
    values = env_values(env_file.read_text())
    api = next(s for n, s in by_kind(manifests, "Secret").items() if n.startswith("api-"))
    data = {k: base64.b64decode(v).decode() for k, v in api["data"].items()}
    assert (
        data["MLFLOW_TRACKING_USERNAME"] == values["MLFLOW_API_USER"] != values["MLFLOW_ADMIN_USER"]
    )
    assert data["MLFLOW_TRACKING_PASSWORD"] == values["MLFLOW_API_PASSWORD"]
    for key in ("API_RELOAD_TOKEN", "MLFLOW_API_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert key in dotenv.SECRETS, "compose-up must generate every secret the pods read"


@pytest.mark.slow
def test_the_api_writes_to_the_warehouse_as_its_own_login(
    manifests: list[dict], env_file: Path
) -> None:
    """Never as the owner: the API's login may only add predictions, read realized performance,
    read the ledger and add to it (tests/deploy/test_warehouse_api_login.py)."""
    values = env_values(env_file.read_text())
    secrets = by_kind(manifests, "Secret")
    api = next(s for n, s in secrets.items() if n.startswith("api-secrets-"))
    url = sa.make_url(base64.b64decode(api["data"]["DATABASE_URL"]).decode())
    assert url.drivername == "postgresql+psycopg"
    assert url.username == tables.API_ROLE != "warehouse"
    assert url.password == values["WAREHOUSE_API_PASSWORD"] != values["WAREHOUSE_DB_PASSWORD"]
    assert url.database == "warehouse"
    service = by_kind(manifests, "Service")[str(url.host)]  # the compose PostgreSQL, in-cluster
    assert url.port == service["spec"]["ports"][0]["port"]
    assert "WAREHOUSE_API_PASSWORD" in dotenv.SECRETS
    # The pods get it from that Secret, and from nowhere else that could override it.
    container = pod_spec(by_kind(manifests, "Deployment")["api"])["containers"][0]
    assert {"secretRef": {"name": api["metadata"]["name"]}} in container["envFrom"]
    config = next(c for n, c in by_kind(manifests, "ConfigMap").items() if n.startswith("api-"))
    assert "DATABASE_URL" not in config["data"]
    assert "DATABASE_URL" not in {var["name"] for var in container.get("env", [])}
    for name, secret in secrets.items():  # no other workload reaches the warehouse
        assert name == api["metadata"]["name"] or "DATABASE_URL" not in secret["data"]


@pytest.mark.slow
def test_monitoring_configs_come_from_the_monitoring_folder(manifests: list[dict]) -> None:
    configs = {name.rsplit("-", 1)[0]: c for name, c in by_kind(manifests, "ConfigMap").items()}
    prometheus = configs["prometheus-config"]["data"]["prometheus.yml"]
    assert prometheus == (MONITORING / "prometheus" / "prometheus-k8s.yml").read_text()
    provisioning = MONITORING / "grafana" / "provisioning"
    assert configs["prometheus-rules"]["data"] == files(MONITORING / "prometheus" / "rules", "yml")
    assert configs["grafana-dashboards"]["data"] == files(
        MONITORING / "grafana" / "dashboards", "json"
    )
    assert configs["grafana-datasources"]["data"] == files(provisioning / "datasources", "yaml")
    assert configs["grafana-dashboard-providers"]["data"] == files(
        provisioning / "dashboards", "yaml"
    )
    assert configs["alertmanager-config"]["data"] == {
        name: (MONITORING / "alertmanager" / name).read_text()
        for name in ("alertmanager.yml", "render-config")
    }


@pytest.mark.slow
def test_prometheus_finds_every_rule_file_where_its_config_looks(manifests: list[dict]) -> None:
    config = load_yaml(MONITORING / "prometheus" / "prometheus-k8s.yml")
    assert config["rule_files"] == ["rules/*.yml"]
    pod = pod_spec(by_kind(manifests, "Deployment")["prometheus"])
    args = pod["containers"][0]["args"]
    config_dir = Path(next(a for a in args if a.startswith("--config.file=")).split("=")[1]).parent
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert Path(mounts["config"]) == config_dir
    projected = {}
    for source in volume["projected"]["sources"]:
        name = source["configMap"]["name"].rsplit("-", 1)[0]
        for item in source["configMap"].get("items", []):
            projected[item["path"]] = (name, item["key"])
    rules = sorted((MONITORING / "prometheus" / "rules").glob("*.yml"))
    assert {f"rules/{p.name}": ("prometheus-rules", p.name) for p in rules} == projected


@pytest.mark.slow
def test_grafana_mounts_dashboards_where_the_provider_reads_them(manifests: list[dict]) -> None:
    providers = [
        p
        for f in (MONITORING / "grafana" / "provisioning" / "dashboards").glob("*.yaml")
        for p in load_yaml(f)["providers"]
    ]
    container = pod_spec(by_kind(manifests, "Deployment")["grafana"])["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for provider in providers:
        assert mounts[provider["options"]["path"]] == "dashboards"
    assert mounts["/etc/grafana/provisioning/datasources"] == "datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == "dashboard-providers"
    env = {var["name"]: var.get("value") for var in container["env"]}
    datasources = [
        text
        for path in (MONITORING / "grafana" / "provisioning" / "datasources").glob("*.yaml")
        for text in strings(load_yaml(path))
    ]
    for variable in {name for text in datasources for name in re.findall(r"\$\{(\w+)\}", text)}:
        assert env.get(variable, "").startswith("http://"), f"Grafana lacks {variable}"
    assert env["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert env["ALERTMANAGER_URL"] == "http://alertmanager:9093"


def test_kustomizations_use_no_deprecated_fields() -> None:
    deprecated = {"commonLabels", "patchesStrategicMerge", "patchesJson6902", "bases", "vars"}
    for path in K8S.rglob("kustomization.yaml"):
        assert not deprecated & load_yaml(path).keys(), path


def test_one_object_per_file_named_component_kind() -> None:
    for path in K8S.rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        documents = load_yaml_all(path)
        assert len(documents) == 1, path
        kind = documents[0]["kind"].lower()
        assert path.stem.endswith(f"-{kind}"), f"{path.name} holds a {kind}"


def test_every_manifest_file_is_listed_in_its_kustomization() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        listed = set(load_yaml(kustomization)["resources"])
        files = {p.name for p in kustomization.parent.glob("*.yaml")} - {"kustomization.yaml"}
        assert files <= listed, f"{kustomization}: {sorted(files - listed)} not deployed"


def test_k3d_cluster_joins_compose_and_exposes_the_ingress() -> None:
    cluster = load_yaml(ROOT / "k3d" / "cluster.yaml")
    assert cluster["apiVersion"] == "k3d.io/v1alpha5" and cluster["kind"] == "Simple"
    assert cluster["metadata"]["name"] == "readmission"
    assert cluster["image"].startswith("rancher/k3s:v1.31.")  # the version validated above
    (port,) = cluster["ports"]
    assert port["port"].endswith(":80") and port["nodeFilters"] == ["loadbalancer"]
    for script in ("k8s-up", "compose-down"):
        assert f"cluster={cluster['metadata']['name']}" in (ROOT / "scripts" / script).read_text()


def test_k3d_listens_on_loopback_only() -> None:
    """The Kubernetes API and the ingress port, like every port compose publishes."""
    cluster = load_yaml(ROOT / "k3d" / "cluster.yaml")
    assert cluster["kubeAPI"]["hostIP"] == "127.0.0.1"
    assert all(port["port"].startswith("127.0.0.1:") for port in cluster["ports"])


@pytest.mark.slow
def test_alertmanager_pod_renders_its_receivers_then_starts(manifests: list[dict]) -> None:
    pod = pod_spec(by_kind(manifests, "Deployment")["alertmanager"])
    container = pod["containers"][0]
    script = " ".join(container["command"] + container["args"])
    assert script.index(
        "render-config /etc/alertmanager/alertmanager.yml /tmp/alertmanager.yml"
    ) < (script.index("exec /bin/alertmanager --config.file=/tmp/alertmanager.yml"))
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/alertmanager"] == "config" and "/tmp" in mounts  # root FS is read-only
    assert [s["secretRef"]["name"].rsplit("-", 1)[0] for s in container["envFrom"]] == [
        "alertmanager-secrets"
    ]


@pytest.mark.slow
def test_api_pods_become_ready_within_one_poll_of_a_promotion(manifests: list[dict]) -> None:
    api = pod_spec(by_kind(manifests, "Deployment")["api"])["containers"][0]
    config = next(c for n, c in by_kind(manifests, "ConfigMap").items() if n.startswith("api-"))
    poll = float(config["data"]["MODEL_POLL_SECONDS"])
    assert api["readinessProbe"]["periodSeconds"] < poll
