"""The `readmission` command line as a user types it, on PostgreSQL and the real MLflow server."""

from __future__ import annotations

import getpass
import hashlib
import json
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

import readmission
from readmission import registry
from readmission.config import Settings
from readmission.data import migrations
from readmission.data.validation import validate
from readmission.evaluation.thresholds import risk_band
from readmission.monitoring import prediction_log
from readmission.monitoring.prediction_log import LoggedPrediction
from readmission.release import webhooks
from tests.services import BIN, ROOT, run_cli, service_env

from ..conftest import SUITE_PLAN, platform_env

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`readmission *args` in a process of its own, forked from one that has imported the platform
    (see tests/services.py: the console script itself is tested below, with python -m)."""
    return run_cli(*args, env=service_env(**(platform_env() | (env or {}))))


def test_ingest_train_promote_rollback_promotions_and_status(
    platform: Settings, sample_csv: Path
) -> None:
    first = cli("ingest", "--batches", "2", "--source", str(sample_csv))
    assert first.returncode == 0, first.stderr
    assert "batch 0 (holdout): 503 rows" in first.stdout
    assert (
        "2500 rows in: 1503 new accepted, 0 quarantined, 0 already present (0 corrections "
        "recorded), 997 deferred to a later ingest; batches created: [0, 1, 2]"
    ) in first.stdout
    # The summary once on the terminal: not echoed and logged too.
    assert (first.stdout + first.stderr).count("2500 rows in:") == 1, first.stderr
    again = cli("ingest", "--batches", "2", "--source", str(sample_csv))
    assert "batch 3 (train)" in again.stdout and "997 new accepted" in again.stdout

    trained = cli("train", "--batches", "2")
    assert trained.returncode == 0, trained.stderr
    assert "[2/2] training batch 2" in trained.stdout
    assert "batch 2 -> version 2 (parent 1)" in trained.stdout

    promoted = cli("promote", "2")
    assert promoted.returncode == 0 and "version 2 is now 'production'" in promoted.stdout
    assert cli("promote", "1", "--reason", "compare with the first").returncode == 0
    rolled = cli("rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert "version 2 is production (was 1, now marked rolled back)" in rolled.stdout
    judged = cli("evaluate", "--auto-promote")  # the lineage head, v2, is production already
    assert judged.returncode == 0, judged.stderr
    assert "challenger v2 against champion v2" in judged.stdout
    assert "nothing changed" in judged.stdout
    missing = cli("promote", "9")
    assert missing.returncode == 2 and "has no version 9" in missing.stderr
    assert "Traceback" not in missing.stderr

    ledger = json.loads(cli("promotions", "--json").stdout)
    assert [(e["from_version"], e["to_version"]) for e in ledger] == [
        (None, "2"),
        ("2", "1"),
        ("1", "2"),
    ]
    assert {"time", "from_version", "to_version", "by", "reason", "action"} <= set(ledger[0])
    assert [e["action"] for e in ledger] == ["manual", "manual", "rollback"]
    assert {"delta_roc_auc", "delta_roc_auc_ci", "holdout_fingerprint"} <= set(ledger[0])
    # A person's decisions: by the OS user (no --by), the reason kept as their comment too.
    assert ledger[0]["by"] == getpass.getuser() and ledger[1]["reason"] == "compare with the first"
    assert (ledger[0]["comment"], ledger[1]["comment"]) == (None, "compare with the first")
    suite_plan = hashlib.sha256(SUITE_PLAN.read_bytes()).hexdigest()
    assert {e["plan_sha256"] for e in ledger} == {suite_plan}
    assert {e["rule"] for e in ledger} == {None}  # no rule of the plan made these changes
    assert "rollback" in ledger[2]["reason"]

    status = json.loads(cli("status", "--json").stdout)
    assert status["production_version"] == "2"
    assert [b["trained"] for b in status["batches"]] == [False, True, True, False, False]
    assert [v["parent_version"] for v in status["versions"]] == [None, "1"]
    assert status["holdout"]["rows"] == 503 and status["holdout"]["patients_also_in_training"] == 0
    assert [i["accepted"] for i in status["ingests"]] == [1503, 997]
    text = cli("status").stdout
    assert "holdout: 503 encounters" in text and "patients also in training: 0" in text


def test_evaluate_never_promotes_what_the_plan_reserves_for_a_person_and_exits_3(
    platform: Settings, sample_csv: Path, tmp_path: Path
) -> None:
    person_plan = {
        "CHANGE_CONTROL_PLAN": str(SUITE_PLAN.with_name("first_version_person.yaml")),
        # The synthetic sample's base rate is 21% and its small models over-confident.
        "MAX_LOG_LOSS": "0.7",
        "GATE_CALIBRATION_SLOPE_MIN": "0.3",
    }
    assert cli("ingest", "--batches", "1", "--source", str(sample_csv)).returncode == 0
    assert cli("train", "--batches", "1").returncode == 0

    for _ in range(2):  # and a re-run asks again: nothing was decided
        judged = cli("evaluate", "--auto-promote", env=person_plan)
        assert judged.returncode == 3, judged.stderr
        assert "challenger v1 against champion v-: waits for a person" in judged.stdout
        assert (
            "rule first-production-version: person: The first version to go to production needs "
            "a person." in judged.stdout
        )
        assert "not promoted: the change control plan reserves this change for a person" in (
            judged.stderr
        )
        assert "readmission promote 1 --reason" in judged.stderr
    recorded = registry.model_version(platform, "1")
    assert recorded is not None and recorded.tags["change_control"] == "person"
    assert cli("promotions", "--json").stdout.strip() == "[]"
    # Without --auto-promote nothing was asked for: the same verdict, exit 0.
    assert cli("evaluate", "--no-auto-promote", env=person_plan).returncode == 0

    by_hand = cli(
        "promote", "1", "--reason", "read the card: fine", "--by", "Dr. Ada", env=person_plan
    )
    assert by_hand.returncode == 0, by_hand.stderr
    (entry,) = json.loads(cli("promotions", "--json").stdout)
    assert (entry["to_version"], entry["by"], entry["action"]) == ("1", "Dr. Ada", "manual")
    assert entry["comment"] == "read the card: fine" and entry["rule"] is None
    assert (
        entry["plan_sha256"]
        == hashlib.sha256(Path(person_plan["CHANGE_CONTROL_PLAN"]).read_bytes()).hexdigest()
    )
    assert 'by Dr. Ada "read the card: fine"' in cli("promotions").stdout

    broken = tmp_path / "broken_plan.yaml"
    broken.write_text(SUITE_PLAN.read_text().replace("min_auc: 0.5", "min_auc: high"))
    refused = cli(
        "evaluate", "--auto-promote", env=person_plan | {"CHANGE_CONTROL_PLAN": str(broken)}
    )
    assert refused.returncode == 2
    assert "broken_plan.yaml: rules[" in refused.stderr
    assert "].criteria.min_auc: Input should be a valid number" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_missing_source_is_a_clear_error_not_a_traceback(
    platform: Settings, tmp_path: Path
) -> None:
    done = cli("ingest", "--source", str(tmp_path / "missing.zip"))
    assert done.returncode == 2
    assert "DATA_SOURCE" in done.stderr and "Traceback" not in done.stderr


def test_mlflow_run_trains_through_the_mlproject_entry_point(
    platform: Settings, sample_csv: Path
) -> None:
    env = {"DATA_SOURCE": str(sample_csv), "DATA_SHA256": ""}
    done = subprocess.run(
        [str(BIN / "mlflow"), "run", str(ROOT), "--env-manager", "local", "-P", "batches=2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=service_env(**platform_env(), **env),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "version 2 (parent 1)" in done.stdout


def test_python_m_readmission_is_the_same_command_line() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "readmission", "--version"],
        capture_output=True,
        text=True,
        env=service_env(),
        timeout=60,
        check=True,
    )
    assert version.stdout == f"readmission {readmission.__version__}\n"
    usage = subprocess.run(
        [sys.executable, "-m", "readmission", "--help"],
        capture_output=True,
        text=True,
        env=service_env(COLUMNS="100"),
        timeout=60,
        check=True,
    )
    assert "Usage: readmission [OPTIONS] COMMAND" in usage.stdout
    flags = subprocess.run(
        [sys.executable, "-m", "readmission", "evaluate", "--help"],
        capture_output=True,
        text=True,
        env=service_env(),
        timeout=60,
        check=True,
    )
    # Flags take no value: help shows them bare, without a `<bool>` metavar.
    assert "--auto-promote / --no-auto-promote" in flags.stdout
    assert "--help  " in flags.stdout and "<bool>" not in flags.stdout


def test_init_warehouse_creates_every_table_and_is_safe_to_rerun(tmp_path: Path) -> None:
    """What compose's warehouse-init runs (on PostgreSQL, with the API's grants:
    tests/deploy/test_warehouse_api_login.py); here the embedded SQLite warehouse."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    for _ in range(2):
        done = cli("init-warehouse", env={"DATABASE_URL": url})
        assert done.returncode == 0, done.stderr
        # SQLite has no login to grant
        assert done.stdout == f"warehouse ready: {url}\nschema revision {migrations.head()}\n"
    engine = sa.create_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {
        "raw_encounters",
        "prediction_log",
        "performance_reports",
        "promotions",
        "webhook_deliveries",
    } <= tables


