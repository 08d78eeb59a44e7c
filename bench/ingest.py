"""Ingest speed and memory: the platform's ingest on synthetic extracts of growing size, on SQLite
and PostgreSQL, and on the real data set against pandas `to_sql` as the anchor.

Synthetic mode (default): for each size, `readmission sample` writes an extract (repeat patients
are the sample's own), then one fresh process per backend reads it from disk and ingests it into
a fresh warehouse with the platform's settings (`readmission.data.dataset.read_chunks` +
`ingestion.ingest`, as `readmission.extracts.ingest` does; MIN_BATCH_ROWS, MAX_QUARANTINE_SHARE and
INGEST_CHUNK_ROWS at their defaults). Each line: rows/s, the process's CPU seconds, the CPU
seconds of the PostgreSQL backend serving it (a server on this machine, read from /proc) and the
process's peak RSS. Targets: peak RSS for 2,000,000 rows under 600 MB, >= 50,000 rows/s into
PostgreSQL.
Anchor, measured beside each size on the same (possibly busy) machine: PostgreSQL's own COPY of
the same file, as it is, into a table of 50 text columns without keys or indexes, the ceiling
for any ingest of it into this server now.

    .venv/bin/python bench/ingest.py --sizes 100000 500000 2000000

Real-data mode (`--source`): loads the real data set into a fresh PostgreSQL database through
`ingestion.ingest`, replays it, then writes the first 10,000 raw rows with plain
`DataFrame.to_sql` into another fresh database (goal: all rows in <= 10 s).

    .venv/bin/python bench/ingest.py --source ../shared/data/dataset_diabetes.zip

Last line: a JSON object with every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import sqlalchemy as sa

from readmission.config import Settings
from readmission.data import database, ingestion
from readmission.data.dataset import load, read_chunks

ANCHOR_ROWS = 10_000  # to_sql is too slow to wait for on the whole data set
ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
RSS_TARGET_MB = 600
POSTGRES_ROWS_PER_S_TARGET = 50_000


def fresh_database(admin: sa.Engine) -> tuple[str, str]:
    name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return name, sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@contextmanager
def server_cpu(admin: sa.Engine, database_name: str) -> Iterator[dict[int, float]]:
    """CPU seconds of each server backend connected to `database_name`, read from /proc while the
    block runs (a server on this machine; empty otherwise): the server's share of an ingest,
    which the client's CPU does not show and which moves less with the load than the wall."""
    seconds: dict[int, float] = {}
    done = threading.Event()
    tick = os.sysconf("SC_CLK_TCK")
    query = sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :name")

    def watch() -> None:
        with admin.connect() as conn:
            while not done.is_set():
                for (pid,) in conn.execute(query, {"name": database_name}):
                    with suppress(OSError):  # gone, or another machine's
                        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                        seconds[pid] = (int(stat[11]) + int(stat[12])) / tick  # utime + stime
                done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seconds
    finally:
        time.sleep(0.3)  # one more reading after the block's last statement
        done.set()
        watcher.join()


def measure_one(backend: str, path: Path) -> dict[str, object]:
    """Ingest the extract at `path` into a fresh `backend` warehouse, in this process: rows/s
    and this process's peak RSS (read and ingest; the schema's creation not timed)."""
    settings = Settings(_env_file=None)  # the embedded defaults, whatever .env says
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = ""
    with tempfile.TemporaryDirectory() as scratch:
        if backend == "postgresql":
            name, url = fresh_database(admin)
        else:
            url = f"sqlite:///{Path(scratch) / 'warehouse.db'}"
        try:
            # The schema's backend closed: the one the ingest opens has done nothing else.
            database.engine_for(url).dispose()
            with server_cpu(admin, name) as server:
                started, cpu_started = time.perf_counter(), time.process_time()
                report = ingestion.ingest(
                    url,
                    read_chunks(str(path), chunk_rows=settings.ingest_chunk_rows),
                    settings.batch_size,
                    settings.holdout_fraction,
                    source_name=str(path),
                    min_batch_rows=settings.min_batch_rows,
                    max_quarantine_share=settings.max_quarantine_share,
                )
                seconds = time.perf_counter() - started
                cpu_seconds = time.process_time() - cpu_started
        finally:
            database.engine_for.cache_clear()
            if name:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {
        "backend": backend,
        "rows": report.rows_in,
        "seconds": round(seconds, 2),
        # This process's CPU (its COPY thread's included): on a shared machine the wall time
        # moves with the load, the client's CPU for the same rows much less.
        "client_cpu_seconds": round(cpu_seconds, 2),
        # None: SQLite, or a server whose processes this machine cannot read.
        "server_cpu_seconds": round(sum(server.values()), 2) if server else None,
        "rows_per_s": round(report.rows_in / seconds),
        "peak_rss_mb": round(peak_mb),
        "batches": len(report.new_batches),
        "waiting": report.waiting,
    }


