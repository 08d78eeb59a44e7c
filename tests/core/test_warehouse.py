"""The warehouse on PostgreSQL and SQLite: later extracts in any order, a patient-level holdout,
quarantined identifiers, corrections, per-lineage bookkeeping and the training lease."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from readmission.data import (
    database,
    holdout,
    ingest_report,
    ingestion,
    inventory,
    lineage,
    tables,
    warehouse,
)
from readmission.data.validation import normalize, validate
from readmission.schema import COLUMNS


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    create: Callable[[], str] = request.getfixturevalue("create_database")
    return create()


@pytest.fixture(scope="module")
def text(sample: pd.DataFrame) -> pd.DataFrame:
    """The sample as an extract arrives: every value text."""
    return sample.astype(str)


def balanced(report: ingest_report.IngestReport) -> bool:
    return report.rows_in == (
        report.accepted + report.quarantined_total + report.already_present + report.deferred
    )


def test_holdout_patients_go_to_batch_0_the_rest_into_batches_in_encounter_order(
    url: str, text: pd.DataFrame
) -> None:
    report = ingestion.ingest(url, text, 500, 0.2)
    expected = holdout.in_holdout(text["patient_nbr"].astype("int64"), 0.2)
    assert [(b.batch_id, b.kind) for b in report.new_batches] == [
        (0, "holdout"),
        *((i, "train") for i in (1, 2, 3, 4)),
    ]
    assert report.new_batches[0].rows == expected.sum() == 503
    held = warehouse.clean_rows(url, 0)
    assert set(held["encounter_id"]) == set(text["encounter_id"][expected].astype(int))
    batches = [warehouse.clean_rows(url, b)["encounter_id"] for b in (1, 2, 3, 4)]
    assert all(a.max() < b.min() for a, b in itertools.pairwise(batches))
    assert inventory.holdout_overlap(url) == 0
    assert balanced(report) and report.accepted == 2500


def test_replaying_an_extract_adds_nothing_and_says_so(url: str, text: pd.DataFrame) -> None:
    ingestion.ingest(url, text, 500, 0.2)
    counts = inventory.row_counts(url)
    again = ingestion.ingest(url, text, 500, 0.2)
    assert (again.rows_in, again.already_present, again.accepted) == (2500, 2500, 0)
    assert again.new_batches == [] and balanced(again)
    assert inventory.row_counts(url) == counts
    assert [r["already_present"] for r in inventory.ingest_history(url)] == [0, 2500]


def test_later_overlapping_and_out_of_order_extracts_only_add_new_encounters(
    url: str, text: pd.DataFrame
) -> None:
    first, later, older = text.iloc[1000:1800], text.iloc[1500:2500], text.iloc[:1000]
    reports = [ingestion.ingest(url, part, 500, 0.2) for part in (first, later, older)]
    assert all(balanced(r) for r in reports)
    assert reports[1].already_present == 300 and reports[1].accepted == 700
    assert sum(r.accepted for r in reports) == 2500
    trained_ids = {b.batch_id for r in reports for b in r.new_batches if b.kind == "train"}
    assert lineage.training_batches(url) == sorted(trained_ids)
    # The same patients are held out whatever order the extracts came in.
    expected = holdout.in_holdout(text["patient_nbr"].astype("int64"), 0.2)
    held = set(warehouse.clean_rows(url, 0)["encounter_id"])
    assert held == set(text["encounter_id"][expected].astype(int))
    assert inventory.holdout_overlap(url) == 0


def test_the_holdout_fraction_is_pinned_by_the_first_ingest(url: str, text: pd.DataFrame) -> None:
    ingestion.ingest(url, text.iloc[:1000], 500, 0.2)
    ingestion.ingest(url, text.iloc[1000:], 500, 0.5)
    assert inventory.holdout_fraction(url) == 0.2
    assert len(warehouse.clean_rows(url, 0)) == 503


def test_max_batches_defers_the_rest_to_the_next_ingest(url: str, text: pd.DataFrame) -> None:
    first = ingestion.ingest(url, text, 500, 0.2, max_batches=1)
    assert first.training_batch_ids == [1] and first.deferred == 1497 and balanced(first)
    second = ingestion.ingest(url, text, 500, 0.2, max_batches=2)
    assert second.training_batch_ids == [2, 3] and second.deferred == 497 and balanced(second)
    ids = [warehouse.clean_rows(url, b)["encounter_id"] for b in (1, 2, 3)]
    assert ids[0].max() < ids[1].min() and ids[1].max() < ids[2].min()


def test_bad_identifiers_are_quarantined_with_a_reason_never_fatal(
    url: str, text: pd.DataFrame
) -> None:
    dirty = text.iloc[:1000].copy()
    dirty.loc[3, "gender"] = "Unknown/Invalid"
    dirty.loc[4, "encounter_id"] = "not-a-number"
    dirty.loc[5, "encounter_id"] = ""
    dirty.loc[6, "encounter_id"] = f"{dirty.loc[7, 'encounter_id']}.0"  # N.0 beside N
    boundary = dirty.loc[[499]].assign(gender="Female")  # same id, across a batch boundary
    dirty = pd.concat([dirty, boundary])
    report = ingestion.ingest(url, dirty, 500, 0.2)
    assert report.quarantined == {
        ingest_report.INVALID_ID: 2,
        ingest_report.DUPLICATE_ID: 2,
        ingest_report.INVALID_VALUES: 1,
    }
    assert balanced(report) and report.rows_in == 1001
    reasons = warehouse.quarantined_rows(url)["reason"].tolist()
    assert any("positive integer written in digits, got 'not-a-number'" in r for r in reasons)
    assert any("positive integer written in digits, got ''" in r for r in reasons)
    assert any("gender must be one of" in r for r in reasons)
    assert sum("duplicate encounter_id" in r for r in reasons) == 2
    replay = ingestion.ingest(url, dirty, 500, 0.2)
    assert replay.already_present == 1001 and len(warehouse.quarantined_rows(url)) == 5


def test_a_corrected_row_is_recorded_with_its_fields_and_never_rewrites_a_batch(
    url: str, text: pd.DataFrame
) -> None:
    dirty = text.iloc[:600].copy()
    dirty.loc[10, "diag_1"] = "not-a-code"
    ingestion.ingest(url, dirty, 500, 0.2)
    stored = warehouse.clean_rows(url, 1)
    fixed = text.iloc[:600].copy()  # diag_1 of row 10 fixed
    fixed.loc[20, "num_medications"] = "99"  # and a changed stored row
    report = ingestion.ingest(url, fixed, 500, 0.2)

    assert report.corrections == 2 and balanced(report)
    assert report.accepted == 1  # the fixed quarantined row, now a clean row in a new batch
    corrections = warehouse.correction_rows(url).set_index("encounter_id")
    changed = corrections.loc[int(text.loc[20, "encounter_id"])]
    assert changed["fields"] == {"num_medications": [text.loc[20, "num_medications"], "99"]}
    assert pd.isna(changed["applied_to_batch"])
    repaired = corrections.loc[int(text.loc[10, "encounter_id"])]
    assert repaired["fields"] == {"diag_1": ["not-a-code", text.loc[10, "diag_1"]]}
    assert warehouse.clean_rows(url, 1).equals(stored)
    assert ingestion.ingest(url, fixed, 500, 0.2).already_present == 600


def test_a_batch_is_trained_once_per_lineage_and_the_head_is_the_last_one(
    url: str, text: pd.DataFrame
) -> None:
    ingestion.ingest(url, text, 500, 0.2)
    with lineage.training_lease(url, "a run", wait_seconds=0) as lease:
        lineage.mark_trained(url, "a", 1, "1", "run-a", lease)
        lineage.mark_trained(url, "a", 1, "1", "run-a", lease)  # a retry: nothing changes
        with pytest.raises(lineage.AlreadyTrained, match="batch 1 is recorded as trained into"):
            lineage.mark_trained(url, "a", 1, "2", "run-b", lease)
        lineage.mark_trained(url, "a", 2, "2", "run-c", lease)
    assert lineage.lineage_head(url, "a") == (2, "2")
    assert lineage.untrained_batches(url, "a") == [3, 4]
    assert lineage.untrained_batches(url, "b") == [1, 2, 3, 4]  # a new lineage starts over
    (batch,) = [b for b in inventory.batch_list(url, "a") if b.batch_id == 1]
    assert batch.trained and batch.model_version == "1"


def test_a_second_holder_of_the_training_lease_is_told_who_holds_it(url: str) -> None:
    with (
        lineage.training_lease(url, "first run", wait_seconds=0),
        pytest.raises(lineage.LeaseBusy, match="first run"),
        lineage.training_lease(url, "second run", wait_seconds=1),
    ):
        pass
    with lineage.training_lease(url, "second run", wait_seconds=0):
        pass  # released when the first one ended


def test_a_run_whose_lease_was_taken_over_records_nothing(url: str, text: pd.DataFrame) -> None:
    """Each acquisition takes the next fencing token; a run holding an older one is refused at
    its check and at mark_trained, which records nothing."""
    ingestion.ingest(url, text, 500, 0.2)
    with lineage.training_lease(url, "first run", wait_seconds=0) as first:
        first.check()
        # An operator (or a run that believed the lease free) takes the token over.
        with database.transaction(url) as conn:
            conn.execute(
                tables.leases.update().values(fencing_token=tables.leases.c.fencing_token + 1)
            )
        with pytest.raises(lineage.LeaseLost, match=f"this run holds {first.token}"):
            first.check()
        with pytest.raises(lineage.LeaseLost, match="taken over"):
            lineage.mark_trained(url, "a", 1, "1", "run-a", first)
    assert lineage.recorded_version(url, "a", 1) is None
    with lineage.training_lease(url, "second run", wait_seconds=0) as second:
        assert second.token == first.token + 2  # monotonic: never handed out twice
        lineage.mark_trained(url, "a", 1, "1", "run-b", second)
    assert lineage.recorded_version(url, "a", 1) == "1"


def test_raw_text_with_the_copy_formats_reserved_characters_is_stored_as_received(
    url: str, text: pd.DataFrame
) -> None:
    odd = "tab\there\\N back\\slash\nnew line\r, \"quoted\" ''"
    extract = text.iloc[:200].copy()
    extract.loc[10, "medical_specialty"] = odd  # quarantined, its raw row stored as it came
    extract.loc[11, "payer_code"] = ""  # an empty text stays empty, never NULL
    ingestion.ingest(url, extract, 500, 0.2)
    replay = ingestion.ingest(url, extract, 500, 0.2)
    assert replay.already_present == 200 and not replay.changed  # the same hashes read back
    raw = tables.raw_encounters
    with database.engine_for(url).connect() as conn:
        stored = dict(
            conn.execute(
                sa.select(raw.c.encounter_id, raw.c.medical_specialty).where(
                    raw.c.encounter_id.in_([int(extract.loc[i, "encounter_id"]) for i in (10, 11)])
                )
            ).all()
        )
        payer = conn.execute(
            sa.select(raw.c.payer_code).where(
                raw.c.encounter_id == int(extract.loc[11, "encounter_id"])
            )
        ).scalar_one()
    assert stored[int(extract.loc[10, "encounter_id"])] == odd
    assert payer == ""


def test_rows_are_stored_cell_for_cell_raw_with_the_hash_of_its_cells_joined_by_0x1f(
    url: str, text: pd.DataFrame
) -> None:
    """Chunks of plain text (on PostgreSQL, COPYed from the texts their hashes digest), a chunk
    with a tab and one with a number written "2.0" (their cells written one by one) store the
    same raw and clean rows; the hash is the earlier releases' (their warehouses' replays
    compare against it)."""
    extract = text.iloc[:400].copy()
    extract.loc[150, "payer_code"] = "tab\there"
    extract.loc[250, "num_procedures"] = "2.0"
    ingestion.ingest(url, extract, 100, 0.2, chunk_rows=100)
    with database.engine_for(url).connect() as conn:
        raw, clean = (
            pd.read_sql(sa.select(table).order_by(table.c.encounter_id), conn)
            for table in (tables.raw_encounters, tables.clean_encounters)
        )
    expected, _ = normalize(extract[list(COLUMNS)])
    expected = expected.sort_values("encounter_id", key=lambda ids: ids.astype(int))
    assert len(raw) == 400
    assert raw["encounter_id"].tolist() == expected["encounter_id"].astype(int).tolist()
    for column in COLUMNS[1:]:
        assert raw[column].tolist() == expected[column].tolist(), column
    digests = [
        hashlib.sha256("\x1f".join(row).encode()).hexdigest()
        for row in expected.itertuples(index=False, name=None)
    ]
    assert raw["row_hash"].tolist() == digests
    typed = validate(expected).clean.sort_values("encounter_id")
    assert len(clean) == len(typed) > 300
    assert clean["num_procedures"].dtype == "int64"
    for column in COLUMNS:
        assert clean[column].tolist() == typed[column].tolist(), column
