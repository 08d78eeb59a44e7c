"""bin/airflow-standalone (real scheduler, dag-processor, triggerer, API server on PostgreSQL),
driven through readmission.airflow_runs: an ingest run's Asset events start training, whose
Asset event starts evaluation, and the realized performance, also after an ingest of outcomes
only; evaluation stops for a person where the change control plan says so, and a person answers
through the REST API as the Airflow UI's Required Actions page does."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect, sync_playwright

from readmission import airflow_runs, registry, registry_reader
from readmission.config import Settings
from readmission.data import holdout
from readmission.monitoring import realized
from readmission.processes import free_port, running
from readmission.release import ledger
from tests.conftest import SUITE_PLAN
from tests.dags.conftest import airflow_url, log_predictions
from tests.services import ROOT, service_env
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow
PIPELINE = ["01_ingest_data", "02_warm_start_training", "03_evaluate_and_promote"]


# The first production version needs a person under this plan; a copy in the fixture's home,
# so a test can break it and mend it.
PERSON_PLAN = SUITE_PLAN.with_name("first_version_person.yaml")
PLAN_SHA256 = hashlib.sha256(PERSON_PLAN.read_bytes()).hexdigest()
ASK = "ask_a_person"


@dataclass(frozen=True)
class Airflow:
    url: str
    home: Path
    settings: Settings  # what the DAGs' tasks see
    plan: Path  # the change control plan file they read
    log: Path  # what its components print


@pytest.fixture(scope="module")
def airflow(
    create_database: Callable[[], str],
    mlflow_server: str,
    sample_csv: Path,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts_dir: Path,
) -> Iterator[Airflow]:
    """bin/airflow-standalone on a fresh metadata database, its tasks on a fresh warehouse."""
    tmp = tmp_path_factory.mktemp("airflow-standalone")
    plan = tmp / "plan.yaml"
    shutil.copy(PERSON_PLAN, plan)
    platform = {
        "DATABASE_URL": create_database(),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MODEL_NAME": f"readmission-test-{uuid.uuid4().hex[:8]}",
        "BATCH_SIZE": "500",
        "MIN_BATCH_ROWS": "100",
        "READMISSION_HOME": str(tmp / "readmission"),
        "DATA_SOURCE": str(sample_csv),
        "DATA_SHA256": "",
        "MAX_LOG_LOSS": "0.6",
        "GATE_CALIBRATION_SLOPE_MIN": "0.3",  # small synthetic models are over-confident
        "AUTO_PROMOTE": "true",
        "CHANGE_CONTROL_PLAN": str(plan),
        # One 500-row batch barely moves the AUC on a 500-row holdout: a warm start of the
        # lineage passes the champion check under this policy (the plan then decides).
        "PROMOTION_POLICY": "non_inferior",
        "NON_INFERIORITY_MARGIN": "0.5",
    }
    port, home, log_path = free_port(), tmp / "airflow", tmp / "airflow.log"
    env = service_env(
        **platform,
        AIRFLOW_HOME=str(home),
        AIRFLOW_PORT=str(port),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=airflow_url(create_database()),
    )
    url = f"http://127.0.0.1:{port}"
    command = [str(ROOT / "bin" / "airflow-standalone")]
    try:
        with running(command, log_path, env, f"{url}/api/v2/monitor/health", timeout=300):
            # pydantic-settings' __init__ also takes its source options (_env_file, _cli_*, ...) as
            # keywords: mypy cannot tell that a **dict[str, str] fills none of them.
            yield Airflow(url, home, Settings(**platform), plan, log_path)  # type: ignore[arg-type]
    finally:  # once stopped, so the log is whole
        shutil.copy(log_path, artifacts_dir / "airflow-standalone.log")


@pytest.fixture(autouse=True)
def client_of(airflow: Airflow, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point readmission.airflow_runs at the server, signed in with the generated password."""
    monkeypatch.setenv("AIRFLOW_URL", airflow.url)
    monkeypatch.setenv("AIRFLOW_HOME", str(airflow.home))
    monkeypatch.delenv("AIRFLOW_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("AIRFLOW_ADMIN_USER", raising=False)
    airflow_runs.client.cache_clear()
    yield
    if airflow_runs.client.cache_info().currsize:  # a test signed in: end its session
        airflow_runs.client().close()
    airflow_runs.client.cache_clear()


def tasks_of(dag_id: str, run_id: str) -> dict[str, str]:
    """Each task of the run and its state."""
    found = airflow_runs.client().request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")[
        "task_instances"
    ]
    return {t["task_id"]: t["state"] for t in found}


def state_of(dag_id: str, run_id: str) -> str:
    return str(airflow_runs.client().request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])


