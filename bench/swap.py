"""Promotion to every API replica: time from the alias change to each replica's first answer from
the new version, with the registry poll at 60 s (so only the webhook can be that fast).

Starts a MLflow server (bin/mlflow-server, SQLite store, local artifacts), a fresh PostgreSQL
warehouse on 127.0.0.1:5432 (TEST_POSTGRES_URL), trains and promotes a first version (a synthetic
sample, or --source), starts two bin/api processes on that warehouse (MODEL_POLL_SECONDS=60),
registers the webhook to the first (`readmission.release.webhooks.ensure_webhook`: the second hears
through LISTEN/NOTIFY), trains VERSIONS - 1 more versions (their registration reaches the
replicas, which load them ahead), then moves the alias PROMOTIONS times while clients post
/predict to both replicas without pause. For each promotion and replica: the time from just
before the alias is set (MlflowClient.set_registered_model_alias, what the CLI, the DAG and the
MLflow UI all end in) to the first answer that names the new version. Every request that is not
a 200 counts as failed. Last line: JSON with median and max in seconds, the failed requests, and
the requests' p99 and max latency (the swaps' pauses show there).

    .venv/bin/python bench/swap.py                 # synthetic sample
    .venv/bin/python bench/swap.py --source ../shared/data/dataset_diabetes.zip
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from readmission.processes import free_port, running

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TARGET_SECONDS = 1.0
VERSIONS = 4
REPLICAS = 2
CLIENTS_PER_REPLICA = 2


@dataclass
class Load:
    """What the clients saw: per replica, (time answered, version) of each 200; the failures."""

    answers: list[list[tuple[float, str]]] = field(
        default_factory=lambda: [[] for _ in range(REPLICAS)]
    )
    latencies: list[float] = field(default_factory=list)  # seconds, of every 200
    requests: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    stop: bool = False


async def client(url: str, replica: int, body: dict, load: Load) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not load.stop:
            load.requests += 1
            sent = time.monotonic()
            try:
                answer = await http.post("/predict", json=body)
            except httpx.HTTPError as error:
                load.failed += 1
                load.failures.append(f"replica {replica}: {type(error).__name__}: {error}")
                continue
            if answer.status_code != 200:
                load.failed += 1
                load.failures.append(f"replica {replica}: {answer.status_code} {answer.text[:200]}")
                continue
            answered = time.monotonic()
            load.latencies.append(answered - sent)
            load.answers[replica].append((answered, answer.json()["model_version"]))


def drive(urls: list[str], body: dict, load: Load) -> threading.Thread:
    """The clients, in a thread of their own so that the promotions can block."""

    async def all_clients() -> None:
        await asyncio.gather(
            *(
                client(url, replica, body, load)
                for replica, url in enumerate(urls)
                for _ in range(CLIENTS_PER_REPLICA)
            )
        )

    thread = threading.Thread(target=asyncio.run, args=(all_clients(),), daemon=True)
    thread.start()
    return thread


def first_answer(load: Load, replica: int, version: str, since: float, timeout: float) -> float:
    """Seconds from `since` to the replica's first answer from `version`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for answered, served in reversed(load.answers[replica]):
            if answered < since:
                break
            if served == version:
                first = min(t for t, v in load.answers[replica] if t >= since and v == version)
                return first - since
        time.sleep(0.01)
    raise TimeoutError(f"replica {replica} did not answer from version {version} in {timeout}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="train on this data set file (default: synthetic)")
    parser.add_argument("--promotions", type=int, default=20)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    database = f"bench_swap_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    warehouse_url = sa.make_url(ADMIN_URL).set(database=database).render_as_string(False)
    secret = secrets.token_urlsafe(24)
    mlflow_port = free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    base_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    base_env["PATH"] = f"{BIN}{os.pathsep}{base_env.get('PATH', '')}"
    try:
        with ExitStack() as stack:
            stack.enter_context(
                running(
                    [str(ROOT / "bin" / "mlflow-server")],
                    home / "mlflow.log",
                    {
                        **base_env,
                        "MLFLOW_PORT": str(mlflow_port),
                        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{home / 'mlflow.db'}",
                        "MLFLOW_ARTIFACTS_DESTINATION": str(home / "artifacts"),
                    },
                    f"{mlflow_url}/health",
                    300,
                )
            )
            os.environ.update(
                {
                    "READMISSION_HOME": str(home),
                    "DATABASE_URL": warehouse_url,
                    "MLFLOW_TRACKING_URI": mlflow_url,
                    "MLFLOW_WEBHOOK_SECRET": secret,
                    "BATCH_SIZE": "2000",
                    "DATA_SHA256": "",
                }
            )
            os.chdir(home)
            from readmission import registry, training
            from readmission.config import get_settings
            from readmission.data import dataset, ingestion
            from readmission.release import webhooks
            from readmission.schema import example_encounter

            settings = get_settings()
            started = time.monotonic()
            frame = (
                dataset.load(args.source)
                if args.source
                else dataset.synthetic_sample(12_000, seed=5)
            )
            ingestion.ingest(
                warehouse_url, frame, settings.batch_size, settings.holdout_fraction, VERSIONS
            )
            versions = [t.version for t in training.train_pending(settings, max_batches=1)]
            registry.promote(settings, versions[0])

            urls = []
            for replica in range(REPLICAS):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                stack.enter_context(
                    running(
                        [str(ROOT / "bin" / "api")],
                        home / f"api-{replica}.log",
                        {
                            **base_env,
                            "API_PORT": str(port),
                            "DATABASE_URL": warehouse_url,
                            "MLFLOW_TRACKING_URI": mlflow_url,
                            "MODEL_NAME": settings.model_name,
                            "READMISSION_HOME": str(home / f"api-{replica}"),
                            "MODEL_POLL_SECONDS": "60",
                            "MLFLOW_WEBHOOK_SECRET": secret,
                        },
                        f"{url}/ready",
                        300,
                    )
                )
                urls.append(url)
            webhook = webhooks.ensure_webhook(settings, f"{urls[0]}/webhooks/mlflow")
            accepted, said = webhooks.send_test_delivery(settings, webhook)
            print(f"webhook {webhook.webhook_id} -> {webhook.url}; test delivery: {said}")
            if not accepted:
                return 1
            time.sleep(3)  # MLFLOW_WEBHOOK_CACHE_TTL (bin/mlflow-server: 2 s)
            # The later versions are registered while the API runs, as in production (training,
            # then evaluation, then a promotion): the webhook has the replicas load them ahead.
            versions += [t.version for t in training.train_pending(settings)]
            print(f"trained versions {versions} in {time.monotonic() - started:.0f} s")
            time.sleep(10)  # the replicas' loads ahead, one version at a time

            load = Load()
            thread = drive(urls, example_encounter(), load)
            time.sleep(2)
            client_ = registry.connect(settings)
            times: list[list[float]] = [[] for _ in range(REPLICAS)]
            current = versions[0]
            for promotion in range(args.promotions):
                target = versions[(versions.index(current) + 1) % len(versions)]
                since = time.monotonic()
                client_.set_registered_model_alias(
                    settings.model_name, settings.model_alias, target
                )
                for replica in range(REPLICAS):
                    times[replica].append(first_answer(load, replica, target, since, 55))
                current = target
                print(
                    f"promotion {promotion + 1:2d}: version {target}: "
                    + ", ".join(
                        f"replica {r} {times[r][-1] * 1000:6.0f} ms" for r in range(REPLICAS)
                    )
                )
                # Promotions come minutes apart: let the replicas' collection after a swap
                # (api.model_store.COLLECT_AFTER_SWAP_SECONDS) pass before the next one.
                time.sleep(3)
            load.stop = True
            thread.join(timeout=60)
            client_.delete_webhook(webhook.webhook_id)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()

    worst = [max(r[i] for r in times) for i in range(args.promotions)]
    result = {
        "promotions": args.promotions,
        "replicas": REPLICAS,
        "poll_seconds": 60,
        "median_s": round(statistics.median(worst), 3),
        "max_s": round(max(worst), 3),
        "per_replica_median_s": [round(statistics.median(r), 3) for r in times],
        "request_p99_ms": round(statistics.quantiles(load.latencies, n=100)[98] * 1000, 1),
        "request_max_ms": round(max(load.latencies) * 1000, 1),
        "requests": load.requests,
        "failed_requests": load.failed,
        "target_max_s": TARGET_SECONDS,
    }
    for failure in load.failures[:10]:
        print("failed:", failure)
    print(
        f"alias moved -> both replicas answer from it: median {result['median_s']} s, "
        f"max {result['max_s']} s (target max < {TARGET_SECONDS} s); "
        f"{load.failed} failed of {load.requests} requests"
    )
    print(json.dumps(result))
    return 0 if result["max_s"] < TARGET_SECONDS and load.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
