"""Ingest speed into PostgreSQL: the platform's COPY path against pandas `to_sql` as the anchor.

Loads the real data set into a fresh PostgreSQL database through `readmission.warehouse.ingest`
(validation, raw + clean + quarantine tables, batch bookkeeping, all in one transaction), then
writes the first 10,000 raw rows with plain `DataFrame.to_sql` into another fresh database.
Last line: a JSON object with rows/s for both and the goal (all rows in <= 10 s).

    .venv/bin/python bench/ingest.py --source ../shared/data/dataset_diabetes.zip
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

import sqlalchemy as sa

from readmission import warehouse
from readmission.dataset import load

ANCHOR_ROWS = 10_000  # to_sql is too slow to wait for on the whole data set
ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def fresh_database(admin: sa.Engine) -> tuple[str, str]:
    name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return name, sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/data/dataset_diabetes.zip")
    args = parser.parse_args()
    frame = load(args.source)
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = []
    try:
        name, url = fresh_database(admin)
        names.append(name)
        warehouse.engine_for(url)  # schema creation is not part of the measurement
        started = time.perf_counter()
        report = warehouse.ingest(url, frame, 15000, 0.2)
        platform_seconds = time.perf_counter() - started
        started = time.perf_counter()
        replay = warehouse.ingest(url, frame, 15000, 0.2)
        replay_seconds = time.perf_counter() - started
        print(
            f"platform: {report.rows_added} rows in {platform_seconds:.2f} s "
            f"(replay added {replay.rows_added} rows in {replay_seconds:.2f} s)"
        )

        name, url = fresh_database(admin)
        names.append(name)
        engine = sa.create_engine(url)
        started = time.perf_counter()
        anchor_rows = frame.head(ANCHOR_ROWS)
        anchor_rows.to_sql("raw_encounters", engine, index=False, chunksize=1000)
        anchor_seconds = time.perf_counter() - started
        engine.dispose()
        print(
            f"anchor DataFrame.to_sql, raw rows only: {len(anchor_rows)} rows in "
            f"{anchor_seconds:.2f} s"
        )
    finally:
        warehouse.engine_for.cache_clear()
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(
        json.dumps(
            {
                "rows": report.rows_added,
                "platform_seconds": round(platform_seconds, 2),
                "platform_rows_per_s": round(report.rows_added / platform_seconds),
                "replay_rows_added": replay.rows_added,
                "anchor_to_sql_rows": len(anchor_rows),
                "anchor_to_sql_rows_per_s": round(len(anchor_rows) / anchor_seconds),
                "speedup_vs_anchor": round(
                    report.rows_added / platform_seconds / (len(anchor_rows) / anchor_seconds), 2
                ),
                "goal_seconds": 10,
                "meets_goal": platform_seconds <= 10,
            }
        )
    )


if __name__ == "__main__":
    main()
