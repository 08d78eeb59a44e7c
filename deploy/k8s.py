"""Deploy the serving and monitoring manifests (k8s/) to a cluster and wait until they run.

    .venv/bin/python -m deploy.k8s render [--image NAME=REF ...]        # print the manifests
    .venv/bin/python -m deploy.k8s apply  [--image NAME=REF ...] [--context k3d-readmission]

Rendering is kustomize's (`kustomize build` or `kubectl kustomize`) with the load restrictor off,
since the ConfigMaps come from monitoring/ and the Secret from .env, outside k8s/. Objects are
applied with server-side apply in dependency order, then every Deployment is watched until it is
rolled out (the same rule as `kubectl rollout status`), printing progress as it changes.
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "k8s" / "overlays" / "k3d"
CONTEXT = os.environ.get("KUBE_CONTEXT", "k3d-readmission")
FIELD_MANAGER = "readmission-deploy"
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
NOT_READY_HINTS = {
    "api": "the API is ready only once a model is in production: run the DAGs in Airflow and "
    "promote a version (MLflow UI, `readmission promote`, or 03_evaluate_and_promote)",
}

Manifest = dict[str, Any]


class DeployError(RuntimeError):
    """A deployment step failed; the message says what to do."""


def kustomize_command(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    if which("kustomize"):
        return ["kustomize", "build", "--load-restrictor", "LoadRestrictionsNone"]
    if which("kubectl"):
        return ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone"]
    raise DeployError(
        "neither kubectl nor kustomize is on PATH: install kubectl "
        "(https://kubernetes.io/docs/tasks/tools/)"
    )


def render(overlay: Path = OVERLAY) -> list[Manifest]:
    """The objects kustomize builds from `overlay`."""
    result = subprocess.run([*kustomize_command(), str(overlay)], capture_output=True, text=True)
    if result.returncode:
        hint = "\n(no .env? scripts/compose-up creates it)" if ".env" in result.stderr else ""
        raise DeployError(f"kustomize could not render {overlay}:\n{result.stderr.strip()}{hint}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


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


def rollout_status(deployment: Manifest) -> tuple[bool, str]:
    """Whether a Deployment is rolled out, and what it waits for (kubectl's rollout status rule).
    Raises DeployError once Kubernetes gave up on it (progress deadline exceeded)."""
    name = deployment["metadata"]["name"]
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    if deployment["metadata"].get("generation", 0) > (status.get("observedGeneration") or 0):
        return False, "waiting for the new spec to be observed"
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            raise DeployError(
                f"deployment/{name} exceeded its progress deadline: {condition.get('message', '')}"
            )
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


def wait_for_rollouts(
    names: Iterable[str],
    read: Callable[[str], Manifest],
    timeout: float,
    poll: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    echo: Callable[[str], None] = print,
) -> None:
    """Poll every Deployment in `names` (via `read(name)`) until all are rolled out, echoing each
    status change; DeployError naming the laggards when `timeout` seconds pass."""
    pending = list(names)
    last: dict[str, str] = {}
    deadline = clock() + timeout
    while True:
        for name in list(pending):
            done, message = rollout_status(read(name))
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

    def apply(self, manifest: Manifest) -> None:
        with api_errors(f"could not apply {describe(manifest)}"):
            resource = self._resource(manifest["apiVersion"], manifest["kind"])
            self.dynamic.server_side_apply(
                resource,
                body=manifest,
                namespace=manifest["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )

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
    manifests: list[Manifest], cluster: Cluster, timeout: float, echo: Callable[[str], None] = print
) -> None:
    """Apply `manifests` in dependency order, then wait for every Deployment's rollout; on a
    timeout, say why the pods that lag do not serve."""
    ordered = apply_order(manifests)
    for manifest in ordered:
        cluster.apply(manifest)
        echo(f"applied {describe(manifest)}")
    by_name = {m["metadata"]["name"]: m for m in ordered if m["kind"] == "Deployment"}
    for name in by_name.keys() & NOT_READY_HINTS.keys():
        echo(f"note: {NOT_READY_HINTS[name]}")
    try:
        wait_for_rollouts(
            by_name,
            lambda name: cluster.deployment(by_name[name]["metadata"]["namespace"], name),
            timeout=timeout,
            echo=echo,
        )
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
    parser.add_argument("command", choices=["render", "apply"])
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
        images = parse_images(args.image)
        manifests = set_images(render(args.overlay), images)
        if args.command == "render":
            yaml.safe_dump_all(manifests, sys.stdout, sort_keys=False)
            return 0
        deploy(manifests, Cluster.connect(args.context), args.timeout)
    except (DeployError, argparse.ArgumentTypeError) as error:
        print(f"deploy failed: {error}", file=sys.stderr)
        return 1
    print(
        "ready: http://api.localhost:8081  http://ui.localhost:8081  http://grafana.localhost:8081"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
