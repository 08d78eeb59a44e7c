"""`make demo`: the whole loop on one machine, no Docker.

Starts an MLflow server (SQLite store, artifacts on local disk), `airflow standalone` over the
project's DAGs, the API, the UI and Prometheus (when installed). Cuts the data source by
`encounter_id` into a first extract (the first half) and a second, later one (the next 15%), as a
hospital would send them months apart, and feeds them one after the other through Airflow: each
triggers `01_ingest_data` (param `source`), whose Asset starts `02_warm_start_training`, whose
Asset starts `03_evaluate_and_promote` (auto-promotion on; where the change control plan leaves
the promotion to a person, the first production version in the shipped plan, the demo answers
the approval step as that person, through the same REST API as the Airflow UI, and says so);
prints the versions each extract produced; waits for the API to serve the promoted version;
shows a prediction; then closes the loop:
sends the next batch's encounters (without their outcome) to the API, ingests that batch (with
its outcomes) and prints the served version's realized performance (`04_realized_performance`);
prints every URL and where its credentials are. Ctrl-C stops everything (each service runs in
its own process group).

Environment: DATA_SOURCE (default: the UCI download), BATCH_SIZE,
READMISSION_HOME (default .readmission), MLFLOW_PORT/AIRFLOW_PORT/API_PORT/UI_PORT/PROMETHEUS_PORT
(5000/8080/8000/8501/9090), MLFLOW_BACKEND_STORE_URI (default SQLite; a PostgreSQL URL works),
DEMO_EXIT=1 to stop the services once the prediction is shown (tests and CI).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from readmission import airflow_runs, extracts, processes, registry, registry_reader
from readmission.config import DEMO_ENV_FILE, get_settings
from readmission.data.dataset import DatasetError
from readmission.logging_setup import configure_logging
from readmission.release import webhooks
from readmission.schema import example_encounter

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_DAGS = (
    "01_ingest_data",
    "02_warm_start_training",
    "03_evaluate_and_promote",
    "04_realized_performance",
)

log = logging.getLogger("readmission.demo")


class Services:
    """Child services, each in its own process group, all stopped on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        output = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append((name, process))
        log.info(f"started {name} (pid {process.pid}, log {self.logs / f'{name}.log'})")
        return process

    def stop(self) -> None:
        """All at once: SIGTERM to every service's process group, then each group waited for
        within one deadline, SIGKILLed if still there."""
        for _, process in reversed(self.running):
            processes.terminate(process)
        deadline = time.monotonic() + 30
        for name, process in reversed(self.running):
            processes.reap(process, deadline)
            log.info(f"stopped {name}")
        self.running.clear()

    def check(self) -> None:
        for name, process in self.running:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}: see {self.logs / f'{name}.log'}"
                )


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_until(what: str, ready: Callable[[], Any], services: Services, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.check()
        try:
            if result := ready():
                return result
        except (httpx.HTTPError, airflow_runs.AirflowError):
            pass
        time.sleep(0.2)  # each probe is one local request: a slow poll only delays the demo
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def answers(url: str) -> bool:
    return httpx.get(url, timeout=3).status_code == 200


def main() -> int:
    configure_logging()
    home = Path(os.environ.get("READMISSION_HOME", ".readmission"))
    home = home if home.is_absolute() else ROOT / home
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ports = {
        name: int(os.environ.get(f"{name.upper()}_PORT", default))
        for name, default in (
            ("mlflow", 5000),
            ("airflow", 8080),
            ("api", 8000),
            ("ui", 8501),
            ("prometheus", 9090),
        )
    }
    busy = [f"{name} port {port}" for name, port in ports.items() if not port_free(port)]
    if busy:
        log.info(
            f"in use: {', '.join(busy)}. Stop what holds them (an earlier demo still running?) "
            "or set MLFLOW_PORT / AIRFLOW_PORT / API_PORT / UI_PORT / PROMETHEUS_PORT."
        )
        return 1

    venv_bin = str(Path(sys.executable).parent)
    mlflow_url = f"http://127.0.0.1:{ports['mlflow']}"
    api_url = f"http://127.0.0.1:{ports['api']}"
    # Explicit, like MLflow's: after `make up`, .env names the compose warehouse (deploy.dotenv),
    # which is not the demo's.
    warehouse_url = (
        os.environ.get("DATABASE_URL") or f"sqlite:///{(home / 'warehouse.db').resolve()}"
    )
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "READMISSION_HOME": str(home),
        "MLFLOW_TRACKING_URI": mlflow_url,
        "DATABASE_URL": warehouse_url,
        "MLFLOW_PORT": str(ports["mlflow"]),
        "MLFLOW_BACKEND_STORE_URI": os.environ.get(
            "MLFLOW_BACKEND_STORE_URI", f"sqlite:///{home / 'mlflow-server.db'}"
        ),
        "MLFLOW_ARTIFACTS_DESTINATION": os.environ.get(
            "MLFLOW_ARTIFACTS_DESTINATION", str(home / "mlartifacts")
        ),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW_PORT": str(ports["airflow"]),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AUTO_PROMOTE": "true",
        "API_URL": api_url,
        "API_PORT": str(ports["api"]),
        "UI_PORT": str(ports["ui"]),
        "PROMETHEUS_PORT": str(ports["prometheus"]),
        # The API hears of promotions from MLflow's webhook at once (one API process on the
        # SQLite warehouse: the webhook goes straight to it); its poll is the slow fallback.
        "MLFLOW_WEBHOOK_SECRET": os.environ.get("MLFLOW_WEBHOOK_SECRET")
        or secrets.token_urlsafe(32),
    }
    if "DATA_SOURCE" in os.environ and not os.environ["DATA_SOURCE"].startswith("http"):
        env["DATA_SOURCE"] = str(Path(os.environ["DATA_SOURCE"]).resolve())
    os.environ.update(env)  # the Airflow client below reads AIRFLOW_* from here
    # The data source is checked (and a download cached where the ingest task looks) before
    # any service starts: a wrong DATA_SOURCE fails here in seconds, not in a task retry.
    try:
        settings = get_settings()
        log.info(f"checking DATA_SOURCE {settings.data_source} ...")
        # As a hospital would send them months apart: the first half, then the next 15%; the
        # rest arrives later (the close-the-loop step takes its next batch).
        files = extracts.write_extracts(
            extracts.acquire(settings), home / "extracts", {"first": 0.5, "second": 0.65}
        )
    except DatasetError as error:
        log.info(f"failed: {error}")
        return 2
    services = Services(logs)

    def shutdown(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    try:
        run(services, env, ports, mlflow_url, api_url, home, files)
        if os.environ.get("DEMO_EXIT") == "1":
            return 0
        log.info("running; press Ctrl-C to stop every service")
        while True:
            services.check()
            time.sleep(2)
    except KeyboardInterrupt:
        log.info("stopping ...")
        return 0
    except Exception as error:  # the demo reports any failure, then cleans up
        log.info(f"failed: {error}")
        return 1
    finally:
        services.stop()
        (home / DEMO_ENV_FILE).unlink(missing_ok=True)


def follow_extract(name: str, path: Path) -> list[dict[str, str]]:
    """Feed one extract through 01 -> 02 -> 03 and return the versions its batches produced."""
    log.info(f"{name} extract: triggering 01_ingest_data with source {path} ...")
    before = {v.version for v in registry_reader.version_summaries(get_settings())}
    ingest = airflow_runs.wait(
        "01_ingest_data",
        airflow_runs.trigger("01_ingest_data", {"batches": 0, "source": str(path)}),
    )
    # From here on the demo follows only the runs its own trigger caused, through the Asset
    # events of its own runs: another run in the same Airflow cannot be taken for ours.
    log.info(f"01_ingest_data: {ingest['state']}; its Asset queues 02_warm_start_training ...")
    training = airflow_runs.wait(
        "02_warm_start_training",
        airflow_runs.wait_for_asset_run("02_warm_start_training", ingest, report=log.info),
    )
    log.info(f"02_warm_start_training: {training['state']}; 03_evaluate_and_promote follows ...")
    verdict = approve_and_wait(
        airflow_runs.wait_for_asset_run("03_evaluate_and_promote", training, report=log.info)
    )
    log.info(f"03_evaluate_and_promote: {verdict['state']}")
    versions = [
        {"version": v.version, "parent": v.parent_version or "none", "batch": str(v.batch_id)}
        for v in registry_reader.version_summaries(get_settings())
        if v.version not in before
    ]
    production = registry.production_version(get_settings())
    log.info(
        f"{name} extract -> versions "
        + ", ".join(f"v{v['version']} (batch {v['batch']}, parent {v['parent']})" for v in versions)
        + f"; production: v{production.version if production else 'none'}"
    )
    return versions


def approve_and_wait(run_id: str, timeout: float = 900) -> dict[str, Any]:
    """The finished 03 run. Where it stops for a person (the change control plan reserves the
    promotion for one), the demo approves as that person would in the Airflow UI's Required
    Actions, through the same REST API, and logs what it was asked."""
    dag_id, task_id = "03_evaluate_and_promote", "ask_a_person"
    try:
        request = airflow_runs.wait_for_request(dag_id, run_id, task_id, timeout)
    except airflow_runs.AirflowError:  # the run ended without asking anyone
        return airflow_runs.wait(dag_id, run_id)  # raises, naming the task, if it failed
    log.info(
        f"{dag_id} asks a person: {request['subject']} (Airflow UI: Required Actions). "
        "The demo approves in their place; in production a reviewer answers there."
    )
    airflow_runs.respond(
        dag_id,
        run_id,
        task_id,
        "Approve",
        {"comment": "approved by make demo in place of a reviewer"},
    )
    return airflow_runs.wait(dag_id, run_id, timeout)


def run(
    services: Services,
    env: dict[str, str],
    ports: dict[str, int],
    mlflow_url: str,
    api_url: str,
    home: Path,
    files: list[tuple[str, Path]],
) -> None:
    services.start("mlflow", [str(ROOT / "bin" / "mlflow-server")], env)
    wait_until("MLflow", lambda: answers(f"{mlflow_url}/health"), services, 120)
    log.info(f"MLflow is up at {mlflow_url}")
    # `readmission status` / `promote` in another shell read this (config.DEMO_ENV_FILE).
    (home / DEMO_ENV_FILE).write_text(
        f"MLFLOW_TRACKING_URI={mlflow_url}\nAPI_URL={api_url}\nDATABASE_URL={env['DATABASE_URL']}\n"
    )
    services.start("airflow", [str(ROOT / "bin" / "airflow-standalone")], env)
    services.start("api", [str(ROOT / "bin" / "api")], env)
    services.start("ui", [str(ROOT / "bin" / "ui")], env)
    prometheus = shutil.which("prometheus")
    if prometheus:  # the repo's config, with the API target at this demo's port
        config = home / "prometheus-config"
        shutil.copytree(ROOT / "monitoring" / "prometheus", config, dirs_exist_ok=True)
        (config / "targets" / "api.json").write_text(
            json.dumps(
                [
                    {
                        "targets": [f"127.0.0.1:{ports['api']}"],
                        "labels": {"service": "readmission-api"},
                    }
                ]
            )
        )
        services.start(
            "prometheus",
            [str(ROOT / "bin" / "prometheus")],
            {**env, "PROMETHEUS_CONFIG": str(config / "prometheus.yml")},
        )
    else:
        log.info("prometheus is not installed (apt-get install prometheus): skipping it")
    wait_until("API", lambda: answers(f"{api_url}/health"), services, 120)
    log.info("the API is up (no model in production yet: /ready answers 503 until one is promoted)")
    webhook = webhooks.ensure_webhook(get_settings(), f"{api_url}/webhooks/mlflow")
    accepted, said = webhooks.send_test_delivery(get_settings(), webhook)
    if not accepted:
        raise RuntimeError(f"the API refused MLflow's test webhook: {said}")
    log.info(f"MLflow's registry webhook tells the API of each promotion at once ({webhook.url})")
    airflow_url = f"http://127.0.0.1:{ports['airflow']}"
    wait_until("Airflow", lambda: answers(f"{airflow_url}/api/v2/monitor/health"), services, 300)
    log.info(f"Airflow is up at {airflow_url}")

    for line in airflow_runs.other_work(PIPELINE_DAGS):
        log.info(f"note: {line}")
    produced: dict[str, list[dict[str, str]]] = {}
    for name, path in files:
        produced[name] = follow_extract(name, path)
    print(f"DEMO VERSIONS {json.dumps(produced)}", flush=True)

    ready = wait_until(
        "a served model",
        lambda: (r := httpx.get(f"{api_url}/ready", timeout=3)).status_code == 200 and r.json(),
        services,
        120,
    )
    log.info(f"the API serves version {ready['model_version']}")
    prediction = httpx.post(f"{api_url}/predict", json=example_encounter(), timeout=10)
    prediction.raise_for_status()
    body = prediction.json()
    log.info(
        f"prediction for a typical encounter: P(readmitted within 30 days) = "
        f"{body['probability']:.3f}, risk band {body['risk_band']}, "
        f"model {body['model_name']} v{body['model_version']}"
    )
    print(f"DEMO PREDICTION {json.dumps(body)}", flush=True)
    close_the_loop(services, api_url)
    password_file = home / "airflow" / "simple_auth_manager_passwords.json.generated"
    log.info("where everything is:")
    print(f"  Airflow UI   {airflow_url}  (user admin, password in {password_file})")
    print(f"  MLflow UI    {mlflow_url}  (no login)")
    print(f"  API docs     {api_url}/docs  (POST /model/reload needs API_RELOAD_TOKEN)")
    print(f"  Streamlit UI http://127.0.0.1:{ports['ui']}")
    if prometheus:
        print(f"  Prometheus   http://127.0.0.1:{ports['prometheus']}")
    print(f"  logs         {services.logs}", flush=True)
    log.info(
        f"`readmission status` and `readmission promote N` in another shell use these services "
        f"while the demo runs (they read {home / DEMO_ENV_FILE})"
    )


def close_the_loop(services: Services, api_url: str) -> None:
    """The next batch's encounters scored by the API without their outcome, then that batch
    ingested with it: the realized performance of the served version, as the platform reports it."""
    settings = get_settings()  # the demo's environment, as the services have it
    encounters = extracts.unstored_encounters(settings, settings.batch_size)
    if not encounters:
        log.info("every encounter of the source is ingested: no next batch to score")
        return
    scored, served = 0, ""
    for start in range(0, len(encounters), settings.max_batch_rows):
        chunk = encounters[start : start + settings.max_batch_rows]
        answer = httpx.post(f"{api_url}/predict/batch", json={"encounters": chunk}, timeout=60)
        answer.raise_for_status()
        scored, served = scored + answer.json()["count"], answer.json()["model_version"]
    log.info(f"the API scored the next batch's {scored} encounters, sent without their outcome")
    ingest = airflow_runs.wait(
        "01_ingest_data", airflow_runs.trigger("01_ingest_data", {"batches": 1})
    )
    log.info(f"01_ingest_data (the next batch, with outcomes): {ingest['state']}; 04 follows ...")
    realized = airflow_runs.wait(
        "04_realized_performance",
        airflow_runs.wait_for_asset_run("04_realized_performance", ingest, report=log.info),
    )
    log.info(f"04_realized_performance: {realized['state']}")
    report = httpx.get(f"{api_url}/performance", timeout=30).json()
    version = next(v for v in report["versions"] if v["version"] == served)
    log.info(
        f"served version {served} on the encounters it scored: {version['n']} with an outcome, "
        f"{version['pending']} pending; realized ROC-AUC {version['roc_auc']:.4f} "
        f"(holdout {version['holdout_roc_auc'] or float('nan'):.4f}), "
        f"PPV {version['ppv'] or 0:.3f}, "
        f"sensitivity {version['sensitivity'] or 0:.3f} at threshold {version['threshold']:.3f}"
    )
    services.check()
    print(f"DEMO REALIZED {json.dumps({k: version[k] for k in ('version', 'n', 'roc_auc')})}")


if __name__ == "__main__":
    sys.exit(main())
