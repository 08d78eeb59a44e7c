"""Trigger Airflow DAG runs and wait for them, through Airflow's REST API v2.

For the demo and other scripts::

    from readmission.airflow_runs import trigger, wait, wait_for_asset_run

    ingest = wait("01_ingest_data", trigger("01_ingest_data", {"batches": 2}))
    training = wait("02_warm_start_training",
                    wait_for_asset_run("02_warm_start_training", ingest))

A person's answer to a step waiting for one (DAG 03's approval of a promotion the change
control plan reserves for a person), as the Airflow UI's *Required Actions* page sends it::

    from readmission.airflow_runs import respond, wait_for_request

    request = wait_for_request("03_evaluate_and_promote", run_id, "ask_a_person")
    respond("03_evaluate_and_promote", run_id, "ask_a_person", "Approve", {"comment": "ok"})

From a shell: `python -m readmission.airflow_runs 01_ingest_data --conf '{"batches": 2}'`.

Where and who: AIRFLOW_URL (default http://127.0.0.1:$AIRFLOW_PORT, port 8080), and the admin
account of the compose stack, AIRFLOW_ADMIN_USER (default admin) and AIRFLOW_ADMIN_PASSWORD;
without a password, the one `airflow standalone` generated in
$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated (AIRFLOW_HOME as in
bin/airflow-standalone: default .readmission/airflow under the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Collection
from functools import cache
from pathlib import Path
from typing import Any

import httpx

FINISHED = {"success", "failed"}
# A human-in-the-loop task waiting for its answer (Airflow 3.3 parks it in awaiting_input;
# earlier releases defer it to the triggerer).
AWAITING_ANSWER = {"awaiting_input", "deferred"}
# How long a request must have been waiting before a script answers it (see wait_for_request).
ANSWER_SETTLE_SECONDS = 15.0
# Seconds between two reads of a run's state: a read is one small GET, and a script waiting on a
# chain of runs (01 -> 02 -> 03) would otherwise lose half a poll at each link.
POLL_SECONDS = 0.5


class AirflowError(RuntimeError):
    """Airflow refused a request or is unreachable; the message says what to do."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DagRunFailed(AirflowError):
    """A DAG run ended in state failed."""


def _password(username: str) -> str:
    if password := os.environ.get("AIRFLOW_ADMIN_PASSWORD"):
        return password
    home = Path(os.environ.get("AIRFLOW_HOME") or ".readmission/airflow").resolve()
    path = home / "simple_auth_manager_passwords.json.generated"
    try:
        return json.loads(path.read_text())[username]
    except (OSError, ValueError, KeyError) as error:
        raise AirflowError(
            f"no password for Airflow user {username}: set "
            f"AIRFLOW_ADMIN_PASSWORD, or AIRFLOW_HOME to where {path.name} is "
            f"({error})"
        ) from error


class AirflowClient:
    """A signed-in session with one Airflow API server; renews its JWT when it expires."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.username, self.password = username, password
        self.http = httpx.Client(base_url=self.url, timeout=30)
        try:
            self.http.headers["Authorization"] = f"Bearer {self._token()}"
        except AirflowError:
            self.close()  # a refused sign-in must not leave its connection open
            raise

    def close(self) -> None:
        self.http.close()

    @classmethod
    def from_env(cls) -> AirflowClient:
        port = os.environ.get("AIRFLOW_PORT") or "8080"
        username = os.environ.get("AIRFLOW_ADMIN_USER") or "admin"
        return cls(
            os.environ.get("AIRFLOW_URL") or f"http://127.0.0.1:{port}",
            username,
            _password(username),
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise AirflowError(
                f"Airflow is not reachable at {self.url} ({error}): start it "
                "with bin/airflow-standalone or set AIRFLOW_URL"
            ) from error

    def _token(self) -> str:
        response = self._send(
            "POST", "/auth/token", json={"username": self.username, "password": self.password}
        )
        if response.status_code != 201:
            raise AirflowError(
                f"Airflow refused user {self.username} at {self.url}: "
                f"{response.status_code} {response.text}"
            )
        return response.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, f"/api/v2{path}", **kwargs)
        if response.status_code == 401:  # expired token: sign in again, once
            self.http.headers["Authorization"] = f"Bearer {self._token()}"
            response = self._send(method, f"/api/v2{path}", **kwargs)
        for pause in (1, 2, 4):  # reads may meet a busy metadata DB (SQLite): retry them
            if method != "GET" or response.status_code < 500:
                break
            time.sleep(pause)
            response = self._send(method, f"/api/v2{path}", **kwargs)
        if response.is_error:
            raise AirflowError(
                f"{method} {path}: {response.status_code} {_detail(response)}", response.status_code
            )
        return response.json()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


@cache
def client() -> AirflowClient:
    """The process's client, configured from the environment (see the module docstring)."""
    return AirflowClient.from_env()


