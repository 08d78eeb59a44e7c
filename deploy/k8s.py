"""Deploy the serving and monitoring manifests (k8s/) to a cluster and wait until they run.

    python -m deploy.k8s prepare                      # then `kubectl kustomize k8s/overlays/k3d`
    python -m deploy.k8s render [--image NAME=REF ...]             # print the manifests
    python -m deploy.k8s apply  [--image NAME=REF ...] [--context k3d-readmission]

Rendering is stock kustomize (`kustomize build` or `kubectl kustomize`, no flags) after `prepare`,
which render and apply run first: kustomize reads files inside a kustomization's own folder only,
and the ConfigMaps' files live in monitoring/ (compose mounts them too) and the Secrets' values in
.env. `prepare` copies monitoring/ into k8s/base/generated/ and writes each workload's Secret, only
the keys it reads (WORKLOAD_SECRETS), from .env into k8s/overlays/<overlay>/generated/ (both
git-ignored): the back office's credentials never enter the cluster.
Objects are applied with server-side apply in dependency order, then every Deployment is watched
until it is rolled out (the same rule as `kubectl rollout status`), printing progress as it
changes. With no version in production yet the API pods cannot be ready: they are waited for until
they run, and the command ends by saying how to promote a version.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "k8s" / "overlays" / "k3d"
CONTEXT = os.environ.get("KUBE_CONTEXT", "k3d-readmission")
FIELD_MANAGER = "readmission-deploy"
# Owns the replica count of autoscaled Deployments in our stead (Cluster.apply_autoscaled).
REPLICAS_FIELD_MANAGER = "readmission-deploy-replicas"
# Dependencies first; NetworkPolicies before any pod, so no pod ever runs unprotected.
KIND_ORDER = (
    "Namespace",
    "NetworkPolicy",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "EndpointSlice",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Ingress",
)
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# readmission.registry.PRODUCTION_STAGE: the legacy stage the API honours after the alias.
PRODUCTION_STAGE = "Production"
NOT_READY_HINTS = {
    "api": "the API is ready only once a model is in production: run the DAGs in Airflow and "
    "promote a version (MLflow UI, `readmission promote`, or 03_evaluate_and_promote)",
}


@dataclass(frozen=True)
class DatabaseUrl:
    """A Secret value made of .env: the URL of a database of the compose PostgreSQL for a login
    whose password is the .env variable `password`, percent-quoted so that any character is safe
    (SQLAlchemy unquotes it)."""

    user: str
    password: str
    database: str
    host: str = "postgres"  # k8s/base/postgres-service.yaml
    port: int = 5432
    driver: str = "postgresql+psycopg"

    def value(self, env: Mapping[str, str]) -> str:
        login = f"{quote(self.user, safe='')}:{quote(env[self.password], safe='')}"
        return f"{self.driver}://{login}@{self.host}:{self.port}/{self.database}"


# What a Secret key holds: the value of one .env variable, or a value made of .env variables.
SecretSource = str | DatabaseUrl


def variables(source: SecretSource) -> set[str]:
    """The .env variables a Secret value is made of."""
    return {source.password} if isinstance(source, DatabaseUrl) else {source}


def secret_value(source: SecretSource, env: Mapping[str, str]) -> str:
    return source.value(env) if isinstance(source, DatabaseUrl) else env[source]


# The Secret of each workload: its keys, and the .env variable each one is copied from (or made
# of). Nothing else of .env (PostgreSQL superuser and owners, MinIO, Airflow, Fernet, JWT, MLflow
# admin) reaches the cluster.
WORKLOAD_SECRETS: dict[str, dict[str, SecretSource]] = {
    "api": {
        "API_RELOAD_TOKEN": "API_RELOAD_TOKEN",
        "MLFLOW_WEBHOOK_SECRET": "MLFLOW_WEBHOOK_SECRET",
        "MLFLOW_TRACKING_USERNAME": "MLFLOW_API_USER",
        "MLFLOW_TRACKING_PASSWORD": "MLFLOW_API_PASSWORD",
        # The warehouse as the API's own login (postgres_init, readmission.data.tables.API_ROLE),
        # which may only add predictions, read realized performance, read the ledger and add to
        # it; never the owner's (WAREHOUSE_DB_PASSWORD).
        "DATABASE_URL": DatabaseUrl("readmission_api", "WAREHOUSE_API_PASSWORD", "warehouse"),
    },
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD": "GRAFANA_ADMIN_PASSWORD"},
    # monitoring/alertmanager/render-config reads them (a webhook URL may embed a token).
    "alertmanager": {
        name: name
        for name in (
            "ALERT_WEBHOOK_URL",
            "ALERT_SLACK_WEBHOOK_URL",
            "ALERT_SLACK_CHANNEL",
            "ALERT_EMAIL_TO",
            "ALERT_EMAIL_FROM",
            "ALERT_SMTP_SMARTHOST",
            "ALERT_SMTP_USERNAME",
            "ALERT_SMTP_PASSWORD",
        )
    },
}
# .env variables a Secret may leave empty, and the defaults compose applies to them too.
OPTIONAL_SECRETS = {"MLFLOW_API_USER": "readmission-api"} | dict.fromkeys(
    WORKLOAD_SECRETS["alertmanager"], ""
)

Manifest = dict[str, Any]


class DeployError(RuntimeError):
    """A deployment step failed; the message says what to do."""


def kustomize_command(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    if which("kustomize"):
        return ["kustomize", "build"]
    if which("kubectl"):
        return ["kubectl", "kustomize"]
    raise DeployError(
        "neither kubectl nor kustomize is on PATH: install kubectl "
        "(https://kubernetes.io/docs/tasks/tools/)"
    )


def repository(overlay: Path) -> Path:
    """The checkout an overlay (k8s/overlays/<name>) belongs to: where .env and monitoring/ are."""
    return overlay.resolve().parents[2]


def copy_monitoring_configs(overlay: Path) -> Path:
    """Copy monitoring/ to k8s/base/generated/monitoring/, where the base's configMapGenerator
    reads it (replacing an earlier copy, so a file deleted upstream is gone here too)."""
    root = repository(overlay)
    target = root / "k8s" / "base" / "generated" / "monitoring"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(root / "monitoring", target)
    return target


def write_workload_secrets(overlay: Path) -> Path:
    """Write each workload's keys (WORKLOAD_SECRETS), from the repository's .env, into
    k8s/overlays/<overlay>/generated/<workload>.env (mode 0600), which the overlay's
    secretGenerator reads. Returns the folder."""
    root = repository(overlay)
    env_file = root / ".env"
    if not env_file.is_file():
        raise DeployError(f"no {env_file}: scripts/compose-up creates it (make up)")
    values = {**OPTIONAL_SECRETS, **{k: v for k, v in dotenv_values(env_file).items() if v}}
    sources = {
        name
        for keys in WORKLOAD_SECRETS.values()
        for source in keys.values()
        for name in variables(source)
    }
    if missing := sorted(sources - values.keys()):
        raise DeployError(
            f"{env_file} lacks {', '.join(missing)}: run `make up` (it generates them)"
        )
    if multiline := sorted(source for source in sources if "\n" in values[source]):
        raise DeployError(f"{env_file}: {', '.join(multiline)} must be one line")
    folder = overlay.resolve() / "generated"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for workload, keys in WORKLOAD_SECRETS.items():
        path = folder / f"{workload}.env"
        path.touch(mode=0o600)
        path.write_text(
            "".join(f"{key}={secret_value(source, values)}\n" for key, source in keys.items())
        )
    return folder


def prepare(overlay: Path) -> None:
    """Write what `overlay` reads from outside k8s/ into it: after this, stock kustomize builds
    it (no --load-restrictor). Idempotent; re-run after a change of .env or monitoring/."""
    write_workload_secrets(overlay)
    copy_monitoring_configs(overlay)


def render(overlay: Path = OVERLAY) -> list[Manifest]:
    """The objects kustomize builds from `overlay`, with the workloads' Secrets from .env."""
    prepare(overlay)
    result = subprocess.run([*kustomize_command(), str(overlay)], capture_output=True, text=True)
    if result.returncode:
        raise DeployError(f"kustomize could not render {overlay}:\n{result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def mlflow_error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error_code", ""))
    except ValueError:
        return ""