def test_webhook_ensure_registers_once_and_needs_the_secret(platform: Settings) -> None:
    name = f"cli-test-{platform.model_name}"
    url = "http://127.0.0.1:9/webhooks/mlflow"  # nothing listens: no --check
    secret = {"MLFLOW_WEBHOOK_SECRET": secrets.token_urlsafe(24)}
    without = cli("webhook", "ensure", "--url", url, "--name", name)
    first = cli("webhook", "ensure", "--url", url, "--name", name, env=secret)
    again = cli("webhook", "ensure", "--url", url, "--name", name, env=secret)
    client = registry.connect(platform)
    found = [w for w in client.list_webhooks(max_results=1000) if w.name == name]
    for webhook in found:
        client.delete_webhook(webhook.webhook_id)

    assert without.returncode == 2 and "MLFLOW_WEBHOOK_SECRET is not set" in without.stderr
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout == again.stdout
    assert first.stdout.endswith(f" -> {url}\n")
    assert all(event in first.stdout for event in webhooks.EVENTS)
    assert len(found) == 1 and found[0].url == url


def test_performance_reports_each_served_version_as_text_and_json(
    platform: Settings, sample: pd.DataFrame, sample_csv: Path
) -> None:
    assert "no prediction logged yet" in cli("performance").stdout
    scored = validate(sample).clean.head(300)
    prediction_log.write(
        platform.warehouse_url,
        [
            LoggedPrediction(
                int(row.encounter_id),
                None,
                platform.model_name,
                "1",
                p,
                0.5,
                p >= 0.5,
                risk_band(p, 0.5),
                now,
            )
            for row, p, now in zip(
                scored.itertuples(),
                np.linspace(0.01, 0.99, len(scored)),
                [datetime.now(UTC)] * len(scored),
                strict=True,
            )
        ],
    )
    assert cli("ingest", "--source", str(sample_csv)).returncode == 0

    text = cli("performance")
    report = json.loads(cli("performance", "--json").stdout)

    assert text.returncode == 0, text.stderr
    assert "v1" in text.stdout and "labelled     300 pending       0" in text.stdout
    (version,) = report["versions"]
    assert (version["version"], version["n"], version["pending"]) == ("1", 300, 0)
    assert 0 <= version["roc_auc"] <= 1 and len(version["weeks"]) == 1