def production(settings: Settings) -> str | None:
    found = registry.production_version(settings)
    return str(found.version) if found else None


def test_an_ingest_run_starts_training_and_evaluation_and_a_person_rejects_the_first_version(
    airflow: Airflow,
) -> None:
    """Under the plan of this module the first production version needs a person: 03 waits at
    ask_a_person; a rejection through the REST API keeps the version out, also on a re-run."""
    ingest = airflow_runs.wait(
        "01_ingest_data", airflow_runs.trigger("01_ingest_data", {"batches": 1}), 300
    )
    training = airflow_runs.wait(
        "02_warm_start_training",
        airflow_runs.wait_for_asset_run("02_warm_start_training", ingest),
        600,
    )
    evaluation = airflow_runs.wait_for_asset_run("03_evaluate_and_promote", training)

    request = airflow_runs.wait_for_request("03_evaluate_and_promote", evaluation, ASK, 300)
    settings = airflow.settings
    assert (
        request["subject"]
        == f"Promote {settings.model_name} v1 to production (nothing in production yet)?"
    )
    assert "rule `first-production-version`" in request["body"]
    assert "model_card.md" in request["body"] and "**Verdict of the gate**" in request["body"]
    assert request["options"] == ["Approve", "Reject"] and "comment" in request["params"]
    assert state_of("03_evaluate_and_promote", evaluation) == "running"
    assert production(settings) is None
    performance_run = airflow_runs.wait(
        "04_realized_performance",
        airflow_runs.wait_for_asset_run("04_realized_performance", ingest),
        300,
    )

    answer = airflow_runs.respond(
        "03_evaluate_and_promote", evaluation, ASK, "Reject", {"comment": "one batch is too few"}
    )
    assert answer["responded_by"]["name"] == "admin"
    judged = airflow_runs.wait("03_evaluate_and_promote", evaluation, 300)

    assert ingest["run_type"] == "manual" and performance_run["run_type"] == "asset_triggered"
    assert training["run_type"] == judged["run_type"] == "asset_triggered"
    assert tasks_of("03_evaluate_and_promote", evaluation)["record_decision"] == "success"
    rejected = registry.model_version(settings, "1")
    assert rejected is not None and rejected.tags["person_decision"] == "rejected"
    assert rejected.tags["person_decision_by"].startswith("admin (Airflow user; run ")
    assert rejected.tags["person_decision_comment"] == "one batch is too few"
    # A re-run judges nothing and asks nobody: the person's decision stands.
    rerun = airflow_runs.trigger("03_evaluate_and_promote")
    airflow_runs.wait("03_evaluate_and_promote", rerun, 300)
    assert tasks_of("03_evaluate_and_promote", rerun)[ASK] == "skipped"
    assert production(settings) is None
    assert ledger.entries(settings.warehouse_url, settings.model_name) == []


def test_the_scheduler_preloaded_what_the_tasks_import(airflow: Airflow) -> None:
    """airflow_config/airflow_local_settings.py, found through bin/airflow-standalone's
    PYTHONPATH: once, in the scheduler, whose task processes are forked from it."""
    said = [
        line for line in airflow.log.read_text().splitlines() if "airflow_local_settings:" in line
    ]
    assert len(said) == 1 and said[0].startswith("scheduler"), said
    assert "task modules preloaded" in said[0], said