def _wait_for_dag(dag_id: str, timeout: float) -> dict[str, Any]:
    """The DAG, once the dag-processor has parsed it (right after start-up it may not have)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client().request("GET", f"/dags/{dag_id}")
        except AirflowError as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(POLL_SECONDS)


def trigger(dag_id: str, conf: dict[str, Any] | None = None, *, timeout: float = 120) -> str:
    """Start a run of `dag_id` with `conf` (checked against the DAG's params); its run id.

    Unpauses the DAG first: a paused DAG would leave the run queued forever.
    """
    dag = _wait_for_dag(dag_id, timeout)
    if dag["is_paused"]:
        client().request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    run = client().request(
        "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
    )
    return run["dag_run_id"]


def wait(
    dag_id: str, run_id: str, timeout: float = 900, poll: float = POLL_SECONDS
) -> dict[str, Any]:
    """The finished run; raises DagRunFailed naming the failed tasks, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        run = client().request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] == "success":
            return run
        if run["state"] == "failed":
            tasks = client().request(
                "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"state": "failed"}
            )["task_instances"]
            failed = ", ".join(t["task_id"] for t in tasks) or "none (the run itself)"
            raise DagRunFailed(
                f"{dag_id} run {run_id} failed; failed tasks: {failed}. "
                f"Logs: {client().url}/dags/{dag_id}/runs/{run_id}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout}s")
        time.sleep(poll)


def other_work(dag_ids: Collection[str], mine: Collection[str] = ()) -> list[str]:
    """What else is queued or running for `dag_ids` (runs not in `mine`, queued Asset events),
    one sentence each: a run of ours may have to wait behind it, or share its Asset events."""
    found = []
    for dag_id in dag_ids:
        runs = client().request(
            "GET", f"/dags/{dag_id}/dagRuns", params={"state": ["queued", "running"]}
        )["dag_runs"]
        for run in runs:
            if run["dag_run_id"] not in mine:
                found.append(f"{dag_id} has another run {run['state']}: {run['dag_run_id']}")
        queued = client().request("GET", f"/dags/{dag_id}/assets/queuedEvents")
        if queued["total_entries"]:
            found.append(
                f"{dag_id} has {queued['total_entries']} Asset event(s) queued from earlier "
                "runs; its next run consumes them together with ours"
            )
    return found


def scheduling_assets(dag_id: str, timeout: float = 120) -> dict[int, str]:
    """The Assets whose events start runs of `dag_id`, id -> URI (none: not Asset-scheduled)."""
    _wait_for_dag(dag_id, timeout)  # parsed, so its Asset references are recorded
    assets = client().request("GET", "/assets", params={"dag_ids": dag_id, "limit": 100})
    # `dag_ids` also matches Assets the DAG produces or reads: keep those that schedule it.
    return {
        asset["id"]: asset["uri"]
        for asset in assets["assets"]
        if any(ref["dag_id"] == dag_id for ref in asset["scheduled_dags"])
    }


def wait_for_asset_run(
    dag_id: str,
    source: dict[str, Any],
    timeout: float = 300,
    poll: float = POLL_SECONDS,
    report: Callable[[str], None] | None = None,
) -> str:
    """The run id of `dag_id` that an Asset event of the finished run `source` started.

    Only `source`'s own events on an Asset that schedules `dag_id` count, so a stale or foreign
    run of `dag_id` cannot be taken for ours, nor an event `source` sent for another DAG (01
    announces training batches and warehouse changes on two Assets, and often only the second).
    Asset events are recorded as their task ends, before its run finishes: a finished run with
    none has nothing to announce (another run may have done its work), and waiting would be
    waiting for nothing, so that is an error at once. `report` hears about other runs of
    `dag_id` that ours waits behind.
    """
    deadline = time.monotonic() + timeout
    reported: set[str] = set()
    assets = scheduling_assets(dag_id)
    if not assets:
        raise AirflowError(f"{dag_id} is not scheduled on any Asset: no event starts it")
    while True:
        events = [
            event
            for event in client().request(
                "GET",
                "/assets/events",
                params={"source_dag_id": source["dag_id"], "source_run_id": source["dag_run_id"]},
            )["asset_events"]
            if event["asset_id"] in assets
        ]
        if not events and source["state"] in FINISHED:
            raise AirflowError(
                f"{source['dag_id']} run {source['dag_run_id']} ended {source['state']} without "
                f"an Asset event on {', '.join(sorted(assets.values()))}, so it starts no "
                f"{dag_id} run: it had nothing new to announce for {dag_id} "
                "(did another run do its work first? see its log)"
            )
        for event in events:
            for run in event["created_dagruns"]:
                if run["dag_id"] == dag_id:
                    return run["run_id"]
        if report:
            for line in set(other_work([dag_id])) - reported:
                report(f"waiting for our {dag_id} run; {line}")
                reported.add(line)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{source['dag_id']} run {source['dag_run_id']} left Asset events but no "
                f"{dag_id} run after {timeout}s: is {dag_id} paused, or is the scheduler down?"
            )
        time.sleep(poll)


