"""Chaos: real `readmission` processes on real PostgreSQL and a real MLflow server, killed with
SIGKILL at each step of ingest and training, run two at a time, fed replays, corrections and
extracts out of order. After each scenario the invariants of `assert_consistent` hold: rows in =
accepted + quarantined + already present (+ deferred), every row stored once, every batch trained
exactly once, registered versions = trained batches, each version's parent the previous version
of the lineage, no patient both in the holdout and in training."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from readmission import extracts, registry, registry_reader, training
from readmission.config import Settings
from readmission.data import database, inventory, lineage, tables, warehouse
from readmission.evaluation import model_card
from readmission.release import ledger, production_changes, promotion

from .conftest import assert_consistent, ok, run, start, wait_until

pytestmark = pytest.mark.slow


def test_an_ingest_killed_at_any_step_leaves_nothing_and_its_rerun_stores_everything_once(
    chaos: Settings, rows: pd.DataFrame, extract: Callable[..., Path]
) -> None:
    source = extract(0, 800)
    for point in ("ingest-mid-write", "ingest-before-commit"):
        killed = run("ingest", "--source", str(source), crash_at=point)
        assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
        assert inventory.row_counts(chaos.warehouse_url)["raw_encounters"] == 0
        assert inventory.ingest_history(chaos.warehouse_url) == []

    ok("ingest", "--source", str(source))
    ok("train")
    assert_consistent(chaos, [rows.iloc[:800]])


def test_a_training_run_killed_at_any_step_is_finished_by_the_next_run_without_forking(
    chaos: Settings, rows: pd.DataFrame, extract: Callable[..., Path]
) -> None:
    ok("ingest", "--source", str(extract()))  # four training batches
    ok("train", "--batches", "1")
    for point, adopted in (
        ("train-mid-fit", False),  # the MLflow run open, the model half updated
        ("train-before-register", False),  # the model logged, no version yet
        ("train-after-register", True),  # the version registered, the warehouse not told
    ):
        killed = run("train", crash_at=point)  # dies on the next batch
        assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
        rerun = ok("train", "--batches", "1")
        assert ("registered before its bookkeeping, adopted" in rerun) is adopted, rerun
    assert lineage.untrained_batches(chaos.warehouse_url, chaos.model_name) == []
    assert_consistent(chaos, [rows])


def test_a_run_killed_between_registration_and_the_card_converges_to_one_carded_version(
    chaos: Settings, rows: pd.DataFrame, extract: Callable[..., Path]
) -> None:
    """The card is in the run before the version is registered; only the version's number is
    written into it afterwards. Killed there, the next run adopts the version and numbers it."""
    frame = rows.copy()
    frame["patient_nbr"] = frame["patient_nbr"].to_numpy()[np.arange(len(frame)) % 400]
    frame.loc[frame.index[::20], "age"] = "[200-210)"  # a share of bad rows, quarantined
    ok("ingest", "--source", str(extract(frame=frame)))
    assert len(warehouse.quarantined_rows(chaos.warehouse_url)) == len(frame.index[::20])
    ok("train", "--batches", "1")
    killed = run("train", crash_at="train-before-card")  # dies on the next batch
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]

    rerun = ok("train")
    assert "registered before its bookkeeping, adopted" in rerun, rerun
    assert_consistent(chaos, [frame])
    for version in registry_reader.version_summaries(chaos):
        card = model_card.load(version.run_id or "")
        assert card is not None and card["model"]["version"] == version.version
        batches = [b["batch_id"] for b in card["data"]["batches"]]
        assert batches[-1] == int(str(version.batch_id))


def test_a_training_run_killed_while_holding_the_lease_releases_it(
    chaos: Settings, rows: pd.DataFrame, extract: Callable[..., Path]
) -> None:
    ok("ingest", "--source", str(extract(0, 800)))
    first = start("train")
    wait_until(lambda: _lease_holder(chaos) != "" or first.poll() is not None)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()  # waits for its end and removes its output file

    ok("train")  # the dead run's lease went with its database session
    assert_consistent(chaos, [rows.iloc[:800]])


def test_two_training_runs_at_once_train_each_batch_once_and_both_exit_0(
    chaos: Settings, rows: pd.DataFrame, extract: Callable[..., Path]
) -> None:
    ok("ingest", "--source", str(extract(0, 1000)))  # three training batches
    runs = [start("train"), start("train")]
    outputs = [p.communicate(timeout=300)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], "\n".join(o[-6000:] for o in outputs)
    trained = sum(out.count("training batch") for out in outputs)
    assert trained == len(lineage.training_batches(chaos.warehouse_url))
    assert_consistent(chaos, [rows.iloc[:1000]])


def test_two_overlapping_ingests_at_once_store_every_row_once(
    chaos: Settings, rows: pd.DataFrame, extract: Callable[..., Path]
) -> None:
    runs = [
        start("ingest", "--source", str(extract(0, 700))),
        start("ingest", "--source", str(extract(400, 1000))),
    ]
    outputs = [p.communicate(timeout=300)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    history = inventory.ingest_history(chaos.warehouse_url)
    assert sum(int(str(r["already_present"])) for r in history) == 300  # the overlap, once
    ok("train")
    assert_consistent(chaos, [rows.iloc[:1000]])


def test_replays_corrections_and_extracts_out_of_order_keep_the_lineage_straight(
    chaos: Settings, rows: pd.DataFrame, extract: Callable[..., Path]
) -> None:
    later, earlier = extract(600, 1200), extract(0, 600)
    ok("ingest", "--source", str(later))  # the newer extract first
    ok("train")
    ok("ingest", "--source", str(earlier))
    replay = ok("ingest", "--source", str(earlier))
    assert "0 new accepted" in replay and "600 already present" in replay
    corrected = rows.iloc[:600].copy()
    corrected.loc[corrected.index[:5], "num_medications"] = "77"
    fixed = ok("ingest", "--source", str(extract(frame=corrected)))
    assert "(5 corrections recorded)" in fixed and "batches created: none" in fixed
    ok("train")
    status = ok("status")
    assert "corrections recorded: 5" in status and "patients also in training: 0" in status
    versions = [line for line in status.splitlines() if " AUC " in line and "parent" in line]
    assert versions and not any(line.endswith("None") for line in versions)  # no stage: no label
    assert_consistent(chaos, [rows])


def _lease_holder(settings: Settings) -> str:
    import sqlalchemy as sa

    with database.engine_for(settings.warehouse_url).connect() as conn:
        return str(conn.execute(sa.select(tables.leases.c.holder)).scalar() or "")


def _lenient_gate(configure: Callable[..., Settings]) -> Settings:
    # 300-row batches of synthetic data: let every warm start pass so each kill point is hit
    return configure(
        PROMOTION_POLICY="non_inferior",
        NON_INFERIORITY_MARGIN="0.5",
        MIN_AUC="0.5",
        GATE_SUBGROUP_AUC_MARGIN="1.0",
        GATE_CALIBRATION_SLOPE_MIN="0.05",
        GATE_CALIBRATION_SLOPE_MAX="20",
    )


@pytest.mark.timeout(900)
def test_evaluate_and_promote_killed_at_any_step_converges_on_the_rerun(
    chaos: Settings,
    configure: Callable[..., Settings],
    rows: pd.DataFrame,
    extract: Callable[..., Path],
) -> None:
    """Kills after the verdict, after the alias moved, before the ledger row: each re-run
    leaves registry and ledger agreeing, each promotion recorded once, as the gate's, with its
    evidence. (Set-up steps run in this process; the killed runs and re-runs are processes.)"""
    settings = _lenient_gate(configure)
    extracts.ingest(settings, source=str(extract(0, 1200)))  # four training batches
    training.train_pending(settings, 1)
    promotion.evaluate_and_promote(settings, auto_promote=True, by="chaos set-up")
    for point in ("promote-after-verdict", "promote-after-alias", "promote-before-ledger"):
        (result,) = training.train_pending(settings, 1)
        killed = run("evaluate", "--auto-promote", crash_at=point)
        assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
        rerun = ok("evaluate", "--auto-promote")
        assert _production(settings) == result.version, rerun
    assert _ledger(settings) == [
        (None, "1", "auto"),
        ("1", "2", "auto"),
        ("2", "3", "auto"),
        ("3", "4", "auto"),
    ]
    changes = ledger.entries(settings.warehouse_url, settings.model_name)
    assert all(c.evidence is not None for c in changes[1:]), "the gate's evidence survives"
    assert all(c.by.startswith("cli (") for c in changes[1:]), "recorded as the killed run's"
    assert_consistent(settings, [rows])


@pytest.mark.timeout(900)
def test_a_rollback_killed_at_any_step_is_finished_by_its_rerun_and_never_undone(
    chaos: Settings,
    configure: Callable[..., Settings],
    rows: pd.DataFrame,
    extract: Callable[..., Path],
) -> None:
    settings = _lenient_gate(configure)
    extracts.ingest(settings, source=str(extract(0, 1200)))
    training.train_pending(settings)  # versions 1-4, the head 4
    for version in ("1", "2", "3", "4"):
        production_changes.change_production(settings, version, "chaos set-up", "by hand")

    for point, back_to in (("rollback-after-alias", "3"), ("rollback-before-ledger", "2")):
        killed = run("rollback", crash_at=point)
        assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
        rerun = ok("rollback")  # finishes the rollback it interrupted, rolls back no further
        assert f"version {back_to} is production" in rerun, rerun
        assert _production(settings) == back_to
    judged = ok("evaluate", "--auto-promote")  # the head, v4, stays out
    assert "not judged" in judged and "was rolled back" in judged, judged
    assert _production(settings) == "2"
    assert _ledger(settings)[4:] == [("4", "3", "rollback"), ("3", "2", "rollback")]
    for version in ("4", "3"):
        tags = registry.connect(settings).get_model_version(settings.model_name, version).tags
        assert registry_reader.ROLLED_BACK_TAG in tags
    assert_consistent(settings, [rows])


def _production(settings: Settings) -> str | None:
    found = registry.production_version(settings)
    return str(found.version) if found else None


def _ledger(settings: Settings) -> list[tuple[str | None, str | None, str | None]]:
    return [
        (e.from_version, e.to_version, e.action)
        for e in ledger.entries(settings.warehouse_url, settings.model_name)
    ]