def test_while_03_waits_for_approval_01_and_02_run_and_the_next_03_waits_its_turn(
    airflow: Airflow, artifacts_dir: Path
) -> None:
    """Approval through the REST API promotes the version and the ledger names the approver and
    their comment; the Asset event 02 sent meanwhile then starts the next 03 run, which judges
    the next version, one the plan lets the platform promote: no wait."""
    settings = airflow.settings
    ingest = airflow_runs.wait(
        "01_ingest_data", airflow_runs.trigger("01_ingest_data", {"batches": 1}), 300
    )
    training = airflow_runs.wait(
        "02_warm_start_training",
        airflow_runs.wait_for_asset_run("02_warm_start_training", ingest),
        600,
    )
    waiting = airflow_runs.wait_for_asset_run("03_evaluate_and_promote", training)
    request = airflow_runs.wait_for_request("03_evaluate_and_promote", waiting, ASK, 300)
    assert "v2 to production" in request["subject"]
    screenshot_the_approval(airflow, waiting, request["subject"], artifacts_dir)

    later_ingest = airflow_runs.wait(
        "01_ingest_data", airflow_runs.trigger("01_ingest_data", {"batches": 1}), 300
    )
    later_training = airflow_runs.wait(
        "02_warm_start_training",
        airflow_runs.wait_for_asset_run("02_warm_start_training", later_ingest),
        600,
    )
    assert later_training["state"] == "success"  # 01 and 02 ran while 03 waited
    # max_active_runs=1: the scheduler keeps 02's Asset event queued for 03 and starts no run
    # while the waiting one is active.
    queued_events = airflow_runs.client().request(
        "GET", "/dags/03_evaluate_and_promote/assets/queuedEvents"
    )
    assert queued_events["total_entries"] == 1
    assert state_of("03_evaluate_and_promote", waiting) == "running"
    active = airflow_runs.client().request(
        "GET", "/dags/03_evaluate_and_promote/dagRuns", params={"state": ["queued", "running"]}
    )["dag_runs"]
    assert [r["dag_run_id"] for r in active] == [waiting]
    assert [v.batch_id for v in registry_reader.version_summaries(settings)] == ["1", "2", "3"]

    airflow_runs.respond(
        "03_evaluate_and_promote", waiting, ASK, "Approve", {"comment": "card read, subgroups fine"}
    )
    airflow_runs.wait("03_evaluate_and_promote", waiting, 300)
    # ... and once it has ended, the queued event starts the next run.
    queued = airflow_runs.wait_for_asset_run("03_evaluate_and_promote", later_training)
    airflow_runs.wait("03_evaluate_and_promote", queued, 300)

    assert tasks_of("03_evaluate_and_promote", queued)[ASK] == "skipped"
    assert production(settings) == "3"
    approved, automatic = ledger.entries(settings.warehouse_url, settings.model_name)
    assert (approved.from_version, approved.to_version, approved.action) == (None, "2", "manual")
    assert approved.by == f"admin (Airflow user; run {waiting})"
    assert approved.authority == ledger.Authority(PLAN_SHA256, None, "card read, subgroups fine")
    assert (automatic.from_version, automatic.to_version, automatic.action) == ("2", "3", "auto")
    assert automatic.authority == ledger.Authority(PLAN_SHA256, "gate-promotion", None)


def screenshot_the_approval(airflow: Airflow, run_id: str, subject: str, into: Path) -> None:
    """The Required Actions page and the approval form as a person sees them (for
    docs/change_control.md), signed in as admin in headless Chromium."""
    password = airflow_runs.client().password
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{airflow.url}/auth/login")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(password)
            page.locator("button[type=submit]").click()
            page.wait_for_url(lambda url: "/auth/login" not in url)
            page.goto(f"{airflow.url}/required_actions?response_received=false")
            expect(page.get_by_text(subject)).to_be_visible(timeout=30_000)
            page.screenshot(path=into / "airflow-required-actions.png")
            page.goto(
                f"{airflow.url}/dags/03_evaluate_and_promote/runs/{run_id}/tasks/{ASK}"
                "/required_actions"
            )
            expect(page.get_by_role("button", name="Approve")).to_be_visible(timeout=30_000)
            page.screenshot(path=into / "airflow-approval-form.png", full_page=True)
        finally:
            browser.close()


def test_a_plan_that_does_not_validate_fails_03_naming_the_field(airflow: Airflow) -> None:
    good = airflow.plan.read_text()
    airflow.plan.write_text(good.replace("decision: automatic", "decision: maybe", 1))
    try:
        run_id = airflow_runs.trigger("03_evaluate_and_promote")
        with pytest.raises(airflow_runs.DagRunFailed, match="failed tasks: judge_challenger"):
            airflow_runs.wait("03_evaluate_and_promote", run_id, 300)
    finally:
        airflow.plan.write_text(good)
    log = airflow_runs.client().request(
        "GET",
        f"/dags/03_evaluate_and_promote/dagRuns/{run_id}/taskInstances/judge_challenger/logs/1",
        params={"full_content": True},
        headers={"Accept": "application/json"},
    )
    assert "change control plan does not validate" in str(log)
    assert "plan.yaml: rules[5].decision: Input should be" in str(log)