def production_version(overlay: Path, get: Callable[..., httpx.Response] = httpx.get) -> str | None:
    """The version the API pods would serve, asked of the compose MLflow on the host as the API's
    own read-only user, by the API's rule (readmission.registry.production_version): the alias of
    the overlay's api.env (what the pods read), else the newest version in the legacy stage
    Production. None when neither exists: bin/mlflow-users creates the model before any training
    run, so MLflow answers "no such alias" (400 INVALID_PARAMETER_VALUE) and an empty stage."""
    root = repository(overlay)
    env = dotenv_values(root / ".env")
    api = dotenv_values(root / "k8s" / "base" / "api.env")
    url = f"http://127.0.0.1:{env.get('MLFLOW_HOST_PORT') or 5000}"
    user = env.get("MLFLOW_API_USER") or OPTIONAL_SECRETS["MLFLOW_API_USER"]
    model, alias_name = str(api["MODEL_NAME"]), str(api["MODEL_ALIAS"])

    def ask(path: str, params: dict[str, str]) -> httpx.Response:
        try:
            response = get(
                f"{url}/api/2.0/mlflow/registered-models/{path}",
                params=params,
                auth=(user, env.get("MLFLOW_API_PASSWORD") or ""),
                timeout=10,
            )
        except httpx.HTTPError as error:
            raise DeployError(
                f"MLflow does not answer at {url} ({error}): is the compose stack up (make up)?"
            ) from error
        if response.status_code == 401:
            raise DeployError(
                f"MLflow at {url} refuses the API's user {user!r} (401): MLFLOW_API_USER / "
                "MLFLOW_API_PASSWORD in .env must match what mlflow-init set (re-run `make up`)"
            )
        if response.status_code == 403:
            # mlflow-init grants READ on the model; without it the pods could not read it either.
            raise DeployError(
                f"MLflow at {url} denies the API's user {user!r} the model {model!r} (403): "
                "mlflow-init grants it READ on MODEL_NAME of .env, which must be the model of "
                "k8s/base/api.env (re-run `make up`)"
            )
        return response

    alias = ask("alias", {"name": model, "alias": alias_name})
    if alias.status_code == 200:
        return str(alias.json()["model_version"]["version"])
    if mlflow_error_code(alias) not in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
        raise DeployError(f"MLflow at {url} answered {alias.status_code}: {alias.text}")
    staged = ask("get-latest-versions", {"name": model, "stages": PRODUCTION_STAGE})
    if staged.status_code == 404 and mlflow_error_code(staged) == "RESOURCE_DOES_NOT_EXIST":
        return None  # a server without mlflow-init: the model is not registered yet
    if staged.is_error:
        raise DeployError(f"MLflow at {url} answered {staged.status_code}: {staged.text}")
    versions = staged.json().get("model_versions") or []
    return str(max(int(v["version"]) for v in versions)) if versions else None


