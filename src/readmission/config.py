"""Settings: one object read from the environment (and `.env`), with embedded defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

UCI_URL = "https://archive.ics.uci.edu/static/public/296/diabetes+130-us+hospitals+for+years+1999-2008.zip"
# sha256 of diabetic_data.csv (the data file inside the archive, whichever layout it has).
UCI_CSV_SHA256 = "0689e7ec031237dc63031b938805c48377748761a3b26acab621567afa24df97"
# The batch list's bound in the API schema; MAX_BATCH_ROWS chooses a limit up to it.
MAX_BATCH_ROWS_CEILING = 10_000
# An encounter is about 1.1 KB of compact JSON; 4 KiB a row leaves room for indented JSON.
BODY_BYTES_PER_ROW = 4096
BODY_BYTES_BASE = 64 * 1024


class Settings(BaseSettings):
    """Every service address and tunable of the platform. See `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    home: Path = Field(
        Path(".readmission"),
        alias="READMISSION_HOME",
        description="Local state of the embedded default (SQLite, MLflow store).",
    )
    database_url: str = Field(
        "",
        alias="DATABASE_URL",
        description="Data warehouse; default: SQLite under READMISSION_HOME.",
    )
    mlflow_tracking_uri: str = Field(
        "",
        alias="MLFLOW_TRACKING_URI",
        description="Default: a local store under READMISSION_HOME.",
    )
    experiment_name: str = Field("diabetes-readmission", alias="MLFLOW_EXPERIMENT_NAME")
    model_name: str = Field("diabetes-readmission-predictor", alias="MODEL_NAME")
    model_alias: str = Field("production", alias="MODEL_ALIAS")
    shadow_alias: str = Field(
        "challenger",
        alias="SHADOW_ALIAS",
        description="The version with this alias is scored beside production on every request "
        "and logged (in the answer's row of the prediction log), never answered.",
    )
    data_source: str = Field(
        UCI_URL, alias="DATA_SOURCE", description="UCI URL, or a local .zip or .csv path."
    )
    data_sha256: str = Field(
        UCI_CSV_SHA256,
        alias="DATA_SHA256",
        description="Expected sha256 of diabetic_data.csv; empty skips.",
    )
    batch_size: int = Field(15000, alias="BATCH_SIZE", gt=0)
    holdout_fraction: float = Field(
        0.2,
        alias="HOLDOUT_FRACTION",
        gt=0,
        lt=1,
        description="Share of patients held out; pinned by the warehouse's first ingest.",
    )
    min_batch_rows: int = Field(
        1000,
        alias="MIN_BATCH_ROWS",
        gt=0,
        description="Fewest clean rows a training batch holds: a batch closes at BATCH_SIZE "
        "rows once it holds them; a smaller remainder waits in the warehouse for the next "
        "extract.",
    )
    max_quarantine_share: float = Field(
        0.05,
        alias="MAX_QUARANTINE_SHARE",
        ge=0,
        le=1,
        description="An extract with a larger share of rows failing validation is refused "
        "whole: nothing of it is stored.",
    )
    ingest_chunk_rows: int = Field(
        50_000,
        alias="INGEST_CHUNK_ROWS",
        gt=0,
        description="Rows of an extract read and stored at once: an ingest's memory follows "
        "this, not the extract's size.",
    )
    training_lease_wait: float = Field(
        900,
        alias="TRAINING_LEASE_WAIT",
        ge=0,
        description="Seconds a training run waits for another run's lease before giving up.",
    )
    promotion_policy: Literal["superior", "non_inferior"] = Field(
        "superior",
        alias="PROMOTION_POLICY",
        description="superior: promote when the 95% interval of the challenger's AUC minus the "
        "champion's (same holdout, paired patient bootstrap) lies above 0; non_inferior: above "
        "minus NON_INFERIORITY_MARGIN.",
    )
    non_inferiority_margin: float = Field(
        0.005,
        alias="NON_INFERIORITY_MARGIN",
        ge=0,
        lt=1,
        description="AUC the challenger may lose to the champion under PROMOTION_POLICY="
        "non_inferior (the interval's lower bound must lie above minus this).",
    )
    min_auc: float = Field(0.60, alias="MIN_AUC")
    max_log_loss: float = Field(0.35, alias="MAX_LOG_LOSS")
    auto_promote: bool = Field(False, alias="AUTO_PROMOTE")
    # Acting on live evidence (readmission.release.live): the served predictions, once outcomes
    # arrive.
    live_min_outcomes: int = Field(
        500,
        alias="LIVE_MIN_OUTCOMES",
        ge=1,
        description="Fewest paired counted outcomes before a shadow may be promoted on live "
        "evidence (the lower end of its AUC-difference interval above 0).",
    )
    realized_auc_floor: float = Field(
        0.55,
        alias="REALIZED_AUC_FLOOR",
        ge=0,
        le=1,
        description="Production is rolled back when the upper end of its recent realized AUC "
        "interval falls below this.",
    )
    realized_calibration_slope_min: float = Field(0.5, alias="REALIZED_CALIBRATION_SLOPE_MIN", gt=0)
    realized_calibration_slope_max: float = Field(2.0, alias="REALIZED_CALIBRATION_SLOPE_MAX", gt=0)

    # Release: the threshold, the model card's uncertainty and subgroups, the promotion gates.
    threshold_policy: Literal["f1", "top_k"] = Field(
        "f1",
        alias="THRESHOLD_POLICY",
        description="f1: maximise F1 on the holdout; top_k: flag the THRESHOLD_TOP_PERCENT % "
        "of patients at highest risk.",
    )
    threshold_top_percent: float = Field(10.0, alias="THRESHOLD_TOP_PERCENT", gt=0, le=100)
    bootstrap_resamples: int = Field(1000, alias="BOOTSTRAP_RESAMPLES", ge=200)
    subgroup_min_events: int = Field(
        30,
        alias="SUBGROUP_MIN_EVENTS",
        ge=1,
        description="Fewer readmissions (or non-readmissions) than this: no AUC for the group.",
    )
    gate_subgroup_auc_margin: float = Field(0.1, alias="GATE_SUBGROUP_AUC_MARGIN", ge=0)
    gate_calibration_slope_min: float = Field(0.7, alias="GATE_CALIBRATION_SLOPE_MIN", gt=0)
    gate_calibration_slope_max: float = Field(1.3, alias="GATE_CALIBRATION_SLOPE_MAX", gt=0)
    change_control_plan: str = Field(
        "",
        alias="CHANGE_CONTROL_PLAN",
        description="The change control plan file; default: the one shipped in the package "
        "(src/readmission/change_control.yaml).",
    )

    # Hyperparameters of a new model lineage (warm starts keep their parent's); unset: the
    # defaults chosen by `readmission tune` (readmission.model.ModelParams).
    sgd_alpha: float | None = Field(None, alias="SGD_ALPHA", gt=0)
    sgd_eta0: float | None = Field(None, alias="SGD_ETA0", gt=0)
    sgd_epochs: int | None = Field(None, alias="SGD_EPOCHS", gt=0)

    # Serving
    api_url: str = Field(
        "http://127.0.0.1:8000",
        alias="API_URL",
        description="Where the UI and Locust find the API.",
    )
    model_poll_seconds: float = Field(
        30.0,
        alias="MODEL_POLL_SECONDS",
        gt=0,
        description="Registry check interval: the fallback when no promotion webhook arrives.",
    )
    max_batch_rows: int = Field(1000, alias="MAX_BATCH_ROWS", gt=0, le=MAX_BATCH_ROWS_CEILING)
    max_body_bytes: int | None = Field(
        None,
        alias="MAX_BODY_BYTES",
        gt=0,
        description="Largest request body; default: room for MAX_BATCH_ROWS encounters.",
    )
    model_retry_max_seconds: float = Field(
        300.0,
        alias="MODEL_RETRY_MAX_SECONDS",
        gt=0,
        description="Longest wait between load attempts of a version that failed to load.",
    )
    drift_window: int = Field(
        1000,
        alias="DRIFT_WINDOW",
        gt=0,
        description="Recent requests compared with the training data.",
    )
    drift_min_requests: int = Field(
        500,
        alias="DRIFT_MIN_REQUESTS",
        gt=0,
        description="Requests the window must hold before PSI is exported.",
    )
    drift_max_age_seconds: float = Field(
        3600.0,
        alias="DRIFT_MAX_AGE_SECONDS",
        gt=0,
        description="Requests older than this leave the drift window.",
    )
    api_reload_token: SecretStr | None = Field(
        None, alias="API_RELOAD_TOKEN", description="Bearer token for POST /model/reload."
    )
    mlflow_webhook_secret: SecretStr | None = Field(
        None,
        alias="MLFLOW_WEBHOOK_SECRET",
        description="Signs MLflow's registry webhooks (POST /webhooks/mlflow); unset: disabled.",
    )
    prediction_log: bool = Field(
        True,
        alias="PREDICTION_LOG",
        description="Record every served prediction in the warehouse (realized performance).",
    )
    prediction_log_buffer: int = Field(
        10_000,
        alias="PREDICTION_LOG_BUFFER",
        gt=0,
        description="Predictions held while the warehouse is slow or down; beyond: dropped.",
    )
    performance_poll_seconds: float = Field(
        60.0,
        alias="PERFORMANCE_POLL_SECONDS",
        gt=0,
        description="How often the API re-reads the stored realized performance for /metrics.",
    )

    @field_validator(
        "sgd_alpha",
        "sgd_eta0",
        "sgd_epochs",
        "api_reload_token",
        "mlflow_webhook_secret",
        "max_body_bytes",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`SGD_ALPHA=` in a .env file means "not set", as for the string settings."""
        return None if value == "" else value

    @property
    def warehouse_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'warehouse.db').resolve()}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def body_limit(self) -> int:
        return self.max_body_bytes or BODY_BYTES_BASE + self.max_batch_rows * BODY_BYTES_PER_ROW

    @property
    def download_dir(self) -> Path:
        return self.home / "downloads"


# Written by `make demo` (scripts/demo.py) under READMISSION_HOME while its services run, so
# that the CLI in a second shell talks to the demo's MLflow server and API, not to a store of
# its own. The process environment still wins over it, as over `.env`.
DEMO_ENV_FILE = "demo.env"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once. Tests call `get_settings.cache_clear()` after changes."""
    settings = Settings()
    demo = settings.home / DEMO_ENV_FILE
    if demo.is_file():
        settings = Settings(_env_file=(".env", demo))
    return settings