def test_a_queued_foreign_asset_event_is_reported_and_never_taken_for_ours(
    airflow: Airflow,
) -> None:
    """A stale event (as a DAG test or another user leaves) starts a 02 run of its own; ours
    follows the event of our own 01 run, and says what else was there."""
    clean_encounters = "x-readmission://warehouse/clean_encounters"
    asset = airflow_runs.client().request(
        "GET", "/assets", params={"uri_pattern": clean_encounters}
    )["assets"][0]
    foreign = airflow_runs.client().request(
        "POST", "/assets/events", json={"asset_id": asset["id"], "extra": {"from": "elsewhere"}}
    )
    assert any("02_warm_start_training" in line for line in airflow_runs.other_work(PIPELINE))

    heard: list[str] = []
    ingest = airflow_runs.wait(
        "01_ingest_data", airflow_runs.trigger("01_ingest_data", {"batches": 1}), 300
    )
    ours = airflow_runs.wait_for_asset_run("02_warm_start_training", ingest, report=heard.append)
    training = airflow_runs.wait("02_warm_start_training", ours, 600)

    foreign_runs = {
        run["run_id"]
        for event in airflow_runs.client().request(
            "GET", "/assets/events", params={"asset_id": asset["id"]}
        )["asset_events"]
        if event["id"] == foreign["id"]
        for run in event["created_dagruns"]
    }
    assert ours not in foreign_runs  # the foreign event's run trained nothing of ours
    assert training["state"] == "success"
    assert "3" in [v.batch_id for v in registry_reader.version_summaries(airflow.settings)]
    if heard:  # our run may have had to wait behind the foreign one: then we were told
        assert all("02_warm_start_training" in line for line in heard)


def test_a_run_that_announced_nothing_is_an_error_at_once_not_a_wait() -> None:
    idle = airflow_runs.wait(
        "02_warm_start_training", airflow_runs.trigger("02_warm_start_training"), 300
    )  # every ingested batch is trained: nothing to announce
    with pytest.raises(airflow_runs.AirflowError, match="without an Asset event"):
        airflow_runs.wait_for_asset_run("03_evaluate_and_promote", idle, timeout=600)


def test_an_extract_of_outcomes_only_starts_realized_performance_and_no_training(
    airflow: Airflow, sample: pd.DataFrame, tmp_path: Path
) -> None:
    """Holdout patients came back: their new encounters, scored when they left hospital, arrive
    later in an extract of their own. No training batch, yet their outcomes must reach the
    realized performance (and RealizedAucBelowMinimum, fed by it)."""
    settings = airflow.settings
    holdout_patients = holdout.in_holdout(sample["patient_nbr"], settings.holdout_fraction)
    returning = sample[holdout_patients.to_numpy()].head(200)
    new_ids = returning["encounter_id"].astype("int64") + 1_000_000  # the sample's are below
    returning = returning.assign(encounter_id=new_ids.astype(str))
    log_predictions(settings, returning, "1")
    path = tmp_path / "outcomes.csv"
    returning.to_csv(path, index=False)

    ingest = airflow_runs.wait(
        "01_ingest_data", airflow_runs.trigger("01_ingest_data", {"source": str(path)}), 300
    )
    performance_run = airflow_runs.wait(
        "04_realized_performance",
        airflow_runs.wait_for_asset_run("04_realized_performance", ingest),
        300,
    )

    assert performance_run["run_type"] == "asset_triggered"
    events = airflow_runs.client().request(
        "GET",
        "/assets/events",
        params={"source_dag_id": "01_ingest_data", "source_run_id": ingest["dag_run_id"]},
    )["asset_events"]
    assert [(e["uri"], [r["dag_id"] for r in e["created_dagruns"]]) for e in events] == [
        ("x-readmission://warehouse/changes", ["04_realized_performance"])
    ]
    # Waiting on it for training is an error at once, naming the Asset it did not announce.
    with pytest.raises(airflow_runs.AirflowError, match="without an Asset event on x-readmission"):
        airflow_runs.wait_for_asset_run("02_warm_start_training", ingest, timeout=600)
    report = realized.latest(settings.warehouse_url, settings.model_name)
    assert report is not None
    (version,) = [v for v in report["versions"] if v["version"] == "1"]
    assert (version["scored"], version["n"], version["pending"]) == (200, 200, 0)


def test_a_failed_run_is_reported_with_the_task_that_failed(tmp_path: Path) -> None:
    run_id = airflow_runs.trigger("01_ingest_data", {"source": str(tmp_path / "missing.csv")})
    with pytest.raises(airflow_runs.DagRunFailed, match="failed tasks: ingest"):
        airflow_runs.wait("01_ingest_data", run_id, 300)


def test_a_bad_param_is_refused_at_trigger_time_naming_it() -> None:
    with pytest.raises(airflow_runs.AirflowError, match="param batches") as refused:
        airflow_runs.trigger("01_ingest_data", {"batches": -1})
    assert refused.value.status == 400


def test_a_wrong_password_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "not-the-password")
    with pytest.raises(airflow_runs.AirflowError, match="refused user admin"):
        airflow_runs.client()


def test_an_unreachable_server_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(airflow_runs.AirflowError, match="bin/airflow-standalone"):
        airflow_runs.client()


def test_without_a_password_it_says_where_to_put_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # no generated password file there
    with pytest.raises(airflow_runs.AirflowError, match="set AIRFLOW_ADMIN_PASSWORD"):
        airflow_runs.client()
