"""Reading the model registry: each version's aliases, stage, tags and run metrics, and which
version is in production. What `readmission status`, the API's /model/history and the realized
performance read; `readmission.registry` writes (logs, registers, promotes) and loads models.

A tracking server (http, https) is read through MLflow's REST API with the standard library:
importing MLflow takes seconds, longer than the whole status needs. A local store (the embedded
SQLite default, a file store) can only be read through MLflow itself; its entities are turned
into the REST API's JSON, so one parser reads both.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

from readmission.config import Settings

PRODUCTION_STAGE = "Production"
# The holdout (by fingerprint) the gate last scored versions on: the one the history compares.
COMPARED_HOLDOUT_TAG = "compared_holdout_fingerprint"
ROLLED_BACK_TAG = "rolled_back"  # on a version a rollback took out of production
# MLflow's answer for a model, version or alias that does not exist.
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_PAGE = 10_000  # versions a search returns at once (MLflow's own default)


def holdout_auc_tag(holdout_fingerprint: str) -> str:
    """The version tag keeping a version's ROC-AUC on one holdout (tag keys allow no '@')."""
    return f"holdout_roc_auc.{holdout_fingerprint}"


@dataclass(frozen=True)
class VersionSummary:
    version: str
    run_id: str | None
    parent_version: str | None
    batch_id: str | None
    aliases: list[str]
    stage: str | None
    metrics: dict[str, float]
    tags: dict[str, str]

    def roc_auc_on(self, holdout_fingerprint: str | None) -> float | None:
        """The version's ROC-AUC on that holdout, if the gate scored it there."""
        if holdout_fingerprint is None:
            return None
        kept = self.tags.get(holdout_auc_tag(holdout_fingerprint))
        return float(kept) if kept is not None else None


class RegistryError(RuntimeError):
    """The tracking server refused a read, or could not be reached."""


class _Registry(Protocol):
    """The four reads, each answering the REST API's JSON (None: no such object)."""

    def registered_model(self, name: str) -> dict[str, Any] | None: ...
    def versions(self, name: str) -> list[dict[str, Any]]: ...
    def version_by_alias(self, name: str, alias: str) -> dict[str, Any] | None: ...
    def run(self, run_id: str) -> dict[str, Any] | None: ...


