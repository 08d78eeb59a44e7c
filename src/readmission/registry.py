"""The MLflow side: tracking setup, the logged pyfunc model and model registry helpers."""

from __future__ import annotations

import logging
import tempfile
import warnings
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PyFuncModel, PythonModel
from mlflow.types import ColSpec, Schema, TensorSpec

from readmission.config import Settings
from readmission.data.database import ensure_sqlite_directory
from readmission.registry_reader import PRODUCTION_STAGE
from readmission.registry_reader import production_version as production_number
from readmission.schema import SPECS, Integer

if TYPE_CHECKING:
    # Only named in annotations: reading the registry (`readmission status`) then needs no
    # scikit-learn; unpickling a logged model imports it.
    from readmission.model import ReadmissionModel

PROBABILITY_COLUMN = "readmit_30d_probability"
log = logging.getLogger(__name__)


class ReadmissionPyfunc(PythonModel):
    """Preprocessing and classifier as one model: raw data set columns in, probability out."""

    def __init__(self, model: ReadmissionModel) -> None:
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        probability = self.model.predict_proba(pd.DataFrame(model_input))
        return pd.DataFrame({PROBABILITY_COLUMN: probability})


def signature() -> ModelSignature:
    """The pyfunc's columns and types, from the data set's schema rather than inferred from an
    example: MLflow then warns that an inferred integer column could hold missing values, which
    cannot happen here (validation quarantines such rows and the API rejects them)."""
    inputs: list[ColSpec | TensorSpec] = [
        ColSpec("long" if isinstance(spec, Integer) else "string", name)
        for name, spec in SPECS.items()
    ]
    return ModelSignature(Schema(inputs), Schema([ColSpec("double", PROBABILITY_COLUMN)]))


def connect(settings: Settings) -> MlflowClient:
    """Point the fluent API at the configured store and return a client of it."""
    if settings.tracking_uri.startswith("sqlite:"):
        ensure_sqlite_directory(settings.tracking_uri)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


def experiment_id(settings: Settings) -> str:
    connect(settings)
    experiment = mlflow.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if not settings.mlflow_tracking_uri:  # embedded default: artifacts beside the SQLite store
        location = (settings.home / "artifacts").resolve().as_uri()
    try:
        return mlflow.create_experiment(settings.experiment_name, artifact_location=location)
    except MlflowException:  # created concurrently by another process
        concurrent = mlflow.get_experiment_by_name(settings.experiment_name)
        if concurrent is None:  # the failure was not a name clash: report it
            raise
        return concurrent.experiment_id


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return sorted(found, key=lambda v: int(v.version))


def model_version(settings: Settings, version: str | int) -> ModelVersion | None:
    """Version `version` of MODEL_NAME, or None when the registry has no such version."""
    try:
        return connect(settings).get_model_version(settings.model_name, str(version))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def version_for_batch(
    settings: Settings, batch_id: int, warehouse_id: str, parent_version: str
) -> ModelVersion | None:
    """The version a training step registered for this batch of this warehouse's lineage on top
    of `parent_version`, when the step died before its bookkeeping. Versions registered by
    other means lack those tags and are never adopted."""
    for version in _versions(connect(settings), settings.model_name):
        tags = version.tags
        if (
            tags.get("batch_id") == str(batch_id)
            and tags.get("warehouse_id") == warehouse_id
            and tags.get("parent_version") == parent_version
        ):
            return version
    return None


def production_version(settings: Settings) -> ModelVersion | None:
    """The production model (registry_reader.production_version says which), as MLflow's
    entity: what promoting, rolling back and noticing changes work with."""
    version = production_number(settings)
    return connect(settings).get_model_version(settings.model_name, version) if version else None


def newest_version(settings: Settings) -> ModelVersion | None:
    """The latest registered version of the model: the head of its lineage."""
    found = _versions(connect(settings), settings.model_name)
    return found[-1] if found else None


def shadow_version(settings: Settings) -> ModelVersion | None:
    """The version scored in shadow beside production (alias SHADOW_ALIAS), or None."""
    try:
        return connect(settings).get_model_version_by_alias(
            settings.model_name, settings.shadow_alias
        )
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    return None


def set_shadow(settings: Settings, version: str | int | None) -> None:
    """Point alias SHADOW_ALIAS at `version` (None: remove it, no version in shadow)."""
    client = connect(settings)
    if version is None:
        try:
            client.delete_registered_model_alias(settings.model_name, settings.shadow_alias)
        except MlflowException as error:  # no shadow already: nothing to clear
            if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
        return
    client.get_model_version(settings.model_name, str(version))  # fails clearly if absent
    client.set_registered_model_alias(settings.model_name, settings.shadow_alias, str(version))


def promote(settings: Settings, version: str | int) -> ModelVersion:
    """Point alias MODEL_ALIAS at `version` and move it to the legacy stage Production."""
    client = connect(settings)
    version = str(version)
    client.get_model_version(settings.model_name, version)  # fails clearly if absent
    # Stage first, alias last: readers resolve the alias first, so they never see the new
    # version before its stage says Production.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, still used
        client.transition_model_version_stage(
            settings.model_name, version, PRODUCTION_STAGE, archive_existing_versions=True
        )
    client.set_registered_model_alias(settings.model_name, settings.model_alias, version)
    log.info("promoted %s version %s to %s", settings.model_name, version, settings.model_alias)
    return client.get_model_version(settings.model_name, version)


def model_uri(settings: Settings, version: str | int) -> str:
    return f"models:/{settings.model_name}/{version}"


def load_pyfunc(settings: Settings, version: str | int) -> PyFuncModel:
    """A registered version, loaded in memory. Its artifacts are downloaded into a temporary
    directory removed at once, loaded or not: left to MLflow, every load leaves a copy behind
    (a serving pod's /tmp is small, and a failing version is retried)."""
    connect(settings)
    with tempfile.TemporaryDirectory(prefix="readmission-model-") as download:
        return mlflow.pyfunc.load_model(model_uri(settings, version), dst_path=download)


def pyfunc_probability(settings: Settings, version: str | int, frame: pd.DataFrame) -> np.ndarray:
    """P(readmission) of each row of `frame` through the version's logged pyfunc model, the
    artifact MLflow itself would serve."""
    output = load_pyfunc(settings, version).predict(frame)
    if not isinstance(output, pd.DataFrame):  # a version logged by some other code
        raise TypeError(f"version {version} predicts {type(output).__name__}, not a DataFrame")
    return output[PROBABILITY_COLUMN].to_numpy()


def load_readmission_model(settings: Settings, version: str | int) -> ReadmissionModel:
    """The Python model object behind a registered version (for warm starts and compiling)."""
    return load_pyfunc(settings, version).unwrap_python_model().model