def promote_hint(overlay: Path) -> str:
    """What to do when no version is in production: the three ways to promote one, with the
    host ports and logins of .env."""
    root = repository(overlay)
    env = dotenv_values(root / ".env")
    api = dotenv_values(root / "k8s" / "base" / "api.env")
    model, alias = api["MODEL_NAME"], api["MODEL_ALIAS"]
    airflow = f"http://localhost:{env.get('AIRFLOW_HOST_PORT') or 8080}"
    mlflow = f"http://localhost:{env.get('MLFLOW_HOST_PORT') or 5000}"
    admin = env.get("MLFLOW_ADMIN_USER") or "admin"
    return (
        f"No version of {model} is in production yet (alias {alias!r}, or the legacy stage "
        f"{PRODUCTION_STAGE}): the API pods run and become ready within MODEL_POLL_SECONDS "
        f"({api.get('MODEL_POLL_SECONDS') or 5} s) of a promotion. Promote a trained version "
        "(run 01_ingest_data in Airflow first) with one of:\n"
        f"  Airflow  trigger 03_evaluate_and_promote with 'Promote automatically' on ({airflow})\n"
        f"  MLflow   {mlflow} > Models > {model} > a version > Aliases: add {alias!r}\n"
        "  CLI      (after `make setup`; .env points it at the compose warehouse and MLflow)\n"
        f"           MLFLOW_TRACKING_USERNAME={admin} "
        "MLFLOW_TRACKING_PASSWORD=<MLFLOW_ADMIN_PASSWORD of .env> \\\n"
        "           .venv/bin/readmission promote <version>"
    )