class _RestRegistry:
    """MLflow's REST API, logged in as MLflow's own clients are (MLFLOW_TRACKING_USERNAME and
    _PASSWORD, or _TOKEN; MLFLOW_TRACKING_INSECURE_TLS, _SERVER_CERT_PATH; MLFLOW_WORKSPACE)."""

    def __init__(self, uri: str, timeout: float = 30.0) -> None:
        self.base = f"{uri.rstrip('/')}/api/2.0/mlflow/"
        self.timeout = timeout
        self.headers = {"Accept": "application/json"}
        user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
        if user and password:
            login = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {login}"
        elif token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
            self.headers["Authorization"] = f"Bearer {token}"
        if workspace := os.environ.get("MLFLOW_WORKSPACE", "").strip():
            self.headers["X-MLFLOW-WORKSPACE"] = workspace
        self.context: ssl.SSLContext | None = None
        if uri.startswith("https:"):
            insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
            cafile = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None
            self.context = ssl.create_default_context(cafile=cafile)
            if insecure:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def _get(self, endpoint: str, **params: str | int) -> dict[str, Any] | None:
        url = f"{self.base}{endpoint}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as r:
                answer: dict[str, Any] = json.load(r)
                return answer
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            try:
                code = json.loads(body).get("error_code")
            except ValueError:
                code = None
            if code in _MISSING:
                return None
            raise RegistryError(f"GET {url}: HTTP {error.code} {body[:500]}") from None
        except OSError as error:  # refused, reset, timed out, name not resolved
            raise RegistryError(f"GET {url}: MLflow did not answer ({error})") from None

    def registered_model(self, name: str) -> dict[str, Any] | None:
        found = self._get("registered-models/get", name=name)
        return found["registered_model"] if found else None

    def versions(self, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            params: dict[str, str | int] = {"filter": f"name = '{name}'", "max_results": _PAGE}
            if token:
                params["page_token"] = token
            page = self._get("model-versions/search", **params) or {}
            found.extend(page.get("model_versions", []))
            token = page.get("next_page_token", "")
            if not token:
                return found

    def version_by_alias(self, name: str, alias: str) -> dict[str, Any] | None:
        found = self._get("registered-models/alias", name=name, alias=alias)
        return found["model_version"] if found else None

    def run(self, run_id: str) -> dict[str, Any] | None:
        found = self._get("runs/get", run_id=run_id)
        return found["run"] if found else None


class _StoreRegistry:
    """A local store, through MLflow's client (imported here only: seconds to import)."""

    def __init__(self, settings: Settings) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        # A client of its own: reading needs neither the fluent API's global URIs that
        # readmission.registry.connect sets, nor anything else of that module.
        self.client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
        self.error = MlflowException

    def _json(self, call: Any, *args: str) -> dict[str, Any] | None:
        from mlflow.utils.proto_json_utils import message_to_json

        try:
            entity = call(*args)
        except self.error as error:
            if error.error_code in _MISSING:
                return None
            raise
        answer: dict[str, Any] = json.loads(message_to_json(entity.to_proto()))
        return answer

    def registered_model(self, name: str) -> dict[str, Any] | None:
        return self._json(self.client.get_registered_model, name)

    def versions(self, name: str) -> list[dict[str, Any]]:
        try:
            found = self.client.search_model_versions(f"name = '{name}'", max_results=_PAGE)
        except self.error as error:
            if error.error_code in _MISSING:
                return []
            raise
        from mlflow.utils.proto_json_utils import message_to_json

        return [json.loads(message_to_json(v.to_proto())) for v in found]

    def version_by_alias(self, name: str, alias: str) -> dict[str, Any] | None:
        return self._json(self.client.get_model_version_by_alias, name, alias)

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self._json(self.client.get_run, run_id)


def _registry(settings: Settings) -> _Registry:
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        return _RestRegistry(uri)
    return _StoreRegistry(settings)


def _tags(entity: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in entity.get("tags", [])}


def production_version(settings: Settings) -> str | None:
    """The production version: alias MODEL_ALIAS first, else the newest legacy stage Production."""
    registry = _registry(settings)
    aliased = registry.version_by_alias(settings.model_name, settings.model_alias)
    if aliased is not None:
        return str(aliased["version"])
    staged = [
        v for v in _sorted(registry.versions(settings.model_name)) if _stage(v) == PRODUCTION_STAGE
    ]
    return str(staged[-1]["version"]) if staged else None


def compared_holdout(settings: Settings) -> str | None:
    """The fingerprint of the holdout the gate last scored versions on, if it ever did."""
    model = _registry(settings).registered_model(settings.model_name)
    return _tags(model).get(COMPARED_HOLDOUT_TAG) if model else None


def version_summaries(settings: Settings) -> list[VersionSummary]:
    """Every version of MODEL_NAME, oldest first, with its run's metrics."""
    registry = _registry(settings)
    versions = _sorted(registry.versions(settings.model_name))
    aliases: dict[str, list[str]] = {}  # version search results carry no aliases
    model = registry.registered_model(settings.model_name) if versions else None
    for alias in (model or {}).get("aliases", []):
        aliases.setdefault(str(alias["version"]), []).append(alias["alias"])
    summaries = []
    for v in versions:
        run_id = v.get("run_id") or None
        run = registry.run(run_id) if run_id else None
        metrics = (run or {}).get("data", {}).get("metrics", [])
        tags = _tags(v)
        summaries.append(
            VersionSummary(
                version=str(v["version"]),
                run_id=run_id,
                parent_version=tags.get("parent_version"),
                batch_id=tags.get("batch_id"),
                aliases=aliases.get(str(v["version"]), []),
                stage=_stage(v),
                metrics={m["key"]: float(m["value"]) for m in metrics},
                tags=tags,
            )
        )
    return summaries


def _sorted(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(versions, key=lambda v: int(v["version"]))


def _stage(version: dict[str, Any]) -> str | None:
    # The REST API leaves out a field at its default: MLflow's client reads a missing stage
    # as "None", the legacy name of no stage.
    return str(version.get("current_stage", "None"))
