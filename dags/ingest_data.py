"""
### 01 · Ingest data

Acquires an extract of the UCI *Diabetes 130-US hospitals* data set (the `DATA_SOURCE` setting,
or the `source` param: a URL or a local `.zip` / `.csv`) and stores what it adds, validated:
new encounters of holdout patients join the holdout (batch 0), the others become new training
batches in `encounter_id` order; clean rows go to `clean_encounters`, rejected rows (bad values
or bad identifiers) to `quarantined_encounters` with the reason. Any later extract works: newer
encounters, an overlap, a replay, an older one; an encounter stored before is skipped, or
recorded as a correction when its content changed (a trained batch is never rewritten).

| Param | Meaning |
|---|---|
| `batches` | New training batches to add. `0` or empty: every remaining batch. |
| `source` | Path or URL overriding `DATA_SOURCE` for this run (no checksum check). |

After the ingest, the outcomes the extract brings for encounters the API scored earlier join
the prediction log (`outcomes_joined`).

Re-running is safe: the ingest is one transaction, and rows already stored are skipped. Two
tasks announce what the run changed, each skipped when there is nothing to announce:

- `announce_new_batches`, when the run added at least one training batch: the Asset
  `x-readmission://warehouse/clean_encounters`, which starts **02_warm_start_training**.
- `announce_warehouse_changes`, when the run changed the warehouse at all (rows stored,
  corrections recorded, outcomes joined): the Asset `x-readmission://warehouse/changes`, which
  starts **04_realized_performance**. An extract of holdout rows or of outcomes only starts 04
  but no training.

A replay that adds nothing skips both, so no pointless run follows.

A training batch holds at least `MIN_BATCH_ROWS` clean rows: a smaller remainder is stored as
waiting and joins the next extract's rows (the log says how many rows wait). Blank or `NaN`
cells of `max_glu_serum` / `A1Cresult` (a file re-exported with pandas) are read as the data
set's `None` and counted as normalizations.

A missing file or a checksum mismatch fails at once; a failed download is retried with
growing pauses. An extract with more than `MAX_QUARANTINE_SHARE` of its rows failing
validation is refused whole and the run fails without retries: the message gives the share and
the three most frequent reasons; nothing of the extract is stored but the record of the
refusal (in `ingests`), so the corrected file, ingested next, is taken as new.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from readmission_common import (
    CLEAN_ENCOUNTERS,
    IO_RETRIES,
    START_DATE,
    TAGS,
    WAREHOUSE_CHANGES,
)

log = logging.getLogger("readmission.dags.ingest_data")


@dag(
    dag_id="01_ingest_data",
    dag_display_name="01 · Ingest data",
    description="Next batches of the data set into the warehouse, validated",
    doc_md=__doc__,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=[*TAGS, "data"],
    params={
        "batches": Param(
            1,
            type=["null", "integer"],
            minimum=0,
            title="Batches to ingest",
            description="New training batches to add. 0 or empty: every remaining batch.",
        ),
        "source": Param(
            None,
            type=["null", "string"],
            title="Data source",
            description="Path or URL of the data set (.zip or .csv). Empty: DATA_SOURCE.",
        ),
    },
)
def ingest_data() -> None:
    @task(**IO_RETRIES)
    def ingest(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Store the source's next batches; return their ids and counts (never rows)."""
        import httpx

        from readmission import extracts
        from readmission.config import get_settings
        from readmission.data import ingest_report
        from readmission.data.dataset import DatasetError

        params = params or {}
        max_batches = params.get("batches") or None
        source = (params.get("source") or "").strip() or None
        try:
            ingested = extracts.ingest(get_settings(), max_batches=max_batches, source=source)
        except DatasetError as error:
            if isinstance(error.__cause__, httpx.HTTPError):
                raise  # the download failed: worth another try
            raise AirflowFailException(str(error)) from error  # wrong file: retrying won't help
        except ingest_report.ExtractRefused as error:  # the same file is refused again: no retry
            raise AirflowFailException(str(error)) from error
        for batch in ingested.report.new_batches:
            log.info(
                "batch %d (%s): %d rows, %d accepted, %d quarantined",
                batch.batch_id,
                batch.kind,
                batch.rows,
                batch.accepted,
                batch.quarantined,
            )
        log.info("%s", ingested.describe())
        # `changed` is decided by the package (Ingested.changed): the DAG does not define what
        # counts as a change.
        return ingested.as_dict()

    @task(outlets=[CLEAN_ENCOUNTERS])
    def announce_new_batches(report: dict[str, Any], outlet_events: Any = None) -> list[int]:
        """Update the Asset (and so start training) only when training batches were added."""
        if not report["training_batch_ids"]:
            raise AirflowSkipException("no new training batch: nothing for 02 to train on")
        outlet_events[CLEAN_ENCOUNTERS].extra = {
            "batch_ids": report["training_batch_ids"],
            "rows_added": report["rows_added"],
        }
        return report["training_batch_ids"]

    @task(outlets=[WAREHOUSE_CHANGES])
    def announce_warehouse_changes(report: dict[str, Any], outlet_events: Any = None) -> int:
        """Update the Asset (and so start 04) after every ingest that changed the warehouse."""
        if not report["changed"]:
            raise AirflowSkipException(
                "the warehouse is unchanged (no row, correction or outcome): nothing for 04"
            )
        outlet_events[WAREHOUSE_CHANGES].extra = {
            "batch_ids": report["batch_ids"],
            "rows_added": report["rows_added"],
            "corrections": report["corrections"],
            "outcomes_joined": report["outcomes_joined"],
        }
        return report["outcomes_joined"]

    report = ingest()
    announce_new_batches(report)
    announce_warehouse_changes(report)


ingest_data()
