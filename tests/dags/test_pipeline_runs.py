"""The DAGs run with `dag.test()` on real PostgreSQL (warehouse and Airflow metadata) and the
real MLflow server: what each run stores, registers, returns (XCom) and announces (Assets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from readmission import registry, registry_reader
from readmission.config import Settings
from readmission.data import holdout, inventory, warehouse
from readmission.model import ReadmissionModel, labels
from readmission.release import ledger, production_changes
from readmission.schema import POSITIVE_LABEL, TARGET
from tests.dags.conftest import AIRFLOWIGNORE_WARNING, log_predictions, parse_dags
from tests.dags.metadata import (
    asset_events,
    forget_queued_runs,
    queued_runs,
    returned,
    task_states,
    tries,
)

pytestmark = [
    pytest.mark.usefixtures("airflow_db"),
    pytest.mark.slow,
    pytest.mark.filterwarnings(AIRFLOWIGNORE_WARNING),
]
CLEAN_ENCOUNTERS = "x-readmission://warehouse/clean_encounters"
WAREHOUSE_CHANGES = "x-readmission://warehouse/changes"
MODEL_VERSIONS = "x-readmission://registry/model_versions"


def run(dag_id: str, **conf: Any) -> Any:
    """One run of `dag_id` in this process, as `airflow dags test` does; the finished DagRun.

    Freshly parsed each time, as a worker does: running in-process, Airflow writes the run's
    conf into the tasks' Param objects, which a later run of the same objects would inherit.
    """
    return parse_dags()[dag_id].test(run_conf=conf or None)


def verdict(**conf: Any) -> dict[str, Any]:
    evaluation = run("03_evaluate_and_promote", **conf)
    assert evaluation.state == "success"
    return returned(evaluation, "judge_challenger")


def production(settings: Settings) -> str | None:
    version = registry.production_version(settings)
    return version.version if version else None


def register_inverted_model(settings: Settings) -> str:
    """A deliberately worse version: a model trained on batch 1 with its labels inverted."""
    frame = warehouse.clean_rows(settings.warehouse_url, 1)
    model = ReadmissionModel().partial_fit(frame, 1 - labels(frame))
    registry.connect(settings)
    with mlflow.start_run(experiment_id=registry.experiment_id(settings), run_name="inverted"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=registry.ReadmissionPyfunc(model),
            pip_requirements=["mlflow"],
        )
    return mlflow.register_model(info.model_uri, settings.model_name).version


def test_ingest_and_training_runs_register_a_version_per_batch_and_a_replay_adds_nothing(
    pipeline_env: Settings,
) -> None:
    first = run("01_ingest_data")  # default: the next batch (and the holdout)
    assert first.state == "success"
    assert returned(first, "ingest") == {
        "batch_ids": [0, 1],
        "training_batch_ids": [1],
        "rows_in": 2500,
        "rows_added": 1003,
        "accepted": 1003,
        "quarantined": {},
        "already_present": 0,
        "corrections": 0,
        "deferred": 1497,
        "outcomes_joined": 0,
        "changed": True,
    }
    assert asset_events(first, CLEAN_ENCOUNTERS) == [{"batch_ids": [1], "rows_added": 1003}]
    assert asset_events(first, WAREHOUSE_CHANGES) == [
        {"batch_ids": [0, 1], "rows_added": 1003, "corrections": 0, "outcomes_joined": 0}
    ]

    training = run("02_warm_start_training")
    assert training.state == "success"
    assert [
        (t["batch_id"], t["version"], t["parent_version"])
        for t in returned(training, "train_untrained_batches")
    ] == [(1, "1", None)]
    assert asset_events(training, MODEL_VERSIONS) == [{"versions": ["1"]}]

    rest = run("01_ingest_data", batches=0)  # 0: every remaining batch
    assert returned(rest, "ingest")["training_batch_ids"] == [2, 3, 4]
    training = run("02_warm_start_training")
    assert asset_events(training, MODEL_VERSIONS) == [{"versions": ["2", "3", "4"]}]
    assert [
        (v.version, v.parent_version, v.batch_id)
        for v in registry_reader.version_summaries(pipeline_env)
    ] == [("1", "", "1"), ("2", "1", "2"), ("3", "2", "3"), ("4", "3", "4")]

    replay = run("01_ingest_data", batches=0)
    assert replay.state == "success"
    assert returned(replay, "ingest") == {
        "batch_ids": [],
        "training_batch_ids": [],
        "rows_in": 2500,
        "rows_added": 0,
        "accepted": 0,
        "quarantined": {},
        "already_present": 2500,
        "corrections": 0,
        "deferred": 0,
        "outcomes_joined": 0,
        "changed": False,
    }
    assert task_states(replay) == {
        "ingest": "success",
        "announce_new_batches": "skipped",
        "announce_warehouse_changes": "skipped",
    }
    assert asset_events(replay, CLEAN_ENCOUNTERS) == []
    assert asset_events(replay, WAREHOUSE_CHANGES) == []
    assert inventory.row_counts(pipeline_env.warehouse_url)["raw_encounters"] == 2500

    idle = run("02_warm_start_training")
    assert returned(idle, "train_untrained_batches") == []
    assert task_states(idle)["announce_new_versions"] == "skipped"
    assert len(registry_reader.version_summaries(pipeline_env)) == 4


def test_an_ingest_adding_only_outcomes_of_scored_encounters_starts_realized_performance_only(
    pipeline_env: Settings, sample: pd.DataFrame, tmp_path: Path
) -> None:
    """The API scored encounters of holdout patients that the first extract lacked; the later
    extract holding just them adds no training batch, only holdout rows and their outcomes: 04
    must follow it (on those outcomes), 02 must not; its replay changes nothing, starts nothing."""
    holdout_patients = holdout.in_holdout(sample["patient_nbr"], pipeline_env.holdout_fraction)
    scored = sample[holdout_patients.to_numpy()].tail(200)
    first, later = tmp_path / "first.csv", tmp_path / "later.csv"
    sample.drop(scored.index).to_csv(first, index=False)
    scored.to_csv(later, index=False)
    assert run("01_ingest_data", source=str(first)).state == "success"
    assert run("02_warm_start_training").state == "success"  # version 1, which the API served
    probability = log_predictions(pipeline_env, scored, "1")

    forget_queued_runs()
    outcomes = run("01_ingest_data", source=str(later))

    report = returned(outcomes, "ingest")
    assert (report["batch_ids"], report["training_batch_ids"]) == ([0], [])
    assert (report["rows_added"], report["outcomes_joined"], report["changed"]) == (200, 200, True)
    assert task_states(outcomes) == {
        "ingest": "success",
        "announce_new_batches": "skipped",
        "announce_warehouse_changes": "success",
    }
    assert asset_events(outcomes, CLEAN_ENCOUNTERS) == []
    assert asset_events(outcomes, WAREHOUSE_CHANGES) == [
        {"batch_ids": [0], "rows_added": 200, "corrections": 0, "outcomes_joined": 200}
    ]
    # Airflow queued a run of 04, and of nothing else, for that event.
    assert queued_runs() == {("04_realized_performance", WAREHOUSE_CHANGES)}

    realized = run("04_realized_performance")
    assert realized.state == "success"
    (served,) = returned(realized, "measure_realized_performance")
    assert (served["version"], served["scored"], served["labelled"], served["pending"]) == (
        "1",
        200,
        200,
        0,
    )
    truth = (scored[TARGET] == POSITIVE_LABEL).to_numpy()
    assert served["realized_roc_auc"] == pytest.approx(roc_auc_score(truth, probability))
    assert served["holdout_roc_auc"] is not None

    forget_queued_runs()
    replay = run("01_ingest_data", source=str(later))
    assert returned(replay, "ingest")["changed"] is False
    assert returned(replay, "ingest")["outcomes_joined"] == 0
    assert task_states(replay) == {
        "ingest": "success",
        "announce_new_batches": "skipped",
        "announce_warehouse_changes": "skipped",
    }
    assert asset_events(replay, WAREHOUSE_CHANGES) == []
    assert queued_runs() == set()


def test_evaluation_promotes_the_lineage_head_on_evidence_never_an_outsider_or_a_rolled_back(
    pipeline_env: Settings,
) -> None:
    run("01_ingest_data")
    run("02_warm_start_training")
    first = verdict(auto_promote=True)
    assert (first["challenger_version"], first["champion_version"]) == ("1", None)
    assert first["promoted"] and production(pipeline_env) == "1"
    assert first["delta_roc_auc"] is None  # nothing to compare with

    run("01_ingest_data", batches=0)
    run("02_warm_start_training")  # versions 2-4: three more batches of data
    strict = verdict(auto_promote=False, policy="superior")
    low, high = strict["delta_roc_auc_ci"]
    assert low <= strict["delta_roc_auc"] <= high
    assert strict["passed"] is (low > 0) and "PROMOTION_POLICY=superior" in strict["reason"]
    # 500-row synthetic batches: a wide margin lets the head pass, so the promotion is tested
    lenient = {"policy": "non_inferior", "non_inferiority_margin": 0.5}
    held = verdict(auto_promote=False, **lenient)
    assert (held["challenger_version"], held["champion_version"]) == ("4", "1")
    assert held["passed"] and not held["promoted"] and production(pipeline_env) == "1"
    better = verdict(auto_promote=True, **lenient)
    assert better["delta_roc_auc"] == pytest.approx(
        better["challenger_roc_auc"] - better["champion_roc_auc"], abs=1e-9
    )
    assert better["promoted"] and production(pipeline_env) == "4"
    changes = ledger.entries(pipeline_env.warehouse_url, pipeline_env.model_name)
    assert [(c.from_version, c.to_version, c.action) for c in changes] == [
        (None, "1", "auto"),
        ("1", "4", "auto"),
    ]
    assert all(c.by.startswith("airflow 03_evaluate_and_promote (run ") for c in changes)
    assert "None" not in changes[-1].by  # the DAG run's id, from the task's context
    evidence = changes[-1].evidence
    assert evidence is not None and evidence.holdout_fingerprint == better["holdout_fingerprint"]
    assert list(evidence.delta_roc_auc_ci) == pytest.approx(better["delta_roc_auc_ci"])
    again = verdict(auto_promote=True, **lenient)  # a re-run after the promotion
    assert (again["challenger_version"], again["promoted"]) == ("4", False)
    assert "nothing changed" in again["reason"] and production(pipeline_env) == "4"
    assert again["challenger_roc_auc"] == pytest.approx(better["challenger_roc_auc"], abs=1e-6)

    outsider = register_inverted_model(pipeline_env)  # newest version, but not the lineage's
    ignored = verdict(auto_promote=True, **lenient)
    assert ignored["challenger_version"] == "4" and not ignored["promoted"]
    assert production(pipeline_env) == "4"
    tags = registry.connect(pipeline_env).get_model_version(pipeline_env.model_name, outsider).tags
    assert "validation_status" not in tags

    production_changes.rollback(pipeline_env, "test (operator)", reason="v4 misbehaves")
    assert production(pipeline_env) == "1"
    for _ in range(2):  # a run of 03 and a re-run: the rolled-back head stays out
        after = verdict(auto_promote=True, **lenient)
        assert after["challenger_version"] == "4" and after["judged"] is False
        assert not after["promoted"] and "was rolled back" in after["reason"]
        assert production(pipeline_env) == "1"
    assert len(ledger.entries(pipeline_env.warehouse_url, pipeline_env.model_name)) == 3


def test_evaluation_without_any_version_skips_with_advice(pipeline_env: Settings) -> None:
    evaluation = run("03_evaluate_and_promote")
    assert evaluation.state == "success"
    # Nothing judged, so nobody is asked and nothing is recorded: the whole run skips.
    assert task_states(evaluation) == {
        "judge_challenger": "skipped",
        "person_needed": "skipped",
        "ask_a_person": "skipped",
        "record_decision": "skipped",
    }


def test_ingest_of_a_missing_file_fails_at_once_instead_of_retrying(
    pipeline_env: Settings, tmp_path: Path
) -> None:
    failed = run("01_ingest_data", source=str(tmp_path / "missing.csv"))
    assert failed.state == "failed"
    assert task_states(failed)["ingest"] == "failed"
    assert tries(failed, "ingest") == 1
    assert inventory.row_counts(pipeline_env.warehouse_url)["raw_encounters"] == 0


def test_an_extract_with_too_many_bad_rows_fails_ingest_and_adds_no_batch_and_no_version(
    pipeline_env: Settings, sample: pd.DataFrame, tmp_path: Path
) -> None:
    broken, fixed = tmp_path / "broken.csv", tmp_path / "fixed.csv"
    bad = sample.astype(str)
    bad.iloc[:750, bad.columns.get_loc("A1Cresult")] = "high"  # 30% of 2,500 rows
    bad.to_csv(broken, index=False)
    sample.to_csv(fixed, index=False)

    failed = run("01_ingest_data", source=str(broken), batches=0)
    assert failed.state == "failed"
    assert task_states(failed)["ingest"] == "failed"
    assert tries(failed, "ingest") == 1  # the same file is refused again: no retry
    assert asset_events(failed, CLEAN_ENCOUNTERS) == []
    url = pipeline_env.warehouse_url
    assert inventory.batch_list(url) == [] and inventory.row_counts(url)["raw_encounters"] == 0
    (refusal,) = inventory.ingest_history(url)
    assert refusal["refused"] is True and refusal["quarantine_share"] == pytest.approx(0.3)
    assert run("02_warm_start_training").state == "success"
    assert registry_reader.version_summaries(pipeline_env) == []

    corrected = run("01_ingest_data", source=str(fixed), batches=0)
    assert corrected.state == "success"
    assert returned(corrected, "ingest")["training_batch_ids"] == [1, 2, 3, 4]