def image_name(reference: str) -> str:
    """`registry:5000/team/app:tag@sha256:...` -> `registry:5000/team/app`."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def containers(manifest: Manifest) -> list[dict]:
    if manifest.get("kind") not in POD_TEMPLATE_KINDS:
        return []
    pod = manifest["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def set_images(manifests: Iterable[Manifest], images: dict[str, str]) -> list[Manifest]:
    """Copies of `manifests` whose containers named `name` in `images` run `images[name]`
    (like `kustomize edit set image`, without touching the files)."""
    result = [copy.deepcopy(manifest) for manifest in manifests]
    used = set()
    for manifest in result:
        for container in containers(manifest):
            name = image_name(container["image"])
            if name in images:
                container["image"] = images[name]
                used.add(name)
    if unknown := sorted(set(images) - used):
        raise DeployError(f"no container runs the image(s) {', '.join(unknown)}")
    return result


def apply_order(manifests: Iterable[Manifest]) -> list[Manifest]:
    """Stable sort by KIND_ORDER; kinds not listed go last."""

    def rank(manifest: Manifest) -> int:
        kind = manifest.get("kind")
        return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)

    return sorted(manifests, key=rank)


def describe(manifest: Manifest) -> str:
    return f"{manifest['kind'].lower()}/{manifest['metadata']['name']}"


def autoscaled(manifests: Iterable[Manifest]) -> set[str]:
    """The objects (`kind/name`) a HorizontalPodAutoscaler of `manifests` scales."""
    return {
        f"{target['kind'].lower()}/{target['name']}"
        for manifest in manifests
        if manifest.get("kind") == "HorizontalPodAutoscaler"
        and (target := manifest["spec"]["scaleTargetRef"])
    }


def rollout_status(deployment: Manifest) -> tuple[bool, str]:
    """Whether a Deployment is rolled out, and what it waits for (kubectl's rollout status rule).
    Raises DeployError once Kubernetes gave up on it (progress deadline exceeded)."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    if deployment["metadata"].get("generation", 0) > (status.get("observedGeneration") or 0):
        return False, "waiting for the new spec to be observed"
    check_progress(deployment)
    wanted = spec.get("replicas", 1)
    replicas = status.get("replicas") or 0
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < wanted:
        return False, f"{updated} of {wanted} new replicas updated"
    if replicas > updated:
        return False, f"{replicas - updated} old replicas pending termination"
    if available < updated:
        return False, f"{available} of {updated} updated replicas available"
    return True, f"rolled out ({available} available)"


def check_progress(deployment: Manifest) -> None:
    """DeployError once Kubernetes gave up on a Deployment (progress deadline exceeded)."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            raise DeployError(
                f"deployment/{deployment['metadata']['name']} exceeded its progress deadline: "
                f"{condition.get('message', '')}"
            )


def started_status(deployment: Manifest, pods: list[Manifest]) -> tuple[bool, str]:
    """For pods that cannot be ready yet (the API without a production model): done once the new
    spec's replicas exist and every pod's containers started (startup probe passed: the process
    answers), so readiness is all that is left. A rollout over unready old pods stops at its
    first surge pod (maxUnavailable 0 keeps them): that counts as deployed too."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    if deployment["metadata"].get("generation", 0) > (status.get("observedGeneration") or 0):
        return False, "waiting for the new spec to be observed"
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    replaced = (status.get("replicas") or 0) > updated  # old pods kept while none is ready
    if updated == 0 or (updated < wanted and not replaced):
        return False, f"{updated} of {wanted} new replicas created"
    started = sum(
        1
        for pod in pods
        if (containers := (pod.get("status") or {}).get("containerStatuses") or [])
        and all(container.get("started") for container in containers)
    )
    if started < len(pods) or not pods:
        return False, f"{started} of {len(pods)} pods started"
    return True, f"{started} pods running, not ready until a version is in production"


def wait_for_rollouts(
    names: Iterable[str],
    status: Callable[[str], tuple[bool, str]],
    timeout: float,
    poll: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    echo: Callable[[str], None] = print,
) -> None:
    """Poll every Deployment in `names` (`status(name)`: done, and what it waits for) until all
    are done, echoing each status change; DeployError naming the laggards when `timeout` seconds
    pass."""
    pending = list(names)
    last: dict[str, str] = {}
    deadline = clock() + timeout
    while True:
        for name in list(pending):
            done, message = status(name)
            if last.get(name) != message:
                echo(f"deployment/{name}: {message}")
                last[name] = message
            if done:
                pending.remove(name)
        if not pending:
            return
        if clock() >= deadline:
            waiting = ", ".join(f"{name} ({last[name]})" for name in pending)
            raise DeployError(f"not rolled out after {timeout:.0f}s: {waiting}")
        sleep(poll)


def pod_problems(pod: Manifest) -> list[str]:
    """Why a pod does not serve, in words: waiting reasons, crashes, failing readiness.
    (The client's `to_dict()` keeps absent fields as None, hence the `or`s.)"""
    problems = []
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        name, state = container["name"], container.get("state") or {}
        if waiting := state.get("waiting"):
            reason = waiting.get("reason") or "waiting"
            problems.append(f"{name}: {reason} {waiting.get('message') or ''}".rstrip())
        elif state.get("running") is not None and not container.get("ready"):
            problems.append(f"{name}: running, not ready (readiness probe failing)")
        if restarts := container.get("restartCount") or 0:
            last = (container.get("lastState") or {}).get("terminated") or {}
            exit_code = last.get("exitCode")
            problems.append(
                f"{name}: restarted {restarts}x, last exit "
                f"{'?' if exit_code is None else exit_code} "
                f"({last.get('reason') or 'unknown'})"
            )
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            problems.append(f"unschedulable: {condition.get('message') or ''}")
    return problems


def api_error_message(error: Exception) -> str:
    """The API server's own message (a Status object's `message`) when there is one."""
    try:
        return json.loads(getattr(error, "body", None) or "")["message"]
    except (TypeError, ValueError, KeyError):
        status = getattr(error, "status", None)
        return f"{status} {getattr(error, 'reason', '')}".strip() if status else str(error)


@contextmanager
def api_errors(action: str) -> Iterator[None]:
    """Kubernetes client errors as a DeployError saying what failed and the server's reason."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import ResourceNotFoundError
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (ApiException, ResourceNotFoundError, HTTPError) as error:
        raise DeployError(f"{action}: {api_error_message(error)}") from error


class ClusterCalls(Protocol):
    """What `deploy` asks of a cluster: `Cluster`'s calls (a test's fake answers them too)."""

    def apply(self, manifest: Manifest) -> None: ...

    def apply_autoscaled(self, manifest: Manifest) -> None: ...

    def deployment(self, namespace: str, name: str) -> Manifest: ...

    def pods(self, namespace: str, selector: dict[str, str]) -> list[Manifest]: ...


class Cluster:
    """The few API calls the deployment needs, through the kubernetes client's DynamicClient."""

    def __init__(self, dynamic: Any) -> None:
        self.dynamic = dynamic

    @classmethod
    def connect(cls, context: str | None) -> Cluster:
        from kubernetes import client, config, dynamic

        try:
            config.load_kube_config(context=context)
        except Exception as error:  # kubeconfig missing, context unknown, ...
            raise DeployError(
                f"cannot use kube context {context!r}: {error} "
                "(create the cluster with scripts/k8s-up)"
            ) from error
        return cls(dynamic.DynamicClient(client.ApiClient()))

    def _resource(self, api_version: str, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def apply(self, manifest: Manifest, field_manager: str = FIELD_MANAGER) -> None:
        with api_errors(f"could not apply {describe(manifest)}"):
            resource = self._resource(manifest["apiVersion"], manifest["kind"])
            self.dynamic.server_side_apply(
                resource,
                body=manifest,
                namespace=manifest["metadata"].get("namespace"),
                field_manager=field_manager,
                force_conflicts=True,
            )

    def apply_autoscaled(self, manifest: Manifest) -> None:
        """Apply a Deployment that a HorizontalPodAutoscaler scales without resetting its size:
        the manifest's replicas only create it. Whoever applies spec.replicas owns it, and a
        forced apply would set it back on every deploy, undoing the HPA. So the count is handed
        to a field manager of its own, at the current value (shared ownership: no change, no
        conflict), and our manager applies the Deployment without it (Kubernetes' "transferring
        ownership" recipe). Handing over before dropping matters: a field only we owned would
        be removed, i.e. reset to 1."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        current = self.find_deployment(namespace, name)
        without_replicas = copy.deepcopy(manifest)
        initial = without_replicas["spec"].pop("replicas", 1)
        if current is None:
            self.apply(manifest)
        replicas = initial if current is None else (current.get("spec") or {}).get("replicas")
        handover = {
            "apiVersion": manifest["apiVersion"],
            "kind": manifest["kind"],
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas},
        }
        self.apply(handover, field_manager=REPLICAS_FIELD_MANAGER)
        if current is not None:
            self.apply(without_replicas)

    def find_deployment(self, namespace: str, name: str) -> Manifest | None:
        """The Deployment, or None when it does not exist (yet)."""
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            return self.deployment(namespace, name)
        except DeployError as error:
            if isinstance(error.__cause__, NotFoundError):
                return None
            raise

    def deployment(self, namespace: str, name: str) -> Manifest:
        with api_errors(f"could not read deployment/{name}"):
            resource = self._resource("apps/v1", "Deployment")
            return resource.get(name=name, namespace=namespace).to_dict()

    def pods(self, namespace: str, selector: dict[str, str]) -> list[Manifest]:
        labels = ",".join(f"{key}={value}" for key, value in selector.items())
        with api_errors(f"could not list the pods {labels}"):
            found = self._resource("v1", "Pod").get(namespace=namespace, label_selector=labels)
            return found.to_dict()["items"]


def deploy(
    manifests: list[Manifest],
    cluster: ClusterCalls,
    timeout: float,
    echo: Callable[[str], None] = print,
    model_in_production: bool = True,
) -> None:
    """Apply `manifests` in dependency order, then wait for every Deployment's rollout (for the
    API without a model in production: until its pods run); on a timeout, say why the pods that
    lag do not serve."""
    ordered = apply_order(manifests)
    scaled = autoscaled(ordered)
    for manifest in ordered:
        if describe(manifest) in scaled:
            cluster.apply_autoscaled(manifest)
        else:
            cluster.apply(manifest)
        echo(f"applied {describe(manifest)}")
    by_name = {m["metadata"]["name"]: m for m in ordered if m["kind"] == "Deployment"}
    waiting_for_model = set() if model_in_production else by_name.keys() & NOT_READY_HINTS.keys()

    def status(name: str) -> tuple[bool, str]:
        manifest = by_name[name]
        current = cluster.deployment(manifest["metadata"]["namespace"], name)
        if name not in waiting_for_model:
            return rollout_status(current)
        # No progress-deadline check: unready pods exceed it by design until a promotion.
        pods = cluster.pods(
            manifest["metadata"]["namespace"], manifest["spec"]["selector"]["matchLabels"]
        )
        return started_status(current, pods)

    try:
        wait_for_rollouts(by_name, status, timeout=timeout, echo=echo)
    except DeployError as error:
        details = [str(error)]
        for name, manifest in by_name.items():
            namespace = manifest["metadata"]["namespace"]
            selector = manifest["spec"]["selector"]["matchLabels"]
            for pod in cluster.pods(namespace, selector):
                for problem in pod_problems(pod):
                    details.append(f"  pod/{pod['metadata']['name']}: {problem}")
                    if "not ready" in problem and name in NOT_READY_HINTS:
                        details.append(f"    hint: {NOT_READY_HINTS[name]}")
        raise DeployError("\n".join(details)) from error


def parse_images(pairs: list[str]) -> dict[str, str]:
    images = {}
    for pair in pairs:
        name, sep, reference = pair.partition("=")
        if not sep or not name or not reference:
            raise argparse.ArgumentTypeError(f"--image wants NAME=REFERENCE, got {pair!r}")
        images[name] = reference
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.k8s", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["prepare", "render", "apply"])
    parser.add_argument("--overlay", type=Path, default=OVERLAY)
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME=REFERENCE",
        help="run REFERENCE wherever a container runs image NAME",
    )
    parser.add_argument("--context", default=CONTEXT, help="kube context (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=300, help="rollout wait, seconds")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args.overlay)
            print(f"prepared: kubectl kustomize {args.overlay} builds it now")
            return 0
        images = parse_images(args.image)
        manifests = set_images(render(args.overlay), images)
        if args.command == "render":
            yaml.safe_dump_all(manifests, sys.stdout, sort_keys=False)
            return 0
        production = production_version(args.overlay)
        print(f"production version: {production or 'none yet'}")
        cluster = Cluster.connect(args.context)
        deploy(manifests, cluster, args.timeout, model_in_production=production is not None)
    except (DeployError, argparse.ArgumentTypeError) as error:
        print(f"deploy failed: {error}", file=sys.stderr)
        return 1
    print(
        "deployed: http://api.localhost:8081  http://ui.localhost:8081  "
        "http://grafana.localhost:8081"
    )
    if production is None:
        print(promote_hint(args.overlay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