def copy_anchor(path: Path) -> dict[str, object]:
    """The anchor: the extract's file COPYed as it is into a fresh table without keys."""
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name, url = fresh_database(admin)
    try:
        with path.open() as stream:
            header = stream.readline().strip().split(",")
        columns = ", ".join(f'"{c}" text' for c in header)
        with psycopg.connect(
            sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        ) as conn:
            conn.execute(f"CREATE TABLE extract ({columns})")
            started = time.perf_counter()
            copying = conn.cursor().copy("COPY extract FROM STDIN WITH (FORMAT csv, HEADER)")
            with copying as copy, path.open("rb") as stream:
                while block := stream.read(1 << 20):
                    copy.write(block)
            conn.commit()
            seconds = time.perf_counter() - started
            rows = conn.execute("SELECT count(*) FROM extract").fetchone()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    count = int(rows[0]) if rows else 0
    return {
        "backend": "anchor_copy",
        "rows": count,
        "seconds": round(seconds, 2),
        "rows_per_s": round(count / seconds),
    }


def synthetic(sizes: list[int], backends: list[str]) -> list[dict[str, object]]:
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            path = Path(scratch) / f"sample-{size}.csv"
            readmission = str(Path(sys.executable).parent / "readmission")
            subprocess.run(
                [readmission, "sample", str(path), "--rows", str(size), "--seed", "21"],
                check=True,
                capture_output=True,
            )
            for backend in backends:
                done = subprocess.run(
                    [sys.executable, __file__, "--one", backend, str(path)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                server = result["server_cpu_seconds"]
                print(
                    f"{backend:10} {size:>9,} rows: {result['rows_per_s']:>7,} rows/s "
                    f"({result['seconds']} s, client CPU {result['client_cpu_seconds']} s"
                    f"{'' if server is None else f', server CPU {server} s'}), "
                    f"peak RSS {result['peak_rss_mb']:,} MB",
                    flush=True,
                )
                results.append(result)
            if "postgresql" in backends:
                anchor = copy_anchor(path)
                print(
                    f"{'anchor':10} {size:>9,} rows: {anchor['rows_per_s']:>7,} rows/s "
                    f"({anchor['seconds']} s), PostgreSQL's COPY of the file into a bare table",
                    flush=True,
                )
                results.append(anchor)
            path.unlink()
    return results


def real_data(source: str) -> dict[str, object]:
    frame = load(source)
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = []
    try:
        name, url = fresh_database(admin)
        names.append(name)
        database.engine_for(url)  # schema creation is not part of the measurement
        started = time.perf_counter()
        report = ingestion.ingest(url, frame, 15000, 0.2)
        platform_seconds = time.perf_counter() - started
        started = time.perf_counter()
        replay = ingestion.ingest(url, frame, 15000, 0.2)
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
        database.engine_for.cache_clear()
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return {
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="The real data set: the real-data mode.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000, 2_000_000])
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one measurement, its own peak RSS
        print(json.dumps(measure_one(args.one[0], Path(args.one[1]))))
        return
    if args.source:
        print(json.dumps(real_data(args.source)))
        return
    results = synthetic(args.sizes, args.backends)
    postgres = [r for r in results if r["backend"] == "postgresql"]
    largest = max(args.sizes)
    print(
        json.dumps(
            {
                "results": results,
                "rss_target_mb": RSS_TARGET_MB,
                "meets_rss_target": all(
                    int(str(r["peak_rss_mb"])) < RSS_TARGET_MB
                    for r in results
                    if r["rows"] == largest and "peak_rss_mb" in r
                ),
                "postgres_rows_per_s_target": POSTGRES_ROWS_PER_S_TARGET,
                # None when PostgreSQL was not measured (an empty all() is no evidence)
                "meets_postgres_speed_target": (
                    all(int(str(r["rows_per_s"])) >= POSTGRES_ROWS_PER_S_TARGET for r in postgres)
                    if postgres
                    else None
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
