"""Request and response bodies of the API (the request's encounter is `readmission.schema`'s)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from readmission.config import MAX_BATCH_ROWS_CEILING
from readmission.evaluation.thresholds import RISK_BAND_RULE, RiskBand
from readmission.schema import Encounter, example_encounter
from readmission.scoring import FeatureContribution, FieldContribution


class Prediction(BaseModel):
    encounter_id: int | None = Field(description="Echoed from the request.")
    probability: float = Field(description="P(readmitted within 30 days).", ge=0, le=1)
    readmitted_within_30d: bool = Field(description="probability >= threshold.")
    risk_band: RiskBand = Field(description=RISK_BAND_RULE)
    threshold: float = Field(description="The model version's decision threshold.")
    model_name: str
    model_version: str


class ExplainedPrediction(Prediction):
    """A prediction; with `?explain=true` also why (these fields are absent otherwise)."""

    intercept: float | None = Field(
        None,
        description="With explain=true: the log-odds of an average training encounter, the base "
        "the contributions move from.",
    )
    log_odds: float | None = Field(
        None, description="With explain=true: intercept + every contribution; logit(probability)."
    )
    contributions: list[FieldContribution] | None = Field(
        None,
        description="With explain=true: every input field with a non-zero share of the log-odds, "
        "largest first. A feature read from several fields (an interaction, the medication "
        "counts, total visits) is shared equally among them.",
    )
    feature_contributions: list[FeatureContribution] | None = Field(
        None,
        description="With explain=true&by_feature=true: every engineered feature's share, largest "
        "first (the same total).",
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "encounters": [
                        example_encounter(),
                        {**example_encounter(), "number_inpatient": 3},
                    ]
                }
            ]
        }
    )

    encounters: list[Encounter] = Field(
        max_length=MAX_BATCH_ROWS_CEILING,
        description=f"Encounters to score: at most MAX_BATCH_ROWS (413 beyond), which is at most "
        f"{MAX_BATCH_ROWS_CEILING:,}.",
    )


class BatchPrediction(BaseModel):
    model_name: str
    model_version: str
    count: int
    predictions: list[Prediction]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: Literal[True] = True
    model_version: str


class NotReady(BaseModel):
    ready: Literal[False] = False
    reason: str


class ModelInfo(BaseModel):
    name: str
    version: str | None = Field(description="Served version; null when none is loaded.")
    alias: str | None = Field(description="The registry alias that points at it, if any.")
    stage: str | None
    run_id: str | None
    metrics: dict[str, float] = Field(description="The training run's metrics.")
    registered_at: datetime | None = Field(
        description="When the served version was registered: the model's age (StaleModel)."
    )
    loaded_at: datetime | None = Field(description="When this process loaded it.")
    registry_reachable: bool = Field(description="Whether the last registry check succeeded.")
    load_failures: int = Field(description="Versions that failed to load or verify.")
    last_error: str | None = Field(description="The last registry or load error.")
    reloads: int = Field(description="Model versions loaded and swapped in since start.")
    shadow_version: str | None = Field(
        None,
        description="The version scored in shadow beside it (alias SHADOW_ALIAS): logged, never "
        "answered; null when none.",
    )
    detail: str | None = Field(None, description="What to do when no model is served.")


class VersionRow(BaseModel):
    version: str
    parent_version: str | None
    batch_id: str | None
    compared_roc_auc: float | None = Field(
        description="ROC-AUC on the holdout `compared_holdout_fingerprint`, the same rows for "
        "every version: these numbers compare (null: the gate has not scored it there)."
    )
    holdout_roc_auc: float | None = Field(
        description="ROC-AUC at training, on that day's holdout (`holdout_fingerprint`): "
        "versions trained on different days were scored on different rows."
    )
    holdout_fingerprint: str | None = Field(description="The holdout of the training day.")
    holdout_roc_auc_ci: list[float] | None = Field(
        description="95% interval of the holdout ROC-AUC at training (patient-level bootstrap)."
    )
    holdout_log_loss: float | None
    calibration_slope: float | None
    samples_seen: int | None
    aliases: list[str]
    stage: str | None
    validation_status: str | None = Field(
        description="The promotion gate's verdict (passed / rejected), if it judged the version."
    )
    rolled_back: str | None = Field(
        description="When, by whom and why a rollback took it out of production: the gate "
        "never promotes it again."
    )


class PromotionRow(BaseModel):
    time: datetime
    from_version: str | None = Field(description="Null: nothing was in production.")
    to_version: str | None = Field(description="Null: production was removed.")
    by: str = Field(
        description="The DAG, the person who decided (Airflow user or CLI --by), or the MLflow "
        "registry."
    )
    reason: str
    action: str | None = Field(
        description="auto (the gate), manual, rollback or outside (the MLflow UI)."
    )
    delta_roc_auc: float | None = Field(
        description="For auto: challenger minus champion ROC-AUC on the same holdout."
    )
    delta_roc_auc_ci: list[float] | None = Field(
        description="Its 95% interval (paired patient-level bootstrap)."
    )
    holdout_fingerprint: str | None = Field(description="The holdout the gate compared on.")
    plan_sha256: str | None = Field(
        description="The change control plan in force (sha256 of its file); null on old rows."
    )
    rule: str | None = Field(
        description="The plan's rule that let the platform make the change (auto); null for a "
        "person's decision."
    )
    comment: str | None = Field(description="What the person who decided wrote.")


class ModelHistory(BaseModel):
    model_name: str
    production_version: str | None
    compared_holdout_fingerprint: str | None = Field(
        description="The holdout the gate last scored versions on (`compared_roc_auc`)."
    )
    versions: list[VersionRow] = Field(description="Oldest first.")
    promotions: list[PromotionRow] = Field(
        description="Every change of the production version, oldest first (the ledger)."
    )


class Message(BaseModel):
    detail: str


class FieldProblem(BaseModel):
    field: str = Field(description="Where: a column name, `encounters[i].column`, or `body`.")
    problem: str
    allowed: str | None = Field(description="What the field accepts.")


class ValidationProblems(BaseModel):
    detail: list[FieldProblem]


class RealizedFigures(BaseModel):
    """Metrics of the served probabilities against the outcomes (null where undefined)."""

    roc_auc: float | None
    pr_auc: float | None
    log_loss: float | None
    brier: float | None
    calibration_intercept: float | None = Field(description="0 when calibrated in the large.")
    calibration_slope: float | None = Field(description="1 when calibrated.")
    observed_rate: float | None = Field(description="Share readmitted within 30 days.")
    mean_predicted: float | None
    ppv: float | None = Field(description="Precision at the served threshold.")
    sensitivity: float | None = Field(description="Recall at the served threshold.")


class PendingEstimate(BaseModel):
    """Expected metrics of the encounters still without an outcome, from their probabilities
    alone (confidence-based performance estimation): an estimate, valid if calibrated."""

    n: int
    roc_auc: float | None
    pr_auc: float | None
    log_loss: float | None
    brier: float | None
    observed_rate: float | None
    mean_predicted: float | None
    ppv: float | None
    sensitivity: float | None


class EstimateCheck(BaseModel):
    """An earlier estimate against the outcomes its encounters received since."""

    estimated_at: datetime
    window: int = Field(description="Encounters pending when the estimate was made.")
    labelled: int = Field(description="Of those, how many have an outcome now.")
    estimated_roc_auc: float | None
    realized_roc_auc: float | None
    roc_auc_gap: float | None = Field(description="Realized minus estimated.")
    estimated_observed_rate: float | None
    realized_observed_rate: float | None


class ExcludedOutcomes(BaseModel):
    """Outcomes that arrived but do not count: the model could have seen those encounters."""

    known_at_scoring: int = Field(
        0, description="The encounter was already in the warehouse, outcome and all, when scored."
    )
    trained_on: int = Field(
        0, description="The lineage had trained on the encounter's batch when it was scored."
    )


class PeriodPerformance(RealizedFigures):
    scored: int = Field(description="Encounters scored (each once per version).")
    n: int = Field(
        description="Scored encounters whose outcome has arrived and counts (see `excluded`)."
    )
    excluded: ExcludedOutcomes = Field(
        default_factory=ExcludedOutcomes,
        description="Arrived outcomes left out of the figures, by reason (absent in reports "
        "computed before this was counted).",
    )
    pending: int = Field(description="Scored encounters still waiting for their outcome.")
    unidentified: int = Field(description="Scored without an encounter_id: never labelled.")
    estimate: PendingEstimate


class WeekPerformance(PeriodPerformance):
    week: str = Field(description="Monday of the calendar week of scoring.")


class RecentPerformance(BaseModel):
    """The version's latest counted outcomes (at most 1,000, by time of scoring): what the
    realized alert reads."""

    n: int
    roc_auc: float | None
    roc_auc_ci: list[float] | None = Field(
        description="95% interval (patient-level bootstrap); null with one class only."
    )
    first_scored_at: datetime | None = None


class VersionPerformance(PeriodPerformance):
    version: str
    role: Literal["production", "shadow"] = Field(
        "production",
        description="How its latest prediction was served: answered (production) or scored "
        "beside it and only logged (shadow).",
    )
    recent: RecentPerformance | None = Field(
        None, description="Absent in reports computed before it was added."
    )
    threshold: float
    holdout_roc_auc: float | None = Field(description="Measured on the holdout at training.")
    first_scored_at: datetime
    last_scored_at: datetime
    estimate_checks: list[EstimateCheck]
    weeks: list[WeekPerformance]


class LiveComparison(BaseModel):
    """A shadow version against the production version it was scored beside."""

    production: str
    shadow: str
    n: int = Field(description="Encounters both scored whose outcome counts.")
    delta_roc_auc: float | None = Field(description="Shadow's realized AUC minus production's.")
    delta_roc_auc_ci: list[float] | None = Field(
        description="95% interval (paired patient-level bootstrap); null with one class only."
    )


class PerformanceReport(BaseModel):
    model_name: str
    report_id: int
    computed_at: datetime
    outcomes_joined: int = Field(description="Predictions that received their outcome then.")
    versions: list[VersionPerformance] = Field(description="Served versions, oldest first.")
    comparisons: list[LiveComparison] = Field(
        [], description="Each shadow against production on the same encounters."
    )