def pending_requests(dag_id: str = "~", run_id: str = "~") -> list[dict[str, Any]]:
    """Human-in-the-loop requests nobody has answered yet (`~`: of every DAG or run), as the
    Required Actions page lists them: subject, body, options, params and task instance."""
    found = client().request(
        "GET",
        f"/dags/{dag_id}/dagRuns/{run_id}/hitlDetails",
        params={"response_received": False, "limit": 100},
    )
    return list(found["hitl_details"])


def wait_for_request(
    dag_id: str,
    run_id: str,
    task_id: str,
    timeout: float = 600,
    poll: float = POLL_SECONDS,
    settle: float = ANSWER_SETTLE_SECONDS,
) -> dict[str, Any]:
    """The unanswered request of `task_id` in the run, once it can safely be answered.

    That is `settle` seconds after its task was first seen waiting (awaiting_input). The
    worker that parked the task exits, and the scheduler only then hears from the executor
    that it ended. An answer given before that re-queues the task, and the late "ended"
    report then makes the scheduler fail it as killed externally (seen on Airflow 3.3.2, 3 s
    after the park). A person in the UI is never that fast; a script must wait. The wait is a
    time, not a state: when the scheduler handles that report (process_executor_events in
    Airflow 3.3.2's jobs/scheduler_job_runner.py) it writes nothing for a task still
    awaiting_input, so nothing the REST API shows tells that the report has arrived. Raises
    AirflowError if the run ends first (the step was skipped: nobody had to be asked),
    TimeoutError after `timeout`.
    """
    deadline = time.monotonic() + timeout
    waiting_since: float | None = None
    while True:
        found = None
        for request in pending_requests(dag_id, run_id):
            instance = request["task_instance"]
            if instance["task_id"] == task_id and instance["state"] in AWAITING_ANSWER:
                found = request
        if found is None:
            waiting_since = None
        elif waiting_since is None:
            waiting_since = time.monotonic()
        elif time.monotonic() - waiting_since >= settle:
            return found
        run = client().request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in FINISHED:
            raise AirflowError(
                f"{dag_id} run {run_id} ended {run['state']} without {task_id} waiting for an "
                "answer"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {run_id}: {task_id} not waiting after {timeout}s")
        time.sleep(poll)


def respond(
    dag_id: str,
    run_id: str,
    task_id: str,
    option: str,
    params_input: dict[str, Any] | None = None,
    timeout: float = 10,
) -> dict[str, Any]:
    """Answer the request of `task_id` in the run with `option` and the form's `params_input`,
    as the signed-in user; Airflow's record of the answer (responded_by, responded_at).

    Answer only a request `wait_for_request` returned: one answered the moment its task parks
    can fail the task. A request not there yet (404) is retried for up to `timeout` seconds; any
    other refusal (409: answered already; 400: an option or param it does not offer) is raised
    at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer: dict[str, Any] = client().request(
                "PATCH",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
                json={"chosen_options": [option], "params_input": params_input or {}},
            )
            return answer
        except AirflowError as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Trigger a DAG run and wait for it.")
    parser.add_argument("dag_id", help="e.g. 01_ingest_data")
    parser.add_argument("--conf", default="{}", help="params as JSON, e.g. '{\"batches\": 2}'")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait")
    parser.add_argument("--no-wait", action="store_true", help="return once triggered")
    args = parser.parse_args(argv)
    try:
        run_id = trigger(args.dag_id, json.loads(args.conf))
        print(f"{args.dag_id}: triggered {run_id}")
        if not args.no_wait:
            run = wait(args.dag_id, run_id, args.timeout)
            print(f"{args.dag_id}: {run['state']} in {run['duration'] or 0:.0f}s")
    except (AirflowError, TimeoutError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
